"""Reading a container back: per-segment jobs, whole-source and per-tensor decoding."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

import numpy as np

from .._checksum import xxh3_64
from ..container.index import Index, SegmentEntry
from ..errors import CorruptDataError, FormatError, ZipmodelError
from ..stages import get_stage
from ..stages.tensor import StageContext, TensorStage
from ..threads import BATCH_BYTES, batches, resolve_threads, windowed_pairs
from .chunk import decode_chunk_into
from .plan import DEFAULT_CHUNK_SIZE


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


class DecodeJob:
    """One unit of decoding work: a chunk (or, for a staged tensor stored in no chunks, just
    the stage). ``run()`` returns ``(destination offset, bytes)`` or ``None``. ``tensor`` is
    set on the last job of a whole-tensor stage: its bytes are ``tensor.result`` once every
    job before it is done."""

    __slots__ = ("chunk", "dest", "last", "run", "segment", "size", "tensor")

    def __init__(self, chunk, run, segment: int, size: int = DEFAULT_CHUNK_SIZE):
        self.chunk = chunk
        self.run = run
        self.segment = segment
        self.size = size  # bytes it decodes (batches small jobs, see run_jobs)
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
            decode_chunk_into(self.reader, c, buf)
        else:
            buf = self.out[rel : rel + size] if self.out is not None else np.empty(size, np.uint8)
            decode_chunk_into(self.reader, c, buf)
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
) -> list[DecodeJob]:
    """The jobs that decode segment ``i`` (into ``out``, its size, when given).

    A duplicate segment decodes the chunks of the segment it repeats. Each job's result is
    ``(source offset, bytes)`` of a piece, or ``None`` (see :class:`DecodeJob`).
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
                decode_chunk_into(reader, c, buf)
                return dest0 + rel, buf

            jobs.append(DecodeJob(c, run, i, size))
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

            jobs.append(DecodeJob(c, run, i, int(rows[c]["raw_size"])))
    if not jobs:  # a stage that stores nothing (e.g. identical to the base)
        jobs.append(DecodeJob(None, lambda: t.finish(), i))
    jobs[-1].last = True
    if whole:
        jobs[-1].tensor = t
        jobs[-1].dest = dest0
    return jobs


def run_jobs(jobs, threads: int) -> Iterator[tuple[DecodeJob, tuple[int, np.ndarray] | None]]:
    """Run ``jobs`` on ``threads`` threads; yield ``(job, result)`` in order. A whole-tensor
    stage's last job yields the decoded tensor (complete by then: every job before it is).

    On several threads, consecutive small jobs run as one task of about ``BATCH_BYTES`` bytes: a
    task costs ~25 us of hand-offs between threads, and most tensors are far smaller than a
    chunk (minilm: 139 chunks, 96 of them under 64 KiB)."""
    if threads <= 1:
        pairs = ((job, job.run()) for job in jobs)
    else:
        pairs = (
            pair
            for batch, results in windowed_pairs(
                batches(jobs, BATCH_BYTES), lambda b: [j.run() for j in b], threads
            )
            for pair in zip(batch, results)
        )
    for job, res in pairs:
        if job.tensor is not None:
            if job.tensor.result is None:
                raise RuntimeError("a staged tensor was not finished by its jobs")
            res = (job.dest, job.tensor.result)
        yield job, res


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

    def jobs() -> Iterator[DecodeJob]:
        for i, e in enumerate(reader.index.segments):
            seg = e.segment
            dest = out[seg.offset : seg.end] if out is not None else None
            yield from segment_jobs(reader, i, dest, context=context, stages=cache)

    for _job, res in run_jobs(jobs(), threads):
        if res is not None:
            yield res


def iter_segments(
    reader,
    work: Iterable[tuple[int, np.ndarray]],
    *,
    threads: int = 0,
    context: StageContext | None = None,
) -> Iterator[int]:
    """Decode each ``(segment, out)`` of ``work`` into its ``out`` (uint8, the segment's size)
    on ``threads`` threads; yield each segment index once its bytes are complete, in order.
    ``work`` is consumed as the decode window moves (a generator may make each ``out`` then).

    One window over many destinations: chunks of different tensors decode side by side.
    """
    check_context(reader.index, context, path=reader.name)
    threads = resolve_threads(threads)
    cache: dict[str, TensorStage] = {}

    def jobs() -> Iterator[DecodeJob]:
        for i, buf in work:
            js = segment_jobs(reader, i, buf, context=context, stages=cache)
            if not js:  # an empty segment: nothing to decode
                js = [DecodeJob(None, lambda: None, i)]
                js[0].last = True
            yield from js

    for job, _res in run_jobs(jobs(), threads):
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
