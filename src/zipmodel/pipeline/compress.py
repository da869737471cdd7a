"""Writing a container: stages, chunks and frames in source order, then the index."""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from .._checksum import xxh3_64
from ..codecs.select import policy_for_level
from ..container.format import (
    CHUNK_DTYPE,
    FLAG_LOSSY,
    FORMAT_MAJOR,
    STREAM_DTYPE,
)
from ..container.index import STAGES_MINOR, Index, PartRecord, SegmentEntry, StageRecord
from ..container.writer import ContainerWriter
from ..dtypes import get_dtype
from ..errors import ZipmodelError
from ..readers.base import TENSOR, Layout, Segment
from ..stages.tensor import StageContext, Staged, TensorStage
from ..threads import (
    BATCH_BYTES,
    BATCH_ITEMS,
    batches,
    resolve_threads,
    windowed_pairs,
    worker_pool,
)
from .chunk import BufferPool, EncodedChunk, encode_chunk
from .plan import ChunkPlan, CompressOptions, find_duplicates, part_plans, range_plans

Progress = Callable[[int, int], None]  # called with (source bytes done, source bytes in all)


# Picks the tensor stage for a tensor segment (None: code it losslessly as it is).
StageChooser = Callable[[Segment], "TensorStage | None"]


@dataclass
class CompressResult:
    index: Index
    output_size: int
    seconds: float
    chunk_seconds: dict[str, float] = field(default_factory=dict)  # worker time per dtype


class _Hasher:
    """SHA-256 of a whole source, computed on a thread of its own while chunks are coded.

    hashlib releases the GIL, so on one encoding thread the hash (a good part of the work,
    benches/results-design-notes.md) overlaps coding instead of following it.
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

    The checksum recorded is of the bytes decoding will give: the parts are decoded here
    unless the stage handed those bytes back (``Staged.restored``, lossy stages), and a
    lossless stage that does not give the tensor back is caught before anything is written.
    ``None`` when the stage declines the tensor.
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
    out = staged.restored
    if out is None:
        out = np.empty(seg.size, np.uint8)
        parts = [np.ascontiguousarray(p.data) for p in staged.parts]
        stage.decode(parts, out, seg, staged.params, ctx)
    elif not (out.dtype == np.uint8 and out.shape == (seg.size,)):
        raise ValueError(f"{where}: restored bytes are not the tensor's {seg.size} bytes")
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
    pool = BufferPool(4 * threads * BATCH_ITEMS + 4)

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
                ps = range_plans(
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
                ahead[k] = worker_pool(threads).submit(run_stage, k) if threads > 1 else None
                nxt += 1
            fut = ahead.pop(i)
            res = fut.result() if fut is not None else run_stage(i)
            del fut
            if res is None:  # declined: coded as it is
                chosen.pop(i)
                ps = range_plans(i, seg.offset, seg.size, seg.dtype, seg.shape, options.chunk_size)
                ranges.append((n, len(ps)))
                n += len(ps)
                yield from ps
                continue
            ps, part_ranges = part_plans(i, seg, res.staged.parts, n, options.chunk_size)
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
        pairs = windowed_pairs(plans(), work, threads)
    else:  # small chunks in tasks of ~1 MiB (see run_jobs), a few frames each
        pairs = (
            pair
            for batch, encs in windowed_pairs(
                batches(plans(), BATCH_BYTES, BATCH_ITEMS), lambda b: [work(p) for p in b], threads
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


def _version() -> str:
    from .. import __version__

    return __version__
