"""Compress a model folder: ``X/`` → ``X.zm/`` (:func:`compress_dir`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from .._io import FileMeta
from ..errors import (
    UnsupportedError,
    ZipmodelError,
)
from ..options import LossyOptions
from .fs import (
    Ticker,
    atomic_dir,
    check_outputs,
    copy_hashing,
    ignore,
    walk,
    wants_compression,
)
from .manifest import (
    COPY,
    DEFAULT_MIN_SIZE,
    MANIFEST,
    SUFFIX,
    ZM,
    FolderEntry,
    FolderResult,
    Progress,
    default_dir_output,
    write_manifest,
)

__all__ = [
    "compress_dir",
]


# -- compress ----------------------------------------------------------------------------------
def compress_dir(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    level: str = "default",
    threads: int = 0,
    chunk_size: int | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    force: bool = False,
    follow_symlinks: bool = False,
    progress: Progress | None = None,
    base: str | os.PathLike | None = None,
    dedup: bool = True,
    lossy: str | LossyOptions | None = None,
    **lossy_options: Any,
) -> FolderResult:
    """Compress the folder ``src_dir`` into the folder ``out_dir`` (default ``src_dir + ".zm"``).

    ``lossy`` and ``lossy_options`` as in :func:`zipmodel.files.compress_file` (a
    :class:`~zipmodel.options.LossyOptions`, or a preset and its fields as keywords),
    applied to every weight file; the manifest keeps the originals' SHA-256.

    Weight files (by suffix: safetensors, ``.bin``, ``.pt``, ``.pth``, ``.gguf``, ...) and any
    other file of at least ``min_size`` bytes become ``<path>.zm``, unless the container would
    not be smaller (then the file is copied); everything else is copied unchanged. The folder is
    written atomically and ``zipmodel.json`` records every file's size and SHA-256. Without
    ``force`` an existing output is an error; ``src_dir`` is never modified.

    ``base`` (a folder, plain or compressed) stores each weight file against the file of the
    same relative path there, when it has one (docs/delta.md). Otherwise, with ``dedup``, a
    weight file that shares tensors with an earlier one of this folder (the same contents,
    or the same names: several models compressed together) is stored against the earlier
    file that shares the most: repeated tensors cost nothing, related ones a delta.
    """
    from ..pipeline import DEFAULT_CHUNK_SIZE

    t0 = time.perf_counter()
    src = Path(src_dir)
    _check_source_folder(src)
    out = Path(out_dir) if out_dir is not None else default_dir_output(src, decompress=False)
    check_outputs(src, out, force)
    if base is not None and not Path(base).is_dir():
        raise ZipmodelError("the base of a folder must be a folder", path=base)
    lossy = LossyOptions.of(lossy, **lossy_options)
    if lossy.enabled:
        if base is not None:
            raise ValueError("base= cannot be combined with a lossy stage")
        dedup = False  # a tensor goes through one stage: the lossy one
    files, empty = walk(src, follow_symlinks=follow_symlinks)
    prints: dict[str, tuple] = {}  # weight files so far: rel -> tensor fingerprints
    sizes = {rel: p.stat().st_size for rel, p in files}
    names = set(sizes)
    ticker = Ticker(sum(sizes.values()), progress)
    entries: list[FolderEntry] = []
    coding = dict(
        level=level, chunk_size=chunk_size or DEFAULT_CHUNK_SIZE, threads=threads, lossy=lossy
    )
    with atomic_dir(out, force=force) as tmp:
        for d in empty:
            (tmp / d).mkdir(parents=True, exist_ok=True)
        for rel, path in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            size = sizes[rel]
            meta = FileMeta.of(path)
            entry = None
            advance = ticker.add
            # a source file already named <rel>.zm keeps that name: then <rel> is copied
            if wants_compression(rel, size, min_size) and rel + SUFFIX not in names:
                bm, base_rec = _file_base(src, rel, path, base, prints, entries, dedup, threads)
                entry = _compress_entry(rel, path, size, tmp, ticker, bm, base_rec, coding)
                if entry is None:  # incompressible: copied (progress already counted)
                    advance = ignore
            if entry is None:
                entry = _copy_entry(rel, path, size, tmp / rel, advance, meta)
            if meta is not None:  # (the .zm got the source's mode and times from compress_file)
                entry.mode, entry.mtime_ns = meta.mode, meta.mtime_ns
            entries.append(entry)
        result = FolderResult(str(src), str(out), entries, empty)
        write_manifest(tmp / MANIFEST, result)
    result.seconds = time.perf_counter() - t0
    return result


def _check_source_folder(src: Path) -> None:
    if not src.is_dir():
        raise ZipmodelError("not a folder" if src.exists() else "no such folder", path=src)
    if (src / MANIFEST).exists():
        raise UnsupportedError(
            f"already holds {MANIFEST}: it looks like a compressed folder",
            path=src,
            hint=f"restore it with: zipmodel decompress {src}",
        )


def _compress_entry(
    rel: str, path: Path, size: int, tmp: Path, ticker: Ticker, bm, base_rec, coding: dict
) -> FolderEntry | None:
    """Compress one file to ``tmp/<rel>.zm`` (against ``bm``, when given); ``None`` when the
    container would not be smaller (it is removed; the caller copies the file)."""
    from ..files import compress_file

    zm_rel = rel + SUFFIX
    zm_dst = tmp / zm_rel
    cb = ticker.file()
    try:
        rep = compress_file(path, zm_dst, progress=cb, base=bm, **coding)
    finally:
        if bm is not None:
            bm.close()
    ticker.finish(size)
    if rep.output_bytes >= rep.input_bytes:
        zm_dst.unlink()
        return None
    s = rep.summary
    staged = _stage_counts(zm_dst) if bm is not None else {}
    return FolderEntry(
        rel,
        size,
        s.sha256,
        ZM,
        zm_rel,
        rep.output_bytes,
        s.source_format,
        base_rec if staged else None,  # no tensor used it: needs no base
        staged or None,
    )


def _copy_entry(rel: str, path: Path, size: int, dst: Path, advance, meta) -> FolderEntry:
    try:
        n, sha = copy_hashing(path, dst, advance, meta)
    except OSError as e:
        raise ZipmodelError(f"cannot copy: {e.strerror or e}", path=path) from None
    if n != size:
        raise ZipmodelError(f"changed while being read ({size} -> {n} bytes)", path=path)
    return FolderEntry(rel, size, sha, COPY, rel, size)


def _fingerprint(path: Path) -> tuple[dict[tuple, str], set[tuple]]:
    """A weight file's tensors: content keys (dedup) and (name, dtype, shape) (deltas)."""
    from .._io import Source
    from ..basemodel import content_key
    from ..pipeline import DEDUP_MIN
    from ..readers import read_layout

    with Source.open(path) as source:
        segs = read_layout(source.data, path=str(path)).tensors()
        keys = {
            content_key(g, source.data[g.offset : g.end]): g.name or ""
            for g in segs
            if g.size >= DEDUP_MIN
        }
        names = {(g.name, g.dtype, tuple(g.shape or ()), g.size) for g in segs}
    return keys, names


def _file_base(
    src: Path,
    rel: str,
    path: Path,
    base: str | os.PathLike | None,
    prints: dict[str, tuple],
    entries: list[FolderEntry],
    dedup: bool,
    threads: int,
):
    """The base to store the folder's file ``rel`` against, and what the manifest records.

    With ``base`` (a folder) its file of the same relative path, if any. Otherwise the
    earlier weight file of this folder sharing the most bytes with this one: identical
    tensors (any name) and tensors of the same name, dtype and shape (delta candidates).
    """
    from ..basemodel import BaseMismatchError, open_base

    if base is not None:
        try:
            bm = open_base(base, rel=rel, exact=True, threads=threads)
        except BaseMismatchError:  # no such file in the base folder: stored on its own
            return None, None
        return bm, {"name": bm.name, "sha256": bm.sha256}
    if not dedup:
        return None, None
    keys, names = prints[rel] = _fingerprint(path)
    best, best_score = None, 0
    for other, (okeys, onames) in prints.items():
        if other == rel:
            continue
        score = sum(k[1] for k in keys if k in okeys) + sum(n[3] for n in names & onames)
        if score > best_score:
            best, best_score = other, score
    if best is None:
        return None, None
    e = next(x for x in entries if x.path == best)
    bm = open_base(src / best, sha256=e.sha256, name=best)
    return bm, {"path": best}


def _stage_counts(zm: Path) -> dict[str, list[int]]:
    """Tensors of the container ``zm`` stored through a stage: {stage: [count, bytes]}."""
    from ..container.reader import ContainerReader

    counts: dict[str, list[int]] = {}
    with ContainerReader(zm) as r:
        for e in r.index.segments:
            if e.stage is not None:
                c = counts.setdefault(e.stage.name, [0, 0])
                c[0] += 1
                c[1] += e.segment.size
    return counts
