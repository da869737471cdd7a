"""The data path: segments → chunks → transform → codecs → frames, and back.

Chunks are independent: each one is transformed and coded on its own, so chunks run on a
thread pool (the heavy work releases the GIL) and the container's bytes do not depend on the
thread count. Results are written in source order through a bounded window, so memory stays
at about ``threads × 2`` chunks whatever the file size.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from ._checksum import xxh3_64
from .codecs import get_codec
from .codecs.select import CodecPolicy, encode_stream, policy_for_level
from .container.format import (
    CHUNK_DTYPE,
    CHUNK_MAGIC,
    FORMAT_MAJOR,
    MAX_CHUNK_RAW,
    NO_CONTEXT,
    STREAM_DTYPE,
)
from .container.frames import Frame, FrameWriter, StreamInfo, parse_frame, parse_frame_inplace
from .container.index import Index, SegmentEntry
from .container.writer import ContainerWriter
from .errors import CorruptDataError, FormatError, ZipmodelError
from .readers.base import TENSOR, Layout
from .stages import Transform, get_transform, transform_for

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkPlan",
    "CompressOptions",
    "compress_layout",
    "decode_chunk",
    "encode_chunk",
    "find_duplicates",
    "iter_decoded",
    "iter_decoded_into",
    "iter_source",
    "plan_chunks",
    "resolve_threads",
]

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4 << 10

Progress = Callable[[int, int], None]  # called with (source bytes done, source bytes in all)


def resolve_threads(threads: int | None) -> int:
    """``0``/``None`` means one thread per core (capped at 32)."""
    if not threads:
        return max(1, min(32, os.cpu_count() or 1))
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    return threads


@dataclass(frozen=True)
class CompressOptions:
    """Settings that determine the container's bytes (thread count does not)."""

    level: str = "default"
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_RAW:
            raise ValueError(
                f"chunk size {self.chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_RAW} bytes"
            )
        policy_for_level(self.level)  # validates the name

    def to_json(self) -> dict:
        return {"level": self.level, "chunk_size": self.chunk_size}


@dataclass(frozen=True)
class ChunkPlan:
    segment: int
    offset: int
    size: int
    transform: Transform
    layout: tuple[int, int] | None = None  # (row_len, first_col) for matrix-shaped tensors


def plan_chunks(
    layout: Layout, chunk_size: int, dups: dict[int, int] | None = None
) -> tuple[list[ChunkPlan], list[tuple[int, int]]]:
    """Cut every segment into chunks of at most ``chunk_size`` bytes (whole elements).

    Segments in ``dups`` (index -> earlier segment with the same bytes) get no chunks.
    Returns the chunks in source order and, per segment, ``(first_chunk, n_chunks)``.
    """
    plans: list[ChunkPlan] = []
    ranges = []
    for i, seg in enumerate(layout.segments):
        if dups and i in dups:
            ranges.append((len(plans), 0))
            continue
        t = transform_for(seg.dtype if seg.kind == TENSOR else None)
        if seg.size % t.itemsize:
            t = transform_for(None)  # not whole elements (unknown packing): code the bytes whole
        step = max(t.itemsize, chunk_size - chunk_size % t.itemsize)
        row_len = _row_len(seg)
        first = len(plans)
        for off in range(seg.offset, seg.end, step):
            lay = None
            if row_len > 1:
                lay = (row_len, ((off - seg.offset) // t.itemsize) % row_len)
            plans.append(ChunkPlan(i, off, min(step, seg.end - off), t, lay))
        ranges.append((first, len(plans) - first))
    return plans, ranges


DEDUP_MIN = 4096  # segments at least this big are stored once when their bytes repeat


def find_duplicates(
    data: np.ndarray, layout: Layout, release: Callable[[int, int], None] | None = None
) -> dict[int, int]:
    """Segments whose bytes equal an earlier segment's: ``{index: earlier index}``.

    Tied embeddings, shared layers and repeated tables are then coded once. Candidates are
    found by XXH3 and confirmed byte for byte.
    """
    seen: dict[tuple[int, int], list[int]] = {}
    dups: dict[int, int] = {}
    for i, seg in enumerate(layout.segments):
        if seg.size < DEDUP_MIN:
            continue
        view = data[seg.offset : seg.end]
        key = (seg.size, xxh3_64(view))
        if release:
            release(seg.offset, seg.size)
        for j in seen.get(key, ()):
            other = layout.segments[j]
            if np.array_equal(data[other.offset : other.end], view):
                dups[i] = j
                break
        else:
            seen.setdefault(key, []).append(i)
    return dups


def _row_len(seg) -> int:
    """Elements per row when a tensor is viewed as a matrix (first axis x the rest), else 0."""
    if seg.kind != TENSOR or not seg.shape or len(seg.shape) < 2:
        return 0
    n = 1
    for d in seg.shape[1:]:
        n *= d
    return n if seg.shape[0] > 1 else 0


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
        return np.empty(max(size, 1 << 20), np.uint8)

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
    if transform.n_streams > 1:
        streams = transform.forward(raw, _stream_scratch(transform, n))
    else:
        streams = transform.forward(raw)
    size = FrameWriter.capacity(transform.n_streams, n)
    buf = pool.acquire(size) if pool is not None else np.empty(size, np.uint8)
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
    return EncodedChunk(
        frame,
        buf if pool is not None else None,
        transform.transform_id,
        n,
        infos,
        time.perf_counter() - t0,
    )


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
                if not getattr(codec, "uses_context", False):
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


@dataclass
class CompressResult:
    index: Index
    output_size: int
    seconds: float
    chunk_seconds: dict[str, float] = field(default_factory=dict)  # worker time per dtype


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` workers, kept between calls.

    Workers keep their per-thread scratch buffers (stream, frame and decode-table scratch),
    so a second call does not page-fault them in again: with a pool per call, two threads
    decoded slower than one.
    """
    with _pools_lock:
        ex = _pools.get(threads)
        if ex is None:
            ex = _pools[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix=f"zipmodel-{threads}"
            )
        return ex


def _windowed(items: list, fn: Callable, threads: int) -> Iterator:
    """Map ``fn`` over ``items`` on ``threads`` threads; yield results in order, bounded."""
    if threads <= 1 or len(items) <= 1:
        for it in items:
            yield fn(it)
        return
    ex = _pool(threads)
    pending: deque[Future] = deque()
    it = iter(items)
    for x in it:
        pending.append(ex.submit(fn, x))
        if len(pending) >= 2 * threads:
            break
    try:
        while pending:
            res = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(ex.submit(fn, nxt))
            yield res
    finally:
        # stop what has not started, and let running work finish before the caller's
        # buffers are reused (the pool outlives this call)
        for f in pending:
            f.cancel()
        wait(pending)


class _Hasher:
    """SHA-256 of a whole source, computed on a thread of its own while chunks are coded.

    hashlib releases the GIL, so on one encoding thread the hash (1.5 GB/s, 13-15% of the
    work) overlaps coding instead of following it.
    """

    BLOCK = 8 << 20

    def __init__(self, data: np.ndarray, release: Callable[[int, int], None] | None = None):
        self._sha = hashlib.sha256()
        self._data = data
        self._release = release
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="zipmodel-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for a in range(0, int(self._data.size), self.BLOCK):
                if self._stop:
                    return
                self._sha.update(self._data[a : a + self.BLOCK])
                if self._release:
                    self._release(a, self.BLOCK)
        except BaseException as e:  # re-raised by finish()
            self._error = e

    def finish(self) -> str:
        """The hex digest (waits for the thread). After an error elsewhere, stops it early."""
        if sys.exc_info()[0] is not None:
            self._stop = True
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._sha.hexdigest()


def compress_layout(
    data: np.ndarray,
    layout: Layout,
    out: BinaryIO,
    *,
    source_name: str,
    options: CompressOptions = CompressOptions(),
    threads: int = 0,
    progress: Progress | None = None,
    release: Callable[[int, int], None] | None = None,
) -> CompressResult:
    """Write the container for ``data`` (the whole source, uint8) described by ``layout``.

    ``release(offset, size)``, when given, is called for source ranges this call is done with
    (a mapped file drops those pages: resident memory stays at the chunks in flight).
    """
    t0 = time.perf_counter()
    threads = resolve_threads(threads)
    policy = policy_for_level(options.level)
    dups = find_duplicates(data, layout, release)
    plans, ranges = plan_chunks(layout, options.chunk_size, dups)
    minor = 1 if dups else 0  # duplicate segments need format 1.1; otherwise write 1.0
    writer = ContainerWriter(out, minor=minor)
    chunk_rows = np.zeros(len(plans), CHUNK_DTYPE)
    stream_rows = []
    seconds: dict[str, float] = {}

    pool = BufferPool(4 * threads + 4)

    def work(p: ChunkPlan) -> EncodedChunk:
        chunk = data[p.offset : p.offset + p.size]
        return encode_chunk(chunk, p.offset, p.transform, policy, p.layout, pool=pool)

    done = 0
    hasher = _Hasher(data, release)  # SHA-256 of the whole source on its own thread
    try:
        for i, (p, enc) in enumerate(zip(plans, _windowed(plans, work, threads))):
            off, size = writer.write_frame([enc.frame])
            pool.release(enc.buffer)
            if release:
                release(p.offset, p.size)
            chunk_rows[i] = (
                p.offset,
                off,
                size,
                p.size,
                enc.transform_id,
                len(enc.streams),
                0,
                len(stream_rows),
            )
            stream_rows.extend(
                (s.codec, s.context, 0, s.decoded_size, s.encoded_size) for s in enc.streams
            )
            seg = layout.segments[p.segment]
            key = seg.dtype if seg.kind == TENSOR else "verbatim"
            seconds[key] = seconds.get(key, 0.0) + enc.seconds
            done += p.size
            if progress:
                progress(done, layout.size)
    finally:
        digest = hasher.finish()
    index = Index(
        source={
            "name": source_name,
            "size": layout.size,
            "sha256": digest,
            "format": layout.format,
        },
        segments=[
            SegmentEntry(s, f, n, dups.get(i))
            for i, (s, (f, n)) in enumerate(zip(layout.segments, ranges))
        ],
        chunks=chunk_rows,
        streams=np.array(stream_rows, STREAM_DTYPE) if stream_rows else np.zeros(0, STREAM_DTYPE),
        options=options.to_json(),
        metadata=layout.metadata,
        writer=f"zipmodel {_version()}",
        format_version=(FORMAT_MAJOR, minor),
    )
    total = writer.finish(index)
    return CompressResult(index, total, time.perf_counter() - t0, seconds)


def iter_decoded(
    reader,
    chunks: range | list[int] | None = None,
    *,
    threads: int = 0,
    out: np.ndarray | None = None,
    base: int = 0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode chunks (all by default) on ``threads`` threads; yield ``(chunk, bytes)`` in order.

    With ``out`` each chunk is decoded in place into ``out[src_offset - base:...]`` (``out``
    then covers the source from byte ``base``); otherwise every chunk gets its own array.
    """
    rows = reader.index.chunks
    todo = list(range(len(rows))) if chunks is None else list(chunks)
    threads = resolve_threads(threads)

    def work(i: int) -> tuple[int, np.ndarray]:
        row = rows[i]
        off, size = int(row["src_offset"]), int(row["raw_size"])
        buf = out[off - base : off - base + size] if out is not None else np.empty(size, np.uint8)
        _decode_chunk_into(reader, i, buf)
        return i, buf

    yield from _windowed(todo, work, threads)


def iter_decoded_into(
    reader, work: list[tuple[int, np.ndarray]], *, threads: int = 0
) -> Iterator[int]:
    """Decode each ``(chunk, out)`` of ``work`` into its ``out`` (uint8, the chunk's size) on
    ``threads`` threads; yield the chunk ids in the order given, each once it is decoded.

    One window over many destinations: chunks of different tensors decode side by side, where
    a call of :func:`iter_decoded` per tensor would drain the pool at every small tensor.
    """
    threads = resolve_threads(threads)

    def one(item: tuple[int, np.ndarray]) -> int:
        _decode_chunk_into(reader, item[0], item[1])
        return item[0]

    yield from _windowed(work, one, threads)


def _decode_chunk_into(reader, i: int, buf: np.ndarray) -> None:
    """Read chunk ``i``'s frame (into this thread's frame buffer) and decode it into ``buf``."""
    row = reader.index.chunks[i]
    fb, fsize = reader.read_frame_into(i)
    offset = int(row["frame_offset"])
    frame = parse_frame_inplace(fb, fsize, path=reader.name, offset=offset)
    decode_chunk(frame, buf, row=row, path=reader.name, offset=offset)


def source_plan(index) -> list[tuple[int, int]]:
    """``(chunk, destination offset)`` for every piece of the source, in source order.

    A duplicate segment is restored from the chunks of the segment it repeats.
    """
    rows = index.chunks
    todo: list[tuple[int, int]] = []
    for e in index.segments:
        ref = e if e.dup_of is None else index.segments[e.dup_of]
        shift = e.segment.offset - ref.segment.offset
        for c in range(ref.first_chunk, ref.first_chunk + ref.n_chunks):
            todo.append((c, int(rows[c]["src_offset"]) + shift))
    return todo


def iter_source(
    reader, *, threads: int = 0, out: np.ndarray | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the whole source; yield ``(source offset, bytes)`` pieces in order.

    With ``out`` (the source's size) every piece is decoded in place into it.
    """
    rows = reader.index.chunks
    threads = resolve_threads(threads)

    def work(item: tuple[int, int]) -> tuple[int, np.ndarray]:
        i, dest = item
        row = rows[i]
        size = int(row["raw_size"])
        buf = out[dest : dest + size] if out is not None else np.empty(size, np.uint8)
        _decode_chunk_into(reader, i, buf)
        return dest, buf

    yield from _windowed(source_plan(reader.index), work, threads)


def _version() -> str:
    from . import __version__

    return __version__
