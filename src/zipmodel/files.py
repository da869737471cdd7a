"""One file at a time: compress and decompress files or bytes, verify a container.

These are the functions :mod:`zipmodel.api` exports (``compress_file``, ``decompress_file``,
``compress_bytes``, ``decompress_bytes``, ``verify_file``) and their reports; they sit below
the API so that folders, loading and the Hub can use them (the import rule of
docs/concepts.md: every import runs downward).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._io import FileMeta, MemoryOutput, Source, atomic_output, finish_bytes, new_bytes
from .basemodel import BaseModel, decode_context, delta_chooser, using_base
from .container.reader import ContainerReader
from .dtypes import DType, dtype_from_hint
from .errors import VerifyMismatchError, ZipmodelError
from .formats import SUFFIX
from .options import LossyOptions
from .pipeline import (
    DEFAULT_CHUNK_SIZE,
    CompressOptions,
    StageChooser,
    check_context,
    compress_layout,
    iter_source,
    resolve_threads,
)
from .readers import read_layout
from .readers.base import Layout
from .stages.rules import lossy_chooser
from .stages.tensor import StageContext
from .summary import Summary, summarize

__all__ = [
    "SUFFIX",
    "CompressReport",
    "DecompressReport",
    "Progress",
    "VerifyReport",
    "compress_bytes",
    "compress_file",
    "decompress_bytes",
    "decompress_file",
    "default_output",
    "verify_file",
]

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass
class CompressReport:
    """What one compression did; ``summary`` holds the per-dtype and per-tensor sizes."""

    input: str
    output: str
    summary: Summary
    seconds: float
    dtype_seconds: dict[str, float] = field(default_factory=dict)  # summed worker time
    note: str = ""

    @property
    def input_bytes(self) -> int:
        return self.summary.original_bytes

    @property
    def output_bytes(self) -> int:
        return self.summary.container_bytes

    @property
    def ratio(self) -> float:
        return self.summary.ratio

    @property
    def mb_per_s(self) -> float:
        return self.input_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self, *, tensors: bool = False) -> dict[str, Any]:
        d = {
            "input": self.input,
            "output": self.output,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "ratio": round(self.ratio, 6),
            "seconds": round(self.seconds, 4),
            "mb_per_s": round(self.mb_per_s, 2),
            "lossy": self.summary.lossy,
            "summary": self.summary.to_json(tensors=tensors or self.summary.lossy),
        }
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class DecompressReport:
    input: str
    output: str
    input_bytes: int
    output_bytes: int
    seconds: float
    sha256_checked: bool
    lossy: bool = False  # dequantized tensors: the SHA-256 of the original cannot match

    @property
    def mb_per_s(self) -> float:
        return self.output_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "seconds": round(self.seconds, 4),
            "mb_per_s": round(self.mb_per_s, 2),
            "sha256_checked": self.sha256_checked,
            "lossy": self.lossy,
        }


@dataclass
class VerifyReport:
    path: str
    source_bytes: int
    sha256: str
    seconds: float
    against: str | None = None
    # A lossy container: every chunk and every staged tensor's checksum held, but the
    # restored file (dequantized tensors) cannot equal the original. ``sha256`` is then the
    # original's as recorded, and ``restored_sha256`` that of the bytes decompress writes.
    lossy: bool = False
    restored_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {
            "path": self.path,
            "ok": True,
            "lossy": self.lossy,
            "source_bytes": self.source_bytes,
            "sha256": self.sha256,
            "against": self.against,
            "seconds": round(self.seconds, 4),
        }
        if self.lossy:
            d["restored_sha256"] = self.restored_sha256
        return d


def _options(level: str, chunk_size: int) -> CompressOptions:
    return CompressOptions(level=level, chunk_size=chunk_size)


def _hint(dtype: str | DType | None) -> DType | None:
    if dtype is None or isinstance(dtype, DType):
        return dtype
    return dtype_from_hint(dtype)


def default_output(path: str | os.PathLike, *, decompress: bool) -> Path:
    """``X`` → ``X.zm`` and ``X.zm`` → ``X``."""
    p = Path(path)
    if not decompress:
        return p.with_name(p.name + SUFFIX)
    if p.suffix != SUFFIX or p.name == SUFFIX:
        raise ZipmodelError(f"does not end in {SUFFIX}; name the output with -o", path=p)
    return p.with_name(p.name[: -len(SUFFIX)])


def lossy_stages(
    lossy: str | LossyOptions | None = None, *, layout: Layout | None = None, **lossy_options: Any
) -> StageChooser | None:
    """Deprecated: :func:`zipmodel.stages.rules.lossy_chooser` of
    ``LossyOptions.of(lossy, **lossy_options)`` (kept for callers of the old keywords)."""
    return lossy_chooser(LossyOptions.of(lossy, **lossy_options), layout)


def compress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike | BinaryIO | None = None,
    *,
    level: str = "default",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dtype: str | DType | None = None,
    format: str = "auto",
    threads: int = 0,
    force: bool = False,
    progress: Progress | None = None,
    name: str | None = None,
    lossy: str | LossyOptions | None = None,
    stages: StageChooser | None = None,
    context: StageContext | None = None,
    base: str | os.PathLike | BaseModel | None = None,
    meta: bool | FileMeta = True,
    **lossy_options: Any,
) -> CompressReport:
    """Compress the file ``src`` into the container ``dst`` (default ``src + ".zm"``).

    Shorthand for: map the source, read its layout (``format``: ``auto`` detects safetensors and
    CTranslate2; ``dtype`` describes files in no known format, or any file with ``format="raw"``,
    as one tensor of that type), code every chunk on ``threads`` threads (0 = all cores) and write
    the container atomically. ``src`` is never modified; without ``force`` an existing
    ``dst`` is an error. The output's bytes depend on the data and the options, not on
    ``threads``. ``dst`` may also be a writable binary file object (written front to back).
    ``name`` is the source name the index records (default: ``src``'s file name). With
    ``meta`` the container file gets ``src``'s permission bits and times, as zstd does (a
    private 0600 checkpoint stays private); ``meta=False`` (a spooled pipe) gives it the
    usual permissions, a :class:`~zipmodel._io.FileMeta` those.

    Lossy compression is opt-in: ``lossy`` is a
    :class:`~zipmodel.options.LossyOptions`, or names a preset (``bf16``, ``fp8``,
    ``int8``, ``int4``, ``nf4``) with ``lossy_options`` its other fields as keywords
    (``group_size`` for int4/nf4, ``per_tensor`` scales for fp8, ``asymmetric`` int4,
    ``mantissa_bits`` rounds float mantissas; ``keep``/``only`` are name globs that exclude /
    restrict tensors; docs/lossy.md has the default rules). The report's summary then holds
    every staged tensor's measured error. ``stages`` picks a
    tensor stage per tensor directly (instead of ``lossy``), ``context`` is what stages get
    besides the tensor (a base model).

    ``base`` (a file, a ``.zm`` or a folder; docs/delta.md) stores each tensor the base also
    has (same name, dtype and shape) as whichever codes smallest: itself, its XOR or its
    difference with the base's, or nothing when equal. The container records the base's
    SHA-256; decoding it needs that base.
    """
    options = _options(level, chunk_size)
    lossy_opts = LossyOptions.of(lossy, **lossy_options)  # checked before any work
    chooser = _check_stage_arguments(lossy_opts, stages, context, base)
    dst = _output_for(src, dst)
    with Source.open(src) as source, using_base(base, rel=Path(src).name, threads=threads) as bm:
        layout = read_layout(source.data, format=format, dtype=_hint(dtype), path=str(src))
        chooser, context, alloc = _stages_for(
            source, layout, lossy_opts, chooser, stages, context, bm, level, chunk_size, threads
        )

        def run(out: BinaryIO):
            return compress_layout(
                source.data,
                layout,
                out,
                source_name=Path(src).name if name is None else name,
                options=options,
                threads=threads,
                progress=progress,
                release=source.release,
                stages=chooser,
                context=context,
            )

        if alloc is not None:  # measuring passes: the budget moves by what they missed
            for _ in range(_Allocated.PASSES):
                if not alloc.correct(run(_Discard())):
                    break
        res, out_name = _write_output(run, src, dst, force=force, meta=meta)
    summary = summarize(res.index, res.output_size)
    return CompressReport(str(src), out_name, summary, res.seconds, res.chunk_seconds, layout.note)


def _check_stage_arguments(lossy_opts: LossyOptions, stages, context, base):
    """The stage arguments' rules (one of lossy/stages; a base alone); the lossy chooser
    without the source's names (None for a targeted size, which is allocated later)."""
    targeted = lossy_opts.targeted
    chooser = None if targeted else lossy_chooser(lossy_opts)
    if (chooser is not None or targeted) and stages is not None:
        raise ValueError("give lossy= or stages=, not both")
    if targeted and base is not None:
        raise ValueError("base= cannot be combined with a target size or bits")
    chooser = chooser or stages
    if base is not None and (chooser is not None or context is not None):
        raise ValueError("base= cannot be combined with lossy=, stages= or context=")
    return chooser


def _output_for(src, dst):
    """``dst`` as a path (default ``src + ".zm"``), or the file object given; never ``src``."""
    if _is_fileobj(dst):
        return dst
    dst = Path(dst) if dst is not None else default_output(src, decompress=False)
    if dst.exists() and Path(src).exists() and os.path.samefile(src, dst):
        raise ZipmodelError("output and input are the same file", path=src)
    return dst


def _stages_for(
    source, layout, lossy_opts, chooser, stages, context, bm, level, chunk_size, threads
):
    """Per tensor: the lossy rules over the layout's names, the allocation of a target
    size, or (with a base) standalone, xor, sub or same, as measured. Returns
    ``(chooser, context, allocation or None)``."""
    if chooser is not None and stages is None:  # rules that see the state-dict names
        chooser = lossy_chooser(lossy_opts, layout)
    alloc = (
        _allocation(source.data, layout, lossy_opts, chunk_size) if lossy_opts.targeted else None
    )
    if alloc is not None:
        chooser = alloc.chooser
    if bm is not None:
        chooser, context = delta_chooser(
            source.data, layout.segments, bm, level=level, chunk_size=chunk_size, threads=threads
        )
    return chooser, context, alloc


def _write_output(run, src, dst, *, force: bool, meta):
    """Run the compression into ``dst``: a file object as it is, a path atomically (with
    ``src``'s mode and times as ``meta`` says); returns ``(result, output name)``."""
    if _is_fileobj(dst):
        return run(dst), str(getattr(dst, "name", "<stream>"))
    with atomic_output(dst, force=force, meta=_meta(meta, src)) as (fd, _tmp):
        with os.fdopen(fd, "wb", closefd=False, buffering=1 << 20) as out:
            res = run(out)
    return res, str(dst)


class _Discard:
    """A sink that counts what it is given (the allocation's measuring pass)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, b) -> int:
        self.n += len(memoryview(b).cast("B"))
        return len(b)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        pass


class _Allocated:
    """``--target-bits`` / ``--target-size`` on one file: the selected tensors' ECSQ curves,
    the steps for the budget, and the one correction from a measured pass."""

    TOLERANCE = 0.01  # bits per quantized weight: closer than this, no correction
    PASSES = 2  # at most this many measuring passes (one was 0.023 bits off on a tiny model)

    def __init__(self, alloc, goal_bits: float, whole_file: bool, layout: Layout, opts):
        from .stages.rules import stage_chooser

        self.alloc, self.goal, self.whole_file = alloc, goal_bits, whole_file
        self.budget = goal_bits
        self.chooser = stage_chooser(
            lambda seg: alloc.stage_for(seg.name or ""),
            keep=opts.keep,
            only=opts.only,
            layout=layout,
        )

    def fit(self, budget: float) -> None:
        from .stages.allocate import BudgetError

        n = self.alloc.elements
        try:
            self.alloc.fit(budget)
        except BudgetError:
            lo, _ = self.alloc.reachable_bits_per_weight()
            what = (
                f"a container of {self.goal / 8:,.0f} bytes"
                if self.whole_file
                else f"{self.goal / n:.3f} bits per weight"
            )
            raise ZipmodelError(
                f"the target ({what}) is below what ECSQ reaches on the {len(self.alloc.curves)} "
                f"tensors it may quantize ({lo:.3f} bits per weight at the coarsest step)",
                hint="raise --target-bits / --target-size, or --keep fewer tensors exact",
            ) from None
        self.budget = budget

    def correct(self, res) -> bool:
        """Move the budget by what the measured pass ``res`` missed the goal by; whether it
        did."""
        s = summarize(res.index, res.output_size)
        names = {c.name for c in self.alloc.curves}
        staged = sum(t.compressed_bytes for t in s.tensors if t.stage and t.name in names)
        got = 8.0 * (s.container_bytes if self.whole_file else staged)
        if abs(got - self.goal) <= self.TOLERANCE * self.alloc.elements:
            return False
        self.fit(self.alloc.estimate_bits + (self.goal - got))
        return True


def _allocation(data: np.ndarray, layout: Layout, opts: LossyOptions, chunk_size: int):
    """The ECSQ allocation for ``opts.target_bits`` / ``target_size`` over the tensors the
    rules select (``None`` when they select none)."""
    from .stages.allocate import Allocation, curves_of
    from .stages.quant_common import as_values, numel
    from .stages.rules import stage_chooser

    sel = stage_chooser(lambda seg: True, keep=opts.keep, only=opts.only, layout=layout)  # type: ignore[arg-type,return-value]
    segs = [s for s in layout.segments if sel(s) is not None]
    if not segs:
        return None

    def values():
        for s in segs:
            raw = data[s.offset : s.offset + s.size]
            with np.errstate(invalid="ignore"):
                v = as_values(raw, s.dtype or "")
            # shaped as the segment: the allocator's ECSQ row groups need the rows
            shape = tuple(s.shape or ())
            yield (
                s.name or "",
                v.reshape(shape) if len(shape) >= 2 and v.size == numel(shape) else v,
            )

    alloc = Allocation(curves_of(values(), chunk_elements=chunk_size))
    if not alloc.curves:
        return None
    n = alloc.elements
    if opts.target_bits is not None:
        a = _Allocated(alloc, float(opts.target_bits) * n, False, layout, opts)
        a.fit(a.goal)
    else:
        a = _Allocated(alloc, 8.0 * float(opts.target_size or 0), True, layout, opts)
        # first guess: everything else stored as it is (the measured pass corrects it)
        names = {c.name for c in alloc.curves}
        rest = sum(
            s.size for s in layout.segments if (s.name or "") not in names or s.kind != "tensor"
        )
        a.fit(a.goal - 8.0 * rest)
    return a


def _meta(meta: bool | FileMeta, src) -> FileMeta | None:
    """What an output keeps: ``meta`` itself, or with True ``src``'s (a file's, not a stream's)."""
    if isinstance(meta, FileMeta):
        return meta
    if not meta or _is_readable(src):
        return None
    return FileMeta.of(src)


def _is_fileobj(x) -> bool:
    return x is not None and hasattr(x, "write") and not isinstance(x, (str, os.PathLike))


def compress_bytes(
    data,
    *,
    level: str = "default",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    dtype: str | DType | None = None,
    format: str = "auto",
    threads: int = 0,
    name: str = "",
    lossy: str | LossyOptions | None = None,
    stages: StageChooser | None = None,
    context: StageContext | None = None,
    base: str | os.PathLike | BaseModel | None = None,
    **lossy_options: Any,
) -> bytes:
    """Compress an in-memory file (bytes-like) to container bytes.

    ``lossy`` and ``lossy_options``, ``stages``, ``context`` and ``base`` as in
    :func:`compress_file`.
    """
    lossy_opts = LossyOptions.of(lossy, **lossy_options)
    chooser = lossy_chooser(lossy_opts)
    if chooser is not None and stages is not None:
        raise ValueError("give lossy= or stages=, not both")
    if base is not None and (chooser is not None or stages is not None or context is not None):
        raise ValueError("base= cannot be combined with lossy=, stages= or context=")
    source = Source.from_bytes(data, name or "<bytes>")
    with using_base(base, rel=name or None, threads=threads) as bm:
        layout = read_layout(source.data, format=format, dtype=_hint(dtype))
        if chooser is not None:
            chooser = lossy_chooser(lossy_opts, layout)
        if bm is not None:
            chooser, context = delta_chooser(
                source.data,
                layout.segments,
                bm,
                level=level,
                chunk_size=chunk_size,
                threads=threads,
            )
        out = MemoryOutput()
        try:
            compress_layout(
                source.data,
                layout,
                out,
                source_name=name,
                options=_options(level, chunk_size),
                threads=threads,
                stages=chooser or stages,
                context=context,
            )
            return out.getvalue(threads=resolve_threads(threads))
        finally:
            out.close()


def decompress_bytes(
    data,
    *,
    threads: int = 0,
    out: np.ndarray | None = None,
    context: StageContext | None = None,
    base: str | os.PathLike | BaseModel | None = None,
) -> bytes | np.ndarray:
    """Decompress container bytes; returns the original bytes.

    With ``out`` (a writable uint8 array of the original size) the result is decoded into it,
    and ``out`` is returned; reusing one buffer avoids page-faulting fresh memory each call.
    ``base``: the base model a delta container was compressed against.
    """
    with (
        ContainerReader(data, name="<bytes>") as reader,
        decode_context(reader.index, base, context, threads=threads) as context,
    ):
        size = int(reader.index.source["size"])
        if out is None:
            blob, result = new_bytes(size, threads=resolve_threads(threads))
        else:
            blob, result = None, out
            if result.size != size:
                raise ValueError(f"out has {result.size} bytes, the source has {size}")
        for _ in iter_source(reader, threads=threads, out=result, context=context):
            pass
    return finish_bytes(blob, result) if out is None else result


def decompress_file(
    src: str | os.PathLike | BinaryIO,
    dst: str | os.PathLike | BinaryIO | None = None,
    *,
    threads: int = 0,
    force: bool = False,
    check_sha256: bool = False,
    progress: Progress | None = None,
    context: StageContext | None = None,
    base: str | os.PathLike | BaseModel | None = None,
    meta: bool | FileMeta = True,
) -> DecompressReport:
    """Restore the original file from the container ``src`` (default output: ``src`` minus ``.zm``).

    Every frame's checksum and every chunk's content checksum are verified as it is decoded;
    ``check_sha256`` also recomputes the source's SHA-256 (one more pass over the output). The
    output is written atomically: an error leaves no partial file. ``src`` may be a seekable
    binary file object and ``dst`` a writable one (then written in order, not atomically).
    With ``meta`` the restored file gets the permission bits and times of the container file
    ``src``, as zstd does (the container records none: its bytes depend on the source's bytes
    alone); from a file object, or with ``meta=False``, the usual permissions.

    A lossy container restores its staged tensors dequantized, in their original dtype and
    shape; each is checked against the checksum recorded for it, and ``check_sha256`` is
    ignored (the original's SHA-256 cannot match; ``sha256_checked`` is then False).

    ``base``: the base model a delta container was compressed against (a file, ``.zm`` or
    folder); a missing or different base fails before anything is written, naming the
    SHA-256 the container expects.
    """
    t0 = time.perf_counter()
    src_name = getattr(src, "name", "<stream>") if _is_readable(src) else src
    if not _is_fileobj(dst):
        dst = Path(dst) if dst is not None else default_output(src_name, decompress=True)
    with (
        ContainerReader(src) as reader,
        decode_context(reader.index, base, context, path=src_name, threads=threads) as context,
    ):
        size = int(reader.index.source["size"])
        lossy = reader.index.lossy
        check_context(reader.index, context, path=src_name)
        sha = hashlib.sha256() if check_sha256 and not lossy else None
        done = 0
        if _is_fileobj(dst):
            for _off, buf in iter_source(reader, threads=threads, context=context):
                dst.write(memoryview(buf))
                if sha is not None:
                    sha.update(buf)
                done += buf.size
                if progress:
                    progress(done, size)
            _check_sha(sha, reader, src_name)
            dst_name = getattr(dst, "name", "<stream>")
        else:
            with atomic_output(dst, force=force, meta=_meta(meta, src)) as (fd, _tmp):
                os.ftruncate(fd, size)
                for off, buf in iter_source(reader, threads=threads, context=context):
                    mv = memoryview(buf)
                    while mv.nbytes:
                        n = os.pwrite(fd, mv, off)
                        mv, off = mv[n:], off + n
                    if sha is not None:
                        sha.update(buf)
                    done += buf.size
                    if progress:
                        progress(done, size)
                _check_sha(sha, reader, src_name)
            dst_name = str(dst)
        return DecompressReport(
            str(src_name),
            str(dst_name),
            reader.file_size,
            size,
            time.perf_counter() - t0,
            sha is not None,
            lossy,
        )


def _is_readable(x) -> bool:
    return hasattr(x, "read") and not isinstance(x, (str, os.PathLike))


def _check_sha(sha, reader, name) -> None:
    if sha is not None and sha.hexdigest() != reader.index.source["sha256"]:
        raise VerifyMismatchError(
            f"decoded data has SHA-256 {sha.hexdigest()}, the index records {reader.index.source['sha256']}",
            path=name,
        )


def verify_file(
    path: str | os.PathLike,
    *,
    against: str | os.PathLike | None = None,
    threads: int = 0,
    progress: Progress | None = None,
    context: StageContext | None = None,
    base: str | os.PathLike | BaseModel | None = None,
) -> VerifyReport:
    """Decode the whole container, checking every checksum and the source's SHA-256.

    With ``against``, also compare the decoded bytes with that file. A mismatch raises
    :class:`VerifyMismatchError`; a damaged frame raises ``CorruptDataError``.

    A lossy container cannot give the original bytes back: every chunk checksum and every
    staged tensor's recorded checksum is checked, the SHA-256 is not (the report says
    ``lossy``), and ``against`` is refused with :class:`VerifyMismatchError`. ``base``: as
    for :func:`decompress_file`.
    """
    t0 = time.perf_counter()
    with (
        ContainerReader(path) as reader,
        decode_context(reader.index, base, context, path=path, threads=threads) as context,
    ):
        idx = reader.index
        size = int(idx.source["size"])
        check_context(idx, context, path=path)
        if idx.lossy and against is not None:
            raise VerifyMismatchError(
                f"is lossy: its dequantized tensors cannot equal {against} byte for byte",
                path=path,
                hint=f"zipmodel verify {path} (without --against) checks its checksums",
            )
        sha = hashlib.sha256()
        ref = Source.open(against) if against is not None else None
        done = 0
        try:
            if ref is not None and ref.size != size:
                raise VerifyMismatchError(
                    f"{against} has {ref.size} bytes, the container holds {size}", path=path
                )
            for off, buf in iter_source(reader, threads=threads, context=context):
                sha.update(buf)
                want = ref.data[off : off + buf.size] if ref is not None else None
                if want is not None and not np.array_equal(want, buf):
                    bad = off + int(np.flatnonzero(want != buf)[0])
                    raise VerifyMismatchError(f"differs from {against} at byte {bad}", path=path)
                done += buf.size
                if progress:
                    progress(done, size)
        finally:
            if ref is not None:
                ref.close()
        if not idx.lossy and sha.hexdigest() != idx.source["sha256"]:
            raise VerifyMismatchError(
                f"decoded data has SHA-256 {sha.hexdigest()}, the index records {idx.source['sha256']}",
                path=path,
            )
        return VerifyReport(
            str(path),
            size,
            idx.source["sha256"] if idx.lossy else sha.hexdigest(),
            time.perf_counter() - t0,
            str(against) if against else None,
            idx.lossy,
            sha.hexdigest() if idx.lossy else None,
        )
