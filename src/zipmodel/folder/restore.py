"""Restore and check a compressed folder: :func:`decompress_dir`, :func:`verify_dir`,
:func:`remove_listed`."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from ..errors import (
    VerifyMismatchError,
    ZipmodelError,
)
from .fs import Ticker, atomic_dir, check_outputs, copy_hashing, hash_file, walk
from .manifest import (
    COPY,
    MANIFEST,
    FolderEntry,
    FolderResult,
    Progress,
    default_dir_output,
    inside,
    read_manifest,
)

__all__ = [
    "decompress_dir",
    "entry_base",
    "remove_listed",
    "verify_dir",
]


# -- decompress and verify ---------------------------------------------------------------------
def decompress_dir(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    threads: int = 0,
    force: bool = False,
    progress: Progress | None = None,
    link_root: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
) -> FolderResult:
    """Restore the original folder from the compressed folder ``src_dir`` (default: minus ``.zm``).

    The manifest is checked before anything is written; every restored file's size and SHA-256
    must match it (and each ``.zm`` file's own checksums are verified as it is decoded). The
    output is built in a temporary sibling and renamed into place, so any mismatch leaves no
    output. Files in ``src_dir`` that the manifest does not list are ignored. ``link_root``: see
    :func:`read_manifest`. ``base``: the base folder the folder was compressed against, when
    it was (files stored against an earlier file of the folder need nothing).
    """
    from ..files import decompress_file
    from ..zmfile import open as open_zm

    t0 = time.perf_counter()
    src = Path(src_dir)
    manifest = read_manifest(src, link_root=link_root)
    out = Path(out_dir) if out_dir is not None else default_dir_output(src, decompress=True)
    check_outputs(src, out, force)
    ticker = Ticker(sum(e.size for e in manifest.files), progress)
    with atomic_dir(out, force=force) as tmp:
        for d in manifest.directories:
            inside(tmp, d, src / MANIFEST).mkdir(parents=True, exist_ok=True)
        for e in manifest.files:
            stored = src / e.stored_path
            if not stored.is_file():
                raise ZipmodelError(
                    f"{e.stored_path} is listed in {MANIFEST} but missing", path=src
                )
            dst = inside(tmp, e.path, src / MANIFEST)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if e.stored == COPY:
                try:
                    n, sha = copy_hashing(stored, dst, ticker.add, e.restored_meta(stored))
                except OSError as exc:
                    raise ZipmodelError(
                        f"cannot copy: {exc.strerror or exc}", path=stored
                    ) from None
            else:
                # a base inside the folder is an earlier file: restored and checked by now
                bm = entry_base(e, manifest, tmp, base, threads, restored=True)
                try:
                    with open_zm(stored, base=bm) as f:
                        sha, n = f.source["sha256"], int(f.source["size"])
                    _check_entry(e, n, sha, stored)  # before decoding: fail fast
                    cb = ticker.file()
                    decompress_file(
                        stored,
                        dst,
                        threads=threads,
                        check_sha256=True,
                        progress=cb,
                        base=bm,
                        meta=e.restored_meta(stored) or False,
                    )
                finally:
                    if bm is not None:
                        bm.close()
                ticker.finish(e.size)
            _check_entry(e, n, sha, stored)
    manifest.input, manifest.output = str(src), str(out)
    manifest.seconds = time.perf_counter() - t0
    return manifest


def entry_base(
    e: FolderEntry,
    manifest: FolderResult,
    root: Path,
    base: str | os.PathLike | None,
    threads: int,
    *,
    restored: bool,
):
    """The base the stored file of ``e`` needs (None when it needs none).

    An earlier file of the folder: with ``restored``, the file restored under ``root``
    (checked against its SHA-256 already); otherwise the stored one in ``root``, itself
    opened with its own base. A base from outside: ``base``, the folder it came from.
    """
    from ..basemodel import BaseMismatchError, open_base

    if not e.base:
        return None
    ref = e.base.get("path")
    if ref is None:
        if base is None:
            raise BaseMismatchError(
                f"{e.path} was compressed against base {e.base.get('name')!r} with SHA-256 "
                f"{e.base['sha256']}; decoding it needs that base",
                path=root,
                hint="pass the base folder with --base BASE (base= in Python)",
            )
        return open_base(base, rel=e.path, exact=True, threads=threads)
    other = next(x for x in manifest.files if x.path == ref)
    if restored:
        return open_base(root / other.path, sha256=other.sha256, name=other.path)
    if other.stored == COPY:
        return open_base(root / other.stored_path, sha256=other.sha256, name=other.path)
    inner = entry_base(other, manifest, root, base, threads, restored=False)
    return open_base(root / other.stored_path, base=inner, threads=threads, owns_base=True)


def _check_entry(e: FolderEntry, size: int, sha: str, where: Path) -> None:
    if size != e.size:
        raise VerifyMismatchError(
            f"holds {size} bytes, {MANIFEST} records {e.size} for {e.path}", path=where
        )
    if sha != e.sha256:
        raise VerifyMismatchError(
            f"SHA-256 {sha} differs from {e.sha256} recorded in {MANIFEST} for {e.path}",
            path=where,
        )


def verify_dir(
    path: str | os.PathLike,
    *,
    against: str | os.PathLike | None = None,
    threads: int = 0,
    progress: Progress | None = None,
    base: str | os.PathLike | None = None,
) -> FolderResult:
    """Decode every stored file and check it against the manifest; nothing is written.

    With ``against`` (the original folder) also compare each file byte for byte and check that
    both trees list the same files and empty folders. A mismatch raises
    :class:`VerifyMismatchError` naming the file. ``base``: as for :func:`decompress_dir` (a
    file stored against an earlier one is checked against that one's stored form).
    """
    from ..files import verify_file

    t0 = time.perf_counter()
    root = Path(path)
    manifest = read_manifest(root)
    ticker = Ticker(sum(e.size for e in manifest.files), progress)
    if against is not None:
        ref = Path(against)
        if not ref.is_dir():
            raise ZipmodelError("not a folder", path=ref)
        files, empty = walk(ref, follow_symlinks=True)
        have, want = {r for r, _ in files}, {e.path for e in manifest.files}
        for extra, side in ((have - want, "is not in"), (want - have, "is missing from")):
            if extra:
                raise VerifyMismatchError(f"{sorted(extra)[0]} {side} {ref}", path=root)
        if set(empty) != set(manifest.directories):
            raise VerifyMismatchError(f"empty folders differ from those in {ref}", path=root)
    for e in manifest.files:
        stored = root / e.stored_path
        if not stored.is_file():
            raise ZipmodelError(f"{e.stored_path} is listed in {MANIFEST} but missing", path=root)
        other = Path(against) / e.path if against is not None else None
        if e.stored == COPY:
            n, sha = hash_file(stored, ticker.add)
            _check_entry(e, n, sha, stored)
            if other is not None:
                _check_entry(e, *hash_file(other), other)
        else:
            cb = ticker.file()
            bm = entry_base(e, manifest, root, base, threads, restored=False)
            try:
                rep = verify_file(stored, against=other, threads=threads, progress=cb, base=bm)
            finally:
                if bm is not None:
                    bm.close()
            ticker.finish(e.size)
            _check_entry(e, rep.source_bytes, rep.sha256, stored)
    manifest.output = str(against) if against is not None else ""
    manifest.seconds = time.perf_counter() - t0
    return manifest


def remove_listed(root: str | os.PathLike, paths: list[str], dirs: list[str] | None = None) -> bool:
    """Delete the listed files of ``root``, then folders left empty (``root`` included).

    Used by ``--rm``: only what a manifest names is deleted, never a whole tree blindly.
    Returns whether ``root`` itself is gone (files the manifest did not list keep it).
    """
    base = Path(root)
    folders = {base}
    for rel in paths:
        p = base / rel
        p.unlink()
        folders.update(a for a in p.parents if a.is_relative_to(base))
    folders.update(base / d for d in dirs or [])
    for d in sorted(folders, key=lambda x: len(x.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()  # fails, and is kept, when not empty
    return not base.exists()
