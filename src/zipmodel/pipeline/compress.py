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
        if dt is None or dt.unit_bytes == 0 or d.size % dt.unit_bytes:
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

    The steps: find repeated segments, :func:`select_stages`, write the header (guessed from
    the stages, see :func:`header_guess`), code every chunk in order
    (:meth:`_LayoutCompression.code_chunks`), then write the index (:meth:`_LayoutCompression.index`).
    """
    t0 = time.perf_counter()
    threads = resolve_threads(threads)
    policy = policy_for_level(options.level)  # a bad level fails before any output
    dups = find_duplicates(data, layout, release)
    chosen = select_stages(layout.segments, dups, stages)
    guess_minor, guess_flags = header_guess(chosen, dups)
    writer = ContainerWriter(out, minor=guess_minor, flags=guess_flags)
    job = _LayoutCompression(data, layout, dups, chosen, options, policy, threads, release, context)
    digest = job.code_chunks(writer, progress)
    if writer.patchable:
        minor, flags = job.header()
    else:  # a pipe: the header stays as guessed (a conservative flag, a newer minor)
        minor, flags = guess_minor, guess_flags
    index = job.index(source_name, digest, minor, flags)
    total = writer.finish(index)
    return CompressResult(index, total, time.perf_counter() - t0, job.seconds)


def select_stages(
    segments: list[Segment], dups: dict[int, int], stages: StageChooser | None
) -> dict[int, TensorStage]:
    """``{segment index: stage}`` for the tensors ``stages`` picks (none for repeats)."""
    chosen: dict[int, TensorStage] = {}
    if stages is None:
        return chosen
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
    return chosen


def header_guess(chosen: dict[int, TensorStage], dups: dict[int, int]) -> tuple[int, int]:
    """``(format minor, flags)`` for the header, written first: guessed from the stages asked
    for, and corrected at the end when the output can seek (a stage may decline every
    tensor)."""
    flags = FLAG_LOSSY if any(st.lossy for st in chosen.values()) else 0
    minor = STAGES_MINOR if chosen else (1 if dups else 0)
    return minor, flags


class _LayoutCompression:
    """The state of one :func:`compress_layout` call between its header and its index: stage
    results computed ahead, the chunk plans, and the rows of the index being built."""

    def __init__(self, data, layout, dups, chosen, options, policy, threads, release, context):
        self.data, self.layout, self.segments = data, layout, layout.segments
        self.dups, self.chosen, self.options = dups, chosen, options
        self.threads, self.release = threads, release
        self.ctx = context if context is not None else StageContext()
        self.policy = policy
        self.ranges: list[tuple[int, int]] = []
        self.records: dict[int, StageRecord] = {}
        self.chunk_rows: list[tuple] = []
        self.stream_rows: list[tuple] = []
        self.seconds: dict[str, float] = {}
        self.pool = BufferPool(4 * threads * BATCH_ITEMS + 4)

    # -- stages and plans ------------------------------------------------------------------
    def run_stage(self, i: int) -> StagedTensor | None:
        seg = self.segments[i]
        t = time.perf_counter()
        res = encode_stage(self.chosen[i], self.data[seg.offset : seg.end], seg, self.ctx)
        if self.release:
            self.release(seg.offset, seg.size)
        key = seg.dtype or "verbatim"
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t  # (GIL held)
        return res

    def plans(self) -> Iterator[ChunkPlan]:
        """Chunk plans in container order; stage results computed a few tensors ahead."""
        ahead: dict[int, Future | None] = {}
        try:
            yield from self._plans(ahead)
        finally:  # on an error, let stage work in flight end before the source goes away
            for f in ahead.values():
                if f is not None:
                    f.cancel()
            wait([f for f in ahead.values() if f is not None])

    def _plans(self, ahead: dict[int, Future | None]) -> Iterator[ChunkPlan]:
        chosen, ranges, threads = self.chosen, self.ranges, self.threads
        chunk_size = self.options.chunk_size
        order = sorted(chosen)
        nxt = 0
        n = 0
        for i, seg in enumerate(self.segments):
            if i in self.dups:
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
                    chunk_size,
                )
                ranges.append((n, len(ps)))
                n += len(ps)
                yield from ps
                continue
            while nxt < len(order) and (order[nxt] == i or len(ahead) < threads):
                k = order[nxt]
                ahead[k] = worker_pool(threads).submit(self.run_stage, k) if threads > 1 else None
                nxt += 1
            fut = ahead.pop(i)
            res = fut.result() if fut is not None else self.run_stage(i)
            del fut
            if res is None:  # declined: coded as it is
                chosen.pop(i)
                ps = range_plans(i, seg.offset, seg.size, seg.dtype, seg.shape, chunk_size)
                ranges.append((n, len(ps)))
                n += len(ps)
                yield from ps
                continue
            ps, part_ranges = part_plans(i, seg, res.staged.parts, n, chunk_size)
            ranges.append((n, len(ps)))
            n += len(ps)
            self.records[i] = _stage_record(res, part_ranges)
            res = None
            pending = deque(ps)  # the parts live on only in the plans still to be coded
            ps = None
            while pending:
                yield pending.popleft()

    def work(self, p: ChunkPlan) -> EncodedChunk:
        if p.part is not None:
            rel = p.offset - self.segments[p.segment].offset
            chunk = p.part[rel : rel + p.size]
        else:
            chunk = self.data[p.offset : p.offset + p.size]
        return encode_chunk(chunk, p.offset, p.transform, self.policy, p.layout, pool=self.pool)

    # -- the chunk loop --------------------------------------------------------------------
    def code_chunks(self, writer: ContainerWriter, progress: Progress | None) -> str:
        """Code and write every chunk in order; returns the source's SHA-256."""
        threads, release, size = self.threads, self.release, self.layout.size
        done = 0
        hasher = _Hasher(self.data, release)  # SHA-256 of the whole source on its own thread
        if threads <= 1:
            pairs = windowed_pairs(self.plans(), self.work, threads)
        else:  # small chunks in tasks of ~1 MiB (see run_jobs), a few frames each
            pairs = (
                pair
                for batch, encs in windowed_pairs(
                    batches(self.plans(), BATCH_BYTES, BATCH_ITEMS),
                    lambda b: [self.work(p) for p in b],
                    threads,
                )
                for pair in zip(batch, encs)
            )
        try:
            for p, enc in pairs:
                off, fsize = writer.write_frame([enc.frame])
                self.pool.release(enc.buffer)
                if p.part is None and release:
                    release(p.offset, p.size)
                done += p.size if p.credit is None else p.credit
                self._add_rows(p, enc, off, fsize)
                if progress:
                    progress(done, size)
        finally:
            digest = hasher.finish()
        if progress and done < size:  # tensors a stage stored in no chunks
            progress(size, size)
        return digest

    def _add_rows(self, p: ChunkPlan, enc: EncodedChunk, off: int, fsize: int) -> None:
        self.chunk_rows.append(
            (
                p.offset,
                off,
                fsize,
                p.size,
                enc.transform_id,
                len(enc.streams),
                0,
                len(self.stream_rows),
            )
        )
        self.stream_rows.extend(
            (s.codec, s.context, 0, s.decoded_size, s.encoded_size) for s in enc.streams
        )
        seg = self.segments[p.segment]
        key = seg.dtype if seg.kind == TENSOR else "verbatim"
        self.seconds[key] = self.seconds.get(key, 0.0) + enc.seconds

    # -- finalisation ----------------------------------------------------------------------
    def header(self) -> tuple[int, int]:
        """``(format minor, flags)`` as they turned out (stages may have declined)."""
        lossy = any(self.chosen[i].lossy for i in self.records)
        minor = STAGES_MINOR if self.records else (1 if self.dups else 0)
        return minor, FLAG_LOSSY if lossy else 0

    def index(self, source_name: str, digest: str, minor: int, flags: int) -> Index:
        layout, ctx = self.layout, self.ctx
        chunk_rows, stream_rows = self.chunk_rows, self.stream_rows
        return Index(
            source={
                "name": source_name,
                "size": layout.size,
                "sha256": digest,
                "format": layout.format,
            },
            segments=[
                SegmentEntry(s, f, n, self.dups.get(i), self.records.get(i))
                for i, (s, (f, n)) in enumerate(zip(self.segments, self.ranges))
            ],
            chunks=np.array(chunk_rows, CHUNK_DTYPE) if chunk_rows else np.zeros(0, CHUNK_DTYPE),
            streams=(
                np.array(stream_rows, STREAM_DTYPE) if stream_rows else np.zeros(0, STREAM_DTYPE)
            ),
            options=self.options.to_json(),
            metadata=layout.metadata,
            flags=flags,
            writer=f"zipmodel {_version()}",
            format_version=(FORMAT_MAJOR, minor),
            base=ctx.base_info if self.records and ctx.base_info else None,
        )


def _version() -> str:
    from .. import __version__

    return __version__
