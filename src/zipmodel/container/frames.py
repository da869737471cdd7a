"""Building and parsing frames (one chunk, all of its streams, one checksum)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from ..errors import CorruptDataError, FormatError
from .format import (
    CHUNK_MAGIC,
    FRAME_CHECKED,
    FRAME_HEADER,
    INDEX_MAGIC,
    MAX_CHUNK_RAW,
    MAX_STREAMS,
    RAW_CHECK,
    STREAM_ENTRY,
)

__all__ = ["Frame", "FrameHeader", "StreamInfo", "build_frame", "parse_frame", "parse_frame_header"]


@dataclass(frozen=True)
class StreamInfo:
    """One stream of a frame: how it is coded and its sizes."""

    codec: int
    context: int
    decoded_size: int
    encoded_size: int


@dataclass(frozen=True)
class FrameHeader:
    magic: bytes
    transform: int
    n_streams: int
    flags: int
    src_offset: int
    raw_size: int
    body_size: int
    check: int

    @property
    def size(self) -> int:
        """Bytes of the whole frame (header and body)."""
        return FRAME_HEADER.size + self.body_size


@dataclass(frozen=True)
class Frame:
    header: FrameHeader
    streams: tuple[StreamInfo, ...]
    raw_check: int
    payloads: tuple[memoryview, ...]


def build_frame(
    magic: bytes,
    transform: int,
    src_offset: int,
    raw_size: int,
    raw_check: int,
    streams: Sequence[StreamInfo],
    payloads: Sequence,
) -> list:
    """Return the frame as a list of buffers to write in order (payloads are not copied)."""
    if len(streams) > MAX_STREAMS:
        raise ValueError(f"{len(streams)} streams, at most {MAX_STREAMS}")
    table = b"".join(
        STREAM_ENTRY.pack(s.codec, s.context, 0, s.decoded_size, s.encoded_size) for s in streams
    ) + RAW_CHECK.pack(raw_check)
    body_size = len(table) + sum(memoryview(p).nbytes for p in payloads)
    head = FRAME_HEADER.pack(magic, transform, len(streams), 0, src_offset, raw_size, body_size, 0)
    h = xxhash.xxh3_64(head[:FRAME_CHECKED])
    h.update(table)
    for p in payloads:
        h.update(p)
    head = head[:FRAME_CHECKED] + h.intdigest().to_bytes(8, "little")
    return [head + table, *payloads]


def parse_frame_header(buf, *, path=None, offset: int | None = None) -> FrameHeader:
    """Parse and sanity-check a 32-byte frame header (the checksum is checked later)."""
    if len(buf) < FRAME_HEADER.size:
        raise FormatError(
            f"truncated frame header: {len(buf)} of {FRAME_HEADER.size} bytes",
            path=path,
            offset=offset,
        )
    h = FrameHeader(*FRAME_HEADER.unpack_from(buf))
    if h.magic not in (CHUNK_MAGIC, INDEX_MAGIC):
        raise FormatError(f"bad frame magic {h.magic!r}", path=path, offset=offset)
    if h.n_streams == 0 or h.n_streams > MAX_STREAMS:
        raise FormatError(
            f"frame has {h.n_streams} streams (1..{MAX_STREAMS})", path=path, offset=offset
        )
    if h.magic == CHUNK_MAGIC and h.raw_size > MAX_CHUNK_RAW:
        raise FormatError(
            f"chunk claims {h.raw_size} bytes, over the {MAX_CHUNK_RAW}-byte limit",
            path=path,
            offset=offset,
        )
    if h.body_size < h.n_streams * STREAM_ENTRY.size + RAW_CHECK.size:
        raise FormatError(
            f"frame body of {h.body_size} bytes is too short", path=path, offset=offset
        )
    return h


def parse_frame(buf, *, path=None, offset: int | None = None) -> Frame:
    """Parse a whole frame held in ``buf`` and verify its checksum."""
    mv = memoryview(buf).cast("B")
    h = parse_frame_header(mv, path=path, offset=offset)
    if len(mv) != h.size:
        raise FormatError(
            f"frame is {len(mv)} bytes, its header says {h.size}", path=path, offset=offset
        )
    hasher = xxhash.xxh3_64(mv[:FRAME_CHECKED])
    hasher.update(mv[FRAME_HEADER.size :])
    if hasher.intdigest() != h.check:
        raise CorruptDataError(
            f"frame checksum mismatch (stored {h.check:016x}, computed {hasher.intdigest():016x})",
            path=path,
            offset=offset,
        )
    pos = FRAME_HEADER.size
    streams = []
    for _ in range(h.n_streams):
        streams.append(
            StreamInfo(*(v for i, v in enumerate(STREAM_ENTRY.unpack_from(mv, pos)) if i != 2))
        )
        pos += STREAM_ENTRY.size
    (raw_check,) = RAW_CHECK.unpack_from(mv, pos)
    pos += RAW_CHECK.size
    if pos + sum(s.encoded_size for s in streams) != len(mv):
        raise FormatError("stream sizes do not add up to the frame size", path=path, offset=offset)
    payloads = []
    for s in streams:
        payloads.append(mv[pos : pos + s.encoded_size])
        pos += s.encoded_size
    return Frame(h, tuple(streams), raw_check, tuple(payloads))
