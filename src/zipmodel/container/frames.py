"""Building and parsing frames (one chunk, all of its streams, one checksum)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._checksum import xxh3_64
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

__all__ = [
    "HEADROOM",
    "Frame",
    "FrameHeader",
    "FrameWriter",
    "StreamInfo",
    "build_frame",
    "frame_buffer",
    "parse_frame",
    "parse_frame_header",
    "parse_frame_inplace",
]

# The checksum covers header[0:24] and the body, which the 8-byte check field separates. A frame
# held at offset HEADROOM of a buffer can be made contiguous by moving its first 24 bytes 8 to
# the right, so it is hashed in one pass without copying the body.
HEADROOM = 8
_local = threading.local()


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


class FrameWriter:
    """Assembles one frame in a caller-provided buffer, payload by payload.

    Each payload is copied in as soon as it is added, so a codec may hand back a view of its
    own scratch memory. ``finish`` writes the stream table, the header and the checksum and
    returns the frame (a view of ``buf``).
    """

    def __init__(self, buf: np.ndarray, n_streams: int):
        if n_streams > MAX_STREAMS:
            raise ValueError(f"{n_streams} streams, at most {MAX_STREAMS}")
        self.buf = buf
        self.n_streams = n_streams
        self.pos = HEADROOM + FRAME_HEADER.size + STREAM_ENTRY.size * n_streams + RAW_CHECK.size

    @staticmethod
    def capacity(n_streams: int, payload_bytes: int) -> int:
        """Buffer bytes needed for a frame of ``n_streams`` holding ``payload_bytes``."""
        return (
            HEADROOM
            + FRAME_HEADER.size
            + STREAM_ENTRY.size * n_streams
            + RAW_CHECK.size
            + payload_bytes
        )

    def add(self, payload) -> int:
        a = payload if isinstance(payload, np.ndarray) else np.frombuffer(payload, np.uint8)
        a = a.reshape(-1).view(np.uint8)
        self.buf[self.pos : self.pos + a.size] = a
        self.pos += a.size
        return int(a.size)

    def finish(
        self,
        magic: bytes,
        transform: int,
        src_offset: int,
        raw_size: int,
        raw_check: int,
        streams: Sequence[StreamInfo],
    ) -> np.ndarray:
        if len(streams) != self.n_streams:
            raise ValueError(f"{len(streams)} stream entries for {self.n_streams} streams")
        buf = self.buf
        table = b"".join(
            STREAM_ENTRY.pack(s.codec, s.context, 0, s.decoded_size, s.encoded_size)
            for s in streams
        ) + RAW_CHECK.pack(raw_check)
        t0 = HEADROOM + FRAME_HEADER.size
        buf[t0 : t0 + len(table)] = np.frombuffer(table, np.uint8)
        body_size = self.pos - t0
        head = FRAME_HEADER.pack(
            magic, transform, self.n_streams, 0, src_offset, raw_size, body_size, 0
        )
        buf[HEADROOM + 8 : HEADROOM + 32] = np.frombuffer(head[:FRAME_CHECKED], np.uint8)
        check = xxh3_64(buf[HEADROOM + 8 : self.pos])
        buf[HEADROOM : HEADROOM + 32] = np.frombuffer(
            head[:FRAME_CHECKED] + check.to_bytes(8, "little"), np.uint8
        )
        return buf[HEADROOM : self.pos]


def build_frame(
    magic: bytes,
    transform: int,
    src_offset: int,
    raw_size: int,
    raw_check: int,
    streams: Sequence[StreamInfo],
    payloads: Sequence,
) -> list:
    """Return the frame as a list of buffers to write in order (here: one contiguous array)."""
    total = sum(memoryview(p).nbytes for p in payloads)
    w = FrameWriter(np.empty(FrameWriter.capacity(len(streams), total), np.uint8), len(streams))
    for p in payloads:
        w.add(p)
    return [w.finish(magic, transform, src_offset, raw_size, raw_check, streams)]


def frame_buffer(size: int) -> np.ndarray:
    """This thread's reusable buffer for reading a frame of ``size`` bytes (plus headroom)."""
    b = getattr(_local, "buf", None)
    if b is None or b.size < size + HEADROOM:
        b = _local.buf = np.empty(max(size + HEADROOM, 1 << 20), np.uint8)
    return b


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
    if h.flags:
        raise FormatError(
            f"frame flags are {h.flags:#x} (must be 0)", path=path, offset=offset
        )
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


def parse_frame(buf, *, path=None, offset: int | None = None, one_shot: bool = False) -> Frame:
    """Parse a whole frame held in ``buf`` and verify its checksum.

    The frame is copied into this thread's frame buffer; payloads are views into it, valid
    until the next frame is parsed on this thread. ``one_shot``: a frame read once by a
    caller that waits for it (the index), checked without the Numba kernel.
    """
    src = buf if isinstance(buf, np.ndarray) else np.frombuffer(buf, np.uint8)
    size = src.size
    fb = frame_buffer(size)
    fb[HEADROOM : HEADROOM + size] = src
    return parse_frame_inplace(fb, size, path=path, offset=offset, one_shot=one_shot)


def parse_frame_inplace(
    fb: np.ndarray, size: int, *, path=None, offset: int | None = None, one_shot: bool = False
) -> Frame:
    """Parse the frame of ``size`` bytes at ``fb[HEADROOM:]`` (``fb`` is modified)."""
    mv = memoryview(fb)[HEADROOM : HEADROOM + size]
    h = parse_frame_header(mv, path=path, offset=offset)
    if size != h.size:
        raise FormatError(
            f"frame is {size} bytes, its header says {h.size}", path=path, offset=offset
        )
    pos = FRAME_HEADER.size
    streams = []
    for j in range(h.n_streams):
        codec, context, reserved, dec, enc = STREAM_ENTRY.unpack_from(mv, pos)
        if reserved:
            raise FormatError(
                f"stream {j} has reserved field {reserved:#x} (must be 0)",
                path=path,
                offset=offset,
            )
        streams.append(StreamInfo(codec, context, dec, enc))
        pos += STREAM_ENTRY.size
    (raw_check,) = RAW_CHECK.unpack_from(mv, pos)
    pos += RAW_CHECK.size
    # make header[0:24] and the body contiguous (see HEADROOM) and check them in one pass
    fb[HEADROOM + 8 : HEADROOM + 32] = fb[HEADROOM : HEADROOM + 24].copy()
    computed = xxh3_64(fb[HEADROOM + 8 : HEADROOM + size])
    if computed != h.check:
        raise CorruptDataError(
            f"frame checksum mismatch (stored {h.check:016x}, computed {computed:016x})",
            path=path,
            offset=offset,
        )
    if pos + sum(s.encoded_size for s in streams) != size:
        raise FormatError("stream sizes do not add up to the frame size", path=path, offset=offset)
    payloads = []
    for s in streams:
        payloads.append(mv[pos : pos + s.encoded_size])
        pos += s.encoded_size
    return Frame(h, tuple(streams), raw_check, tuple(payloads))
