"""One chunk: transform and code it into a frame, and decode a frame back."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from .._checksum import xxh3_64
from ..codecs import compiled_codecs, get_codec
from ..codecs.select import CodecPolicy, encode_stream
from ..container.format import (
    CHUNK_MAGIC,
    NO_CONTEXT,
)
from ..container.frames import Frame, FrameWriter, StreamInfo, parse_frame, parse_frame_inplace
from ..errors import CorruptDataError, FormatError, ZipmodelError
from ..stages import Transform, get_transform, transform_for
from .fused import decode_frame_fused, encode_frame_fused


@dataclass
class EncodedChunk:
    frame: np.ndarray  # the frame's bytes (a view of a pooled buffer)
    buffer: np.ndarray | None  # the pooled buffer, handed back after the frame is written
    transform_id: int
    raw_size: int
    streams: list[StreamInfo]
    seconds: float

    @property
    def frame_size(self) -> int:
        return int(self.frame.size)


_SMALL_FRAME = 64 << 10
TINY_CHUNK = 4 << 10  # split chunks up to this size are also tried coded whole


class BufferPool:
    """Reusable frame buffers: a freed 700 KiB block goes back to the OS and faults in fresh
    pages next time (measured: a split into fresh arrays took 556 us, into reused ones 39 us)."""

    def __init__(self, limit: int = 64):
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._limit = limit

    def acquire(self, size: int) -> np.ndarray:
        with self._lock:
            for i, b in enumerate(self._free):
                if b.size >= size:
                    return self._free.pop(i)
        # a small frame gets a small buffer (heap memory, not fresh pages; tensors far
        # smaller than a chunk are most of a model's segments)
        return np.empty(max(size, 1 << 20) if size > _SMALL_FRAME else _SMALL_FRAME, np.uint8)

    def release(self, buf: np.ndarray | None) -> None:
        if buf is None:
            return
        with self._lock:
            if len(self._free) < self._limit:
                self._free.append(buf)


_encode_local = threading.local()


def _stream_scratch(transform: Transform, raw_size: int) -> list[np.ndarray]:
    """Per-thread arrays for a chunk's streams (valid until this thread's next chunk)."""
    bufs = getattr(_encode_local, "streams", None)
    if bufs is None:
        bufs = _encode_local.streams = []
    sizes = transform.stream_sizes(raw_size)
    while len(bufs) < len(sizes):
        bufs.append(np.empty(0, np.uint8))
    out = []
    for j, n in enumerate(sizes):
        if bufs[j].size < n:
            bufs[j] = np.empty(max(n, 1 << 19), np.uint8)
        out.append(bufs[j][:n])
    return out


def encode_chunk(
    raw: np.ndarray,
    src_offset: int,
    transform: Transform,
    policy: CodecPolicy,
    layout: tuple[int, int] | None = None,
    *,
    pool: BufferPool | None = None,
) -> EncodedChunk:
    """Transform and code one chunk into a frame (``raw`` is never modified).

    ``layout`` is ``(row_len, first_col)`` of the chunk's elements in a matrix-shaped tensor.
    With ``pool``, the frame lives in a pooled buffer the caller hands back after writing it.
    """
    t0 = time.perf_counter()
    n = int(raw.size)
    size = FrameWriter.capacity(transform.n_streams, n)
    buf = pool.acquire(size) if pool is not None else np.empty(size, np.uint8)
    fused = encode_frame_fused(raw, src_offset, transform, policy, buf)
    if fused is not None:  # split, chosen, coded and framed in one kernel call
        frame, infos = fused
    else:
        frame, infos = _encode_frame(raw, src_offset, transform, policy, layout, buf)
    tid = transform.transform_id
    if transform.n_streams > 1 and n <= TINY_CHUNK:
        # A tiny chunk (a norm weight, a bias): each extra stream costs a 12-byte entry and
        # its own codec header, often more than coding the fields apart saves. Keep the
        # smaller of the split frame and the bytes coded whole (F32 of 256 bytes: 344 -> 308).
        whole = transform_for(None)
        alt = np.empty(FrameWriter.capacity(1, n), np.uint8)
        f2, i2 = _encode_frame(raw, src_offset, whole, policy, None, alt)
        if f2.size < frame.size:
            frame, infos, tid = f2, i2, whole.transform_id
    return EncodedChunk(
        frame,
        buf if pool is not None else None,
        tid,
        n,
        infos,
        time.perf_counter() - t0,
    )


def _encode_frame(raw, src_offset, transform, policy, layout, buf):
    """The Python path of :func:`encode_chunk`: split, each stream through the chooser,
    the frame assembled in ``buf``; returns ``(frame, stream infos)``."""
    n = int(raw.size)
    if transform.n_streams > 1:
        streams = transform.forward(raw, _stream_scratch(transform, n))
    else:
        streams = transform.forward(raw)
    w = FrameWriter(buf, transform.n_streams)
    infos = []
    kinds = zip(streams, transform.stream_kinds, transform.stream_contexts, transform.stream_2d)
    for s, kind, ctx, two_d in kinds:
        codec_id, payload, used_ctx = encode_stream(
            s, kind, policy, streams[ctx] if ctx is not None else None, layout if two_d else None
        )
        nbytes = w.add(payload)  # copied now: a codec's payload may live in its scratch
        infos.append(StreamInfo(codec_id, ctx if used_ctx else NO_CONTEXT, int(s.size), nbytes))
    frame = w.finish(
        CHUNK_MAGIC, transform.transform_id, src_offset, n, xxh3_64(raw, src_offset), infos
    )
    return frame, infos


_scratch_local = threading.local()


def _scratch(slot: int, size: int) -> np.ndarray:
    """A per-thread reusable buffer: decoding does not page-fault fresh memory per chunk."""
    bufs = getattr(_scratch_local, "bufs", None)
    if bufs is None:
        bufs = _scratch_local.bufs = {}
    b = bufs.get(slot)
    if b is None or b.size < size:
        b = bufs[slot] = np.empty(max(size, 1 << 20), np.uint8)
    return b[:size]


def decode_chunk(buf, out: np.ndarray, *, row=None, path=None, offset: int | None = None) -> None:
    """Decode the frame in ``buf`` (bytes-like, or a parsed :class:`Frame`) into ``out``.

    ``out`` is uint8 of the chunk's exact size; the decoded bytes are verified against the
    frame's content checksum. ``row`` (the chunk's index entry) is cross-checked when given.
    """
    frame = buf if isinstance(buf, Frame) else parse_frame(buf, path=path, offset=offset)
    h = frame.header
    if h.magic != CHUNK_MAGIC:
        raise FormatError("expected a chunk frame", path=path, offset=offset)
    if h.raw_size != out.size:
        raise FormatError(
            f"chunk holds {h.raw_size} bytes, expected {out.size}", path=path, offset=offset
        )
    if row is not None and (
        h.transform != int(row["transform"])
        or h.src_offset != int(row["src_offset"])
        or h.n_streams != int(row["n_streams"])
    ):
        raise FormatError("frame does not match its index entry", path=path, offset=offset)
    t = get_transform(h.transform)
    if t is None:
        raise FormatError(f"unknown transform id {h.transform}", path=path, offset=offset)
    if h.n_streams != t.n_streams or h.raw_size % t.itemsize:
        raise FormatError(f"{t.name} frame has a wrong shape", path=path, offset=offset)
    sizes = t.stream_sizes(h.raw_size)
    streams: list[np.ndarray] = []
    try:
        for j, (info, payload, want) in enumerate(zip(frame.streams, frame.payloads, sizes)):
            if info.decoded_size != want:
                raise FormatError(
                    f"stream decodes to {info.decoded_size} bytes, {t.name} needs {want}",
                    path=path,
                    offset=offset,
                )
            if info.codec == 0:  # raw: use the payload in place
                if len(payload) != want:
                    raise CorruptDataError(
                        "raw stream has the wrong size", path=path, offset=offset
                    )
                streams.append(np.frombuffer(payload, np.uint8))
                continue
            s = out if t.n_streams == 1 else _scratch(j, want)
            if info.context == NO_CONTEXT:
                get_codec(info.codec).decode(payload, s)
            elif info.context < j:
                codec = get_codec(info.codec)
                if not codec.uses_context:
                    raise FormatError(
                        f"codec {codec.name} takes no context", path=path, offset=offset
                    )
                codec.decode(payload, s, streams[info.context])
            else:
                raise FormatError(
                    f"stream {j} names context stream {info.context}", path=path, offset=offset
                )
            streams.append(s)
        if not (t.n_streams == 1 and streams[0] is out):
            t.inverse(streams, out)
    except ZipmodelError as e:  # codecs do not know the file name
        raise (e.with_path(path) if path else e) from None
    if xxh3_64(out, h.src_offset) != frame.raw_check:
        raise CorruptDataError(
            "chunk content checksum mismatch after decoding", path=path, offset=offset
        )


_COMPILED_CODECS = np.array(sorted(compiled_codecs()), np.uint8)  # Numba-decoded codecs


def _entropy_coded(index, row) -> bool:
    """Whether the one-call frame kernel can pay for its first use on this chunk: a float
    split or a Huffman/rANS stream. An identity frame of raw/const/zstd streams (a small file,
    verbatim headers, integer and GGUF blocks) goes to the Python path, which decodes it with
    zstd and python-xxhash, so such a file is restored without importing Numba."""
    if int(row["transform"]) != 0:
        return True
    first = int(row["first_stream"])
    codecs = index.streams["codec"][first : first + int(row["n_streams"])]
    return bool(np.isin(codecs, _COMPILED_CODECS).any())


def _table(index) -> np.ndarray:
    """The index's stream table as bytes (12-byte rows laid out as frame stream entries)."""
    return index.streams.view(np.uint8).reshape(-1)


def _check_streams(frame: Frame, index, row, path, offset) -> None:
    """The frame's stream entries must be the index's (codec, context, sizes)."""
    first = int(row["first_stream"])
    want = index.streams[first : first + int(row["n_streams"])]
    got = [(s.codec, s.context, s.decoded_size, s.encoded_size) for s in frame.streams]
    if len(want) != len(got) or any(
        g != (int(w["codec"]), int(w["context"]), int(w["decoded_size"]), int(w["encoded_size"]))
        for g, w in zip(got, want)
    ):
        raise CorruptDataError(
            "the frame's stream entries disagree with the index's stream table",
            path=path,
            offset=offset,
        )


def decode_chunk_into(reader, i: int, buf: np.ndarray) -> None:
    """Read chunk ``i``'s frame (into this thread's frame buffer) and decode it into ``buf``."""
    index = reader.index
    row = index.chunks[i]
    fb, fsize = reader.read_frame_into(i)
    if _entropy_coded(index, row) and decode_frame_fused(fb, fsize, buf, row, _table(index)):
        return
    offset = int(row["frame_offset"])
    frame = parse_frame_inplace(fb, fsize, path=reader.name, offset=offset)
    _check_streams(frame, index, row, reader.name, offset)
    decode_chunk(frame, buf, row=row, path=reader.name, offset=offset)
