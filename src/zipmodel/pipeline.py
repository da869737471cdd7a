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
from dataclasses import dataclass, field, replace
from typing import BinaryIO

import numpy as np

from ._checksum import xxh3_64
from ._frame_decode import decode_frame_fused
from .codecs import get_codec
from .codecs.select import CodecPolicy, encode_stream, policy_for_level
from .container.format import (
    CHUNK_DTYPE,
    CHUNK_MAGIC,
    FLAG_LOSSY,
    FORMAT_MAJOR,
    MAX_CHUNK_RAW,
    NO_CONTEXT,
    STREAM_DTYPE,
)
from .container.frames import Frame, FrameWriter, StreamInfo, parse_frame, parse_frame_inplace
from .container.index import STAGES_MINOR, Index, PartRecord, SegmentEntry, StageRecord
from .container.writer import ContainerWriter
from .dtypes import get_dtype
from .errors import CorruptDataError, FormatError, ZipmodelError
from .readers.base import TENSOR, Layout, Segment
from .stages import Transform, get_stage, get_transform, transform_for
from .stages.tensor import StageContext, Staged, TensorStage

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ChunkPlan",
    "CompressOptions",
    "StageChooser",
    "compress_layout",
    "decode_chunk",
    "decode_segment",
    "encode_chunk",
    "encode_stage",
    "find_duplicates",
    "iter_segments",
    "iter_source",
    "plan_chunks",
    "resolve_threads",
]

DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4 << 10

Progress = Callable[[int, int], None]  # called with (source bytes done, source bytes in all)
# Picks the tensor stage for a tensor segment (None: code it losslessly as it is).
StageChooser = Callable[[Segment], "TensorStage | None"]


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
    offset: int  # recorded as the chunk's src_offset (for a stage part: segment offset + position)
    size: int
    transform: Transform
    layout: tuple[int, int] | None = None  # (row_len, first_col) for matrix-shaped tensors
    # A stage part's bytes (``offset`` counts from the segment's offset into them); None: the
    # chunk is source bytes.
    part: np.ndarray | None = None
    credit: int | None = None  # source bytes done once it is written (default: ``size``)


def _range_plans(
    segment: int,
    start: int,
    size: int,
    dtype: str | None,
    shape: tuple[int, ...] | None,
    chunk_size: int,
    part: np.ndarray | None = None,
) -> list[ChunkPlan]:
    """Chunks of ``size`` bytes of ``dtype`` elements laid out from ``start`` (whole elements)."""
    t = transform_for(dtype)
    if size % t.itemsize:
        t = transform_for(None)  # not whole elements (unknown packing): code the bytes whole
    step = max(t.itemsize, chunk_size - chunk_size % t.itemsize)
    row_len = _row_len(shape)
    plans = []
    for off in range(start, start + size, step):
        lay = None
        if row_len > 1:
            lay = (row_len, ((off - start) // t.itemsize) % row_len)
        plans.append(ChunkPlan(segment, off, min(step, start + size - off), t, lay, part))
    return plans


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
        first = len(plans)
        tensor = seg.kind == TENSOR
        plans += _range_plans(
            i,
            seg.offset,
            seg.size,
            seg.dtype if tensor else None,
            seg.shape if tensor else None,
            chunk_size,
        )
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


def _row_len(shape: tuple[int, ...] | None) -> int:
    """Elements per row when a tensor is viewed as a matrix (first axis x the rest), else 0."""
    if not shape or len(shape) < 2:
        return 0
    n = 1
    for d in shape[1:]:
        n *= d
    return n if shape[0] > 1 else 0


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


def _windowed(items, fn: Callable, threads: int) -> Iterator:
    """Map ``fn`` over ``items`` (a list or an iterator, consumed as the window moves) on
    ``threads`` threads; yield results in order, at most ``2 × threads`` in flight."""
    if threads <= 1 or (isinstance(items, list) and len(items) <= 1):
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


@dataclass
class StagedTensor:
    """A tensor a stage has transformed: its parts, and the checksum of what decodes back."""

    stage: TensorStage
    staged: Staged
    check: int  # xxh3_64 of the decoded tensor's bytes


def encode_stage(
    stage: TensorStage, tensor: np.ndarray, seg: Segment, ctx: StageContext
) -> StagedTensor | None:
    """Run ``stage`` on ``tensor`` (the segment's bytes) and check what it returns.

    The parts are decoded again here: the checksum recorded is of the bytes decoding will
    give, and a lossless stage that does not give the tensor back is caught before anything
    is written. ``None`` when the stage declines the tensor.
    """
    import json

    staged = stage.encode(tensor, seg, ctx)
    if staged is None:
        return None
    where = f"tensor stage {stage.name} on {seg.name!r}"
    for part in staged.parts:
        d = part.data
        dt = get_dtype(part.dtype)
        if not (isinstance(d, np.ndarray) and d.dtype == np.uint8 and d.ndim == 1):
            raise TypeError(f"{where}: part {part.name!r} is not a 1-D uint8 array")
        if dt is None or dt.itemsize == 0 or d.size % dt.itemsize:
            raise ValueError(f"{where}: part {part.name!r} is not whole {part.dtype} elements")
        if part.shape and dt.nbytes(tuple(part.shape)) != d.size:
            raise ValueError(f"{where}: part {part.name!r} does not have shape {part.shape}")
    sizes = [int(p.data.size) for p in staged.parts]
    if stage.part_sizes(seg, staged.params) != sizes:
        raise ValueError(f"{where}: part sizes {sizes} disagree with part_sizes()")
    if stage.elementwise and sizes != [seg.size]:
        raise ValueError(f"{where}: an elementwise stage needs one part of the tensor's size")
    json.dumps(staged.params, allow_nan=False)  # must go into the index as it is
    out = np.empty(seg.size, np.uint8)
    stage.decode([np.ascontiguousarray(p.data) for p in staged.parts], out, seg, staged.params, ctx)
    if not stage.lossy and not np.array_equal(out, tensor):
        raise ZipmodelError(f"{where}: the lossless stage did not give the tensor back")
    return StagedTensor(stage, staged, xxh3_64(out))


def _stage_record(st: StagedTensor, part_ranges: list[tuple[int, int]]) -> StageRecord:
    parts = tuple(
        PartRecord(p.name, p.dtype, tuple(p.shape), int(p.data.size), first, n)
        for p, (first, n) in zip(st.staged.parts, part_ranges)
    )
    quality = None
    if st.staged.quality is not None:
        quality = {k: _json_number(v) for k, v in st.staged.quality.items()}
    return StageRecord(st.stage.name, st.staged.params, parts, st.check, quality)


def _json_number(v):
    """Quality values go into JSON: infinities (an exact tensor's SNR) become None."""
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if np.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


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
    stages: StageChooser | None = None,
    context: StageContext | None = None,
) -> CompressResult:
    """Write the container for ``data`` (the whole source, uint8) described by ``layout``.

    ``release(offset, size)``, when given, is called for source ranges this call is done with
    (a mapped file drops those pages: resident memory stays at the chunks in flight).

    ``stages`` picks a tensor stage per tensor segment (quantizers, base deltas); a stage
    runs on the whole tensor once, a few tensors ahead of the chunks being coded, and its
    parts are chunked and coded like tensors of their own dtype, then dropped. ``context``
    is what the stages get besides the tensor (the base model of a delta).
    """
    t0 = time.perf_counter()
    threads = resolve_threads(threads)
    policy = policy_for_level(options.level)
    ctx = context if context is not None else StageContext()
    dups = find_duplicates(data, layout, release)
    segments = layout.segments
    chosen: dict[int, TensorStage] = {}
    if stages is not None:
        for i, seg in enumerate(segments):
            if seg.kind == TENSOR and seg.size and i not in dups:
                st = stages(seg)
                if st is not None:
                    chosen[i] = st
        # A repeated tensor (tied weights) is restored from the one it repeats: put that one
        # through a lossy stage only if every copy would have been, so a copy asked to stay
        # exact stays exact (a lossless stage restores every copy exactly anyway).
        for j, i in dups.items():
            if i in chosen and chosen[i].lossy and stages(segments[j]) is None:
                del chosen[i]
    # The header is written first: guess from the stages asked for, and correct it at the
    # end when the output can seek (a stage may decline every tensor).
    guess_flags = FLAG_LOSSY if any(st.lossy for st in chosen.values()) else 0
    guess_minor = STAGES_MINOR if chosen else (1 if dups else 0)
    writer = ContainerWriter(out, minor=guess_minor, flags=guess_flags)
    ranges: list[tuple[int, int]] = []
    records: dict[int, StageRecord] = {}
    chunk_rows: list[tuple] = []
    stream_rows: list[tuple] = []
    seconds: dict[str, float] = {}
    pool = BufferPool(4 * threads * _BATCH_ITEMS + 4)

    def run_stage(i: int) -> StagedTensor | None:
        seg = segments[i]
        t = time.perf_counter()
        res = encode_stage(chosen[i], data[seg.offset : seg.end], seg, ctx)
        if release:
            release(seg.offset, seg.size)
        key = seg.dtype or "verbatim"
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t  # (GIL-held update)
        return res

    def plans() -> Iterator[ChunkPlan]:
        """Chunk plans in container order; stage results computed a few tensors ahead."""
        ahead: dict[int, Future | None] = {}
        try:
            yield from _plans(ahead)
        finally:  # on an error, let stage work in flight end before the source goes away
            for f in ahead.values():
                if f is not None:
                    f.cancel()
            wait([f for f in ahead.values() if f is not None])

    def _plans(ahead: dict[int, Future | None]) -> Iterator[ChunkPlan]:
        order = sorted(chosen)
        nxt = 0
        n = 0
        for i, seg in enumerate(segments):
            if i in dups:
                ranges.append((n, 0))
                continue
            if i not in chosen:
                tensor = seg.kind == TENSOR
                ps = _range_plans(
                    i,
                    seg.offset,
                    seg.size,
                    seg.dtype if tensor else None,
                    seg.shape if tensor else None,
                    options.chunk_size,
                )
                ranges.append((n, len(ps)))
                n += len(ps)
                yield from ps
                continue
            while nxt < len(order) and (order[nxt] == i or len(ahead) < threads):
                k = order[nxt]
                ahead[k] = _pool(threads).submit(run_stage, k) if threads > 1 else None
                nxt += 1
            fut = ahead.pop(i)
            res = fut.result() if fut is not None else run_stage(i)
            del fut
            if res is None:  # declined: coded as it is
                chosen.pop(i)
                ps = _range_plans(i, seg.offset, seg.size, seg.dtype, seg.shape, options.chunk_size)
                ranges.append((n, len(ps)))
                n += len(ps)
                yield from ps
                continue
            ps, part_ranges = _part_plans(i, seg, res.staged.parts, n, options.chunk_size)
            ranges.append((n, len(ps)))
            n += len(ps)
            records[i] = _stage_record(res, part_ranges)
            res = None
            pending = deque(ps)  # the parts live on only in the plans still to be coded
            ps = None
            while pending:
                yield pending.popleft()

    def work(p: ChunkPlan) -> EncodedChunk:
        if p.part is not None:
            rel = p.offset - segments[p.segment].offset
            chunk = p.part[rel : rel + p.size]
        else:
            chunk = data[p.offset : p.offset + p.size]
        return encode_chunk(chunk, p.offset, p.transform, policy, p.layout, pool=pool)

    done = 0
    hasher = _Hasher(data, release)  # SHA-256 of the whole source on its own thread
    if threads <= 1:
        pairs = _windowed_pairs(plans(), work, threads)
    else:  # small chunks in tasks of ~1 MiB (see _run_jobs), a few frames each
        pairs = (
            pair
            for batch, encs in _windowed_pairs(
                _batches(plans(), _BATCH, _BATCH_ITEMS), lambda b: [work(p) for p in b], threads
            )
            for pair in zip(batch, encs)
        )
    try:
        for p, enc in pairs:
            off, size = writer.write_frame([enc.frame])
            pool.release(enc.buffer)
            if p.part is None and release:
                release(p.offset, p.size)
            done += p.size if p.credit is None else p.credit
            chunk_rows.append(
                (
                    p.offset,
                    off,
                    size,
                    p.size,
                    enc.transform_id,
                    len(enc.streams),
                    0,
                    len(stream_rows),
                )
            )
            stream_rows.extend(
                (s.codec, s.context, 0, s.decoded_size, s.encoded_size) for s in enc.streams
            )
            seg = segments[p.segment]
            key = seg.dtype if seg.kind == TENSOR else "verbatim"
            seconds[key] = seconds.get(key, 0.0) + enc.seconds
            if progress:
                progress(done, layout.size)
    finally:
        digest = hasher.finish()
    if progress and done < layout.size:  # tensors a stage stored in no chunks
        progress(layout.size, layout.size)
    lossy = any(chosen[i].lossy for i in records)
    if writer.patchable:
        minor = STAGES_MINOR if records else (1 if dups else 0)
        flags = FLAG_LOSSY if lossy else 0
    else:  # a pipe: the header stays as guessed (a conservative flag, a newer minor)
        minor, flags = guess_minor, guess_flags
    index = Index(
        source={
            "name": source_name,
            "size": layout.size,
            "sha256": digest,
            "format": layout.format,
        },
        segments=[
            SegmentEntry(s, f, n, dups.get(i), records.get(i))
            for i, (s, (f, n)) in enumerate(zip(segments, ranges))
        ],
        chunks=np.array(chunk_rows, CHUNK_DTYPE) if chunk_rows else np.zeros(0, CHUNK_DTYPE),
        streams=np.array(stream_rows, STREAM_DTYPE) if stream_rows else np.zeros(0, STREAM_DTYPE),
        options=options.to_json(),
        metadata=layout.metadata,
        flags=flags,
        writer=f"zipmodel {_version()}",
        format_version=(FORMAT_MAJOR, minor),
        base=ctx.base_info if records and ctx.base_info else None,
    )
    total = writer.finish(index)
    return CompressResult(index, total, time.perf_counter() - t0, seconds)


def _part_plans(
    i: int, seg: Segment, parts: list, first: int, chunk_size: int
) -> tuple[list[ChunkPlan], list[tuple[int, int]]]:
    """Chunk plans for a staged tensor's parts, one after the other, and each part's
    ``(first chunk, n_chunks)`` when its first chunk gets number ``first``."""
    plans: list[ChunkPlan] = []
    ranges = []
    for part in parts:
        more = _range_plans(
            i,
            seg.offset,
            int(part.data.size),
            part.dtype,
            tuple(part.shape) or None,
            chunk_size,
            np.ascontiguousarray(part.data),
        )
        ranges.append((first + len(plans), len(more)))
        plans += [replace(q, credit=0) for q in more]
    if plans:  # the tensor's source bytes are done with its last chunk
        plans[-1] = replace(plans[-1], credit=seg.size)
    return plans, ranges


def _windowed_pairs(items: Iterator, fn: Callable, threads: int) -> Iterator[tuple]:
    """``(item, fn(item))`` in order, for items from an iterator (see :func:`_windowed`)."""
    return _windowed(items, lambda x: (x, fn(x)), threads)


def _decode_chunk_into(reader, i: int, buf: np.ndarray) -> None:
    """Read chunk ``i``'s frame (into this thread's frame buffer) and decode it into ``buf``."""
    row = reader.index.chunks[i]
    fb, fsize = reader.read_frame_into(i)
    if decode_frame_fused(fb, fsize, buf, row):
        return
    offset = int(row["frame_offset"])
    frame = parse_frame_inplace(fb, fsize, path=reader.name, offset=offset)
    decode_chunk(frame, buf, row=row, path=reader.name, offset=offset)


def check_context(index: Index, ctx: StageContext | None, *, path=None) -> None:
    """Refuse to decode a file staged against one base with a context holding another."""
    want = index.base
    got = ctx.base_info if ctx is not None else None
    if want is None or not got:
        return
    if got.get("sha256") != want.get("sha256"):
        raise ZipmodelError(
            f"was compressed against the base {want.get('name') or '?'} with SHA-256 "
            f"{want.get('sha256')}; the base given ({got.get('name') or '?'}) has SHA-256 "
            f"{got.get('sha256')}",
            path=path,
            hint="pass the base model it was compressed against",
        )


class _Job:
    """One unit of decoding work: a chunk (or, for a staged tensor stored in no chunks, just
    the stage). ``run()`` returns ``(destination offset, bytes)`` or ``None``. ``tensor`` is
    set on the last job of a whole-tensor stage: its bytes are ``tensor.result`` once every
    job before it is done."""

    __slots__ = ("chunk", "dest", "last", "run", "segment", "size", "tensor")

    def __init__(self, chunk, run, segment: int, size: int = DEFAULT_CHUNK_SIZE):
        self.chunk = chunk
        self.run = run
        self.segment = segment
        self.size = size  # bytes it decodes (batches small jobs, see _run_jobs)
        self.last = False  # the segment's bytes are complete when this job is
        self.tensor: _StagedDecode | None = None
        self.dest = 0  # with ``tensor``: the source offset of the tensor's bytes


class _StagedDecode:
    """A staged segment decoded by several jobs, on any threads.

    Whole-tensor stages: each chunk decodes into its part, and the job that completes the
    last part runs the stage into ``out``. Elementwise stages: each chunk decodes and runs
    the stage in place, in its slice of ``out`` (or an array of its own when streaming). When
    the whole tensor ends up in one array, the job that completes it checks the checksum the
    index recorded for the decoded tensor.
    """

    def __init__(self, reader, entry: SegmentEntry, stage: TensorStage, ctx, out, whole: bool):
        self.reader = reader
        self.entry = entry
        self.stage = stage
        self.ctx = ctx
        self.out = out
        self.whole = whole
        self.result: np.ndarray | None = None
        self._left = entry.n_chunks
        self._lock = threading.Lock()
        self._parts: list[np.ndarray] | None = None

    def _where(self) -> str:
        return f"tensor {self.entry.segment.name!r} ({self.entry.stage.name})"

    def _decode(self, parts, out, offset: int = 0) -> None:
        rec, seg = self.entry.stage, self.entry.segment
        try:
            self.stage.decode(parts, out, seg, rec.params, self.ctx, offset)
        except ZipmodelError as e:
            raise (e.with_path(self.reader.name) if e.path is None else e) from None
        except Exception as exc:  # hostile params that passed validation, a broken base
            raise FormatError(
                f"{self._where()} cannot be decoded: {exc}", path=self.reader.name
            ) from None

    def chunk(self, part: int, c: int) -> tuple[int, np.ndarray] | None:
        seg = self.entry.segment
        row = self.reader.index.chunks[c]
        rel, size = int(row["src_offset"]) - seg.offset, int(row["raw_size"])
        piece = None
        if self.whole:
            with self._lock:
                if self._parts is None:
                    self._parts = [np.empty(p.size, np.uint8) for p in self.entry.stage.parts]
                buf = self._parts[part][rel : rel + size]
            _decode_chunk_into(self.reader, c, buf)
        else:
            buf = self.out[rel : rel + size] if self.out is not None else np.empty(size, np.uint8)
            _decode_chunk_into(self.reader, c, buf)
            self._decode([buf], buf, rel)
            piece = (rel, buf)
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self.finish()
        return piece

    def finish(self) -> None:
        if self.whole:
            out = self.out if self.out is not None else np.empty(self.entry.segment.size, np.uint8)
            parts = self._parts or [np.empty(0, np.uint8) for _ in self.entry.stage.parts]
            self._decode(parts, out)
            self._parts = None
            self.result = out
        elif self.out is not None:
            self.result = self.out
        if self.result is not None and xxh3_64(self.result) != self.entry.stage.check:
            raise CorruptDataError(
                f"{self._where()}: decoded tensor does not match its recorded checksum",
                path=self.reader.name,
            )


def segment_jobs(
    reader,
    i: int,
    out: np.ndarray | None = None,
    *,
    context: StageContext | None = None,
    stages: dict[str, TensorStage] | None = None,
) -> list[_Job]:
    """The jobs that decode segment ``i`` (into ``out``, its size, when given).

    A duplicate segment decodes the chunks of the segment it repeats. Each job's result is
    ``(source offset, bytes)`` of a piece, or ``None`` (see :class:`_Job`).
    """
    idx = reader.index
    e = idx.segments[i]
    ref = e if e.dup_of is None else idx.segments[e.dup_of]
    dest0 = e.segment.offset
    rows = idx.chunks
    rec = ref.stage
    if rec is None:
        jobs = []
        for c in range(ref.first_chunk, ref.first_chunk + ref.n_chunks):
            rel, size = int(rows[c]["src_offset"]) - ref.segment.offset, int(rows[c]["raw_size"])

            def run(c=c, rel=rel, size=size):
                buf = out[rel : rel + size] if out is not None else np.empty(size, np.uint8)
                _decode_chunk_into(reader, c, buf)
                return dest0 + rel, buf

            jobs.append(_Job(c, run, i, size))
        if jobs:
            jobs[-1].last = True
        return jobs
    cache = stages if stages is not None else {}
    stage = cache.get(rec.name)
    if stage is None:
        cls = get_stage(rec.name)
        if cls is None:  # validation already refused it; a registry changed since
            raise FormatError(f"unknown tensor stage {rec.name!r}", path=reader.name)
        stage = cache[rec.name] = cls()
    ctx = context if context is not None else StageContext()
    # Elementwise stages decode chunk by chunk; a lossy one only where the whole tensor ends
    # up in ``out``, so its checksum can be checked (streamed, it is decoded whole).
    whole = not stage.elementwise or (stage.lossy and out is None)
    t = _StagedDecode(reader, ref, stage, ctx, out, whole)
    jobs = []
    for k, p in enumerate(rec.parts):
        for c in range(p.first_chunk, p.first_chunk + p.n_chunks):

            def run(k=k, c=c):
                piece = t.chunk(k, c)
                return None if piece is None else (dest0 + piece[0], piece[1])

            jobs.append(_Job(c, run, i, int(rows[c]["raw_size"])))
    if not jobs:  # a stage that stores nothing (e.g. identical to the base)
        jobs.append(_Job(None, lambda: t.finish(), i))
    jobs[-1].last = True
    if whole:
        jobs[-1].tensor = t
        jobs[-1].dest = dest0
    return jobs


def _run_jobs(jobs, threads: int) -> Iterator[tuple[_Job, tuple[int, np.ndarray] | None]]:
    """Run ``jobs`` on ``threads`` threads; yield ``(job, result)`` in order. A whole-tensor
    stage's last job yields the decoded tensor (complete by then: every job before it is).

    On several threads, consecutive small jobs run as one task of about ``_BATCH`` bytes: a
    task costs ~25 us of hand-offs between threads, and most tensors are far smaller than a
    chunk (minilm: 139 chunks, 96 of them under 64 KiB)."""
    if threads <= 1:
        pairs = ((job, job.run()) for job in jobs)
    else:
        pairs = (
            pair
            for batch, results in _windowed_pairs(
                _batches(jobs, _BATCH), lambda b: [j.run() for j in b], threads
            )
            for pair in zip(batch, results)
        )
    for job, res in pairs:
        if job.tensor is not None:
            if job.tensor.result is None:
                raise RuntimeError("a staged tensor was not finished by its jobs")
            res = (job.dest, job.tensor.result)
        yield job, res


_BATCH = 1 << 20
_BATCH_ITEMS = 8  # compress: each frame in flight holds a pooled buffer


def _batches(items, target: int, max_items: int = 1 << 30) -> Iterator[list]:
    """Consecutive items (with a ``size`` in bytes) grouped until a group holds at least
    ``target`` bytes or ``max_items`` items."""
    batch: list = []
    total = 0
    for item in items:
        batch.append(item)
        total += item.size
        if total >= target or len(batch) >= max_items:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


def iter_source(
    reader,
    *,
    threads: int = 0,
    out: np.ndarray | None = None,
    context: StageContext | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode the whole source; yield ``(source offset, bytes)`` pieces in order.

    With ``out`` (the source's size) every piece is decoded in place into it. Staged tensors
    come back decoded (dequantized for a lossy stage), as the original dtype and shape.
    """
    check_context(reader.index, context, path=reader.name)
    threads = resolve_threads(threads)
    cache: dict[str, TensorStage] = {}

    def jobs() -> Iterator[_Job]:
        for i, e in enumerate(reader.index.segments):
            seg = e.segment
            dest = out[seg.offset : seg.end] if out is not None else None
            yield from segment_jobs(reader, i, dest, context=context, stages=cache)

    for _job, res in _run_jobs(jobs(), threads):
        if res is not None:
            yield res


def iter_segments(
    reader,
    work: list[tuple[int, np.ndarray]],
    *,
    threads: int = 0,
    context: StageContext | None = None,
) -> Iterator[int]:
    """Decode each ``(segment, out)`` of ``work`` into its ``out`` (uint8, the segment's size)
    on ``threads`` threads; yield each segment index once its bytes are complete, in order.

    One window over many destinations: chunks of different tensors decode side by side.
    """
    check_context(reader.index, context, path=reader.name)
    threads = resolve_threads(threads)
    cache: dict[str, TensorStage] = {}

    def jobs() -> Iterator[_Job]:
        for i, buf in work:
            js = segment_jobs(reader, i, buf, context=context, stages=cache)
            if not js:  # an empty segment: nothing to decode
                js = [_Job(None, lambda: None, i)]
                js[0].last = True
            yield from js

    for job, _res in _run_jobs(jobs(), threads):
        if job.last:
            yield job.segment


def decode_segment(
    reader,
    i: int,
    out: np.ndarray | None = None,
    *,
    threads: int = 0,
    context: StageContext | None = None,
) -> np.ndarray:
    """The bytes of segment ``i`` (decoding only its frames), in ``out`` or a new array."""
    e = reader.index.segments[i]
    if out is None:
        out = np.empty(e.segment.size, np.uint8)
    for _ in iter_segments(reader, [(i, out)], threads=threads, context=context):
        pass
    return out


def _version() -> str:
    from . import __version__

    return __version__
