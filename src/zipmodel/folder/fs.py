"""Files and folders of a folder operation: the source walk, hashed copies, progress, and the
temporary output folder renamed into place."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from .._io import FileMeta, fsync_dir, umask
from ..errors import (
    OutputExistsError,
    UnsupportedError,
    ZipmodelError,
)
from .manifest import WEIGHT_SUFFIXES, Progress

COPY_BLOCK = 1 << 20

__all__ = [
    "COPY_BLOCK",
    "Ticker",
    "atomic_dir",
    "check_outputs",
    "copy_hashing",
    "hash_file",
    "ignore",
    "sync_folders",
    "walk",
    "wants_compression",
]


def check_outputs(src: Path, out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputExistsError(
            "output already exists", path=out, hint="use -f/--force to overwrite it"
        )
    if out.exists() and not out.is_dir():
        raise ZipmodelError("output exists and is not a folder", path=out)
    s, o = src.resolve(), out.resolve()
    if o == s or o.is_relative_to(s) or s.is_relative_to(o):
        raise ZipmodelError(
            "output and input folders overlap", path=out, hint="choose another -o/--output"
        )


# -- temporary output folder, renamed into place ------------------------------------------------
@contextlib.contextmanager
def atomic_dir(dest: Path, *, force: bool) -> Iterator[Path]:
    """Yield a fresh hidden sibling folder that becomes ``dest`` on success, and is removed
    on any exception (Ctrl-C included). An existing ``dest`` (with ``force``) is swapped out
    by two renames and removed only after the new folder is in place."""
    parent = dest.parent if str(dest.parent) else Path(".")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent))
    except FileNotFoundError:
        raise ZipmodelError("output folder's parent does not exist", path=parent) from None
    except PermissionError:
        raise ZipmodelError("cannot write to the output's parent folder", path=parent) from None
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp creates 0700
        sync_folders(tmp)  # (its files were synced as written) before --rm deletes inputs
        if dest.exists() or dest.is_symlink():
            if not force:
                raise OutputExistsError("output already exists", path=dest)
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=parent))
            os.replace(dest, old / "x")
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old / "x", dest)
                raise
        else:
            os.replace(tmp, dest)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def sync_folders(root: Path) -> None:
    """``fsync`` every folder of the tree ``root``, deepest first: their entries are on the
    disk (each file is synced when written)."""
    dirs = [dirpath for dirpath, _dirnames, _filenames in os.walk(root)]
    for d in reversed(dirs):  # os.walk lists a folder before those inside it
        fsync_dir(d)


# -- walking a source folder -------------------------------------------------------------------
def walk(src: Path, *, follow_symlinks: bool) -> tuple[list[tuple[str, Path]], list[str]]:
    """``([(rel, path)], empty_dirs)``, sorted; every entry checked to be a regular file."""
    root = src.resolve()
    files: list[tuple[str, Path]] = []
    empty: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):
        d = Path(dirpath)
        rel_dir = d.relative_to(src).as_posix()
        for name in list(dirnames):
            if (d / name).is_symlink():
                raise UnsupportedError(
                    "is a symlink to a folder; zipmodel does not follow those",
                    path=d / name,
                    hint="replace it with a copy of the folder",
                )
        dirnames.sort()
        if not dirnames and not filenames and rel_dir != ".":
            empty.append(rel_dir)
        for name in sorted(filenames):
            p = d / name
            rel = (p.relative_to(src)).as_posix()
            if p.is_symlink():
                target = p.resolve()
                if not target.exists():
                    raise ZipmodelError("is a broken symlink", path=p)
                if not target.is_relative_to(root) and not follow_symlinks:
                    raise UnsupportedError(
                        f"is a symlink to {target}, outside the folder",
                        path=p,
                        hint="pass --follow-symlinks (follow_symlinks=True) to store its target",
                    )
            try:
                mode = p.stat().st_mode
            except OSError as e:
                raise ZipmodelError(f"cannot read: {e.strerror}", path=p) from None
            if not stat.S_ISREG(mode):
                raise UnsupportedError("is not a regular file (device, pipe or socket)", path=p)
            files.append((rel, p))
    files.sort()
    return files, sorted(empty)


def wants_compression(rel: str, size: int, min_size: int) -> bool:
    if size == 0:
        return False
    return PurePosixPath(rel).suffix.lower() in WEIGHT_SUFFIXES or size >= min_size


def copy_hashing(
    src: Path, dst: Path, advance: Callable[[int], None], meta: FileMeta | None
) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (new file), returning ``(size, sha256)`` of the bytes copied;
    ``dst`` gets ``meta``'s mode and times (or the usual permissions) and is on the disk."""
    h = hashlib.sha256()
    n = 0
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        while block := fi.read(COPY_BLOCK):
            fo.write(block)
            h.update(block)
            n += len(block)
            advance(len(block))
        fo.flush()
        if meta is not None:
            meta.apply(fo.fileno())
        os.fsync(fo.fileno())
    return n, h.hexdigest()


def hash_file(path: Path, advance: Callable[[int], None] | None = None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(COPY_BLOCK):
            h.update(block)
            n += len(block)
            if advance:
                advance(len(block))
    return n, h.hexdigest()


def ignore(_n: int) -> None:
    pass


class Ticker:
    """Turns per-file progress into ``progress(done, total)`` over the whole folder."""

    def __init__(self, total: int, progress: Progress | None):
        self.total, self.progress, self.base, self.done = total, progress, 0, 0

    def add(self, n: int) -> None:
        self.done += n
        if self.progress:
            self.progress(self.done, self.total)

    def file(self) -> Callable[[int, int], None]:
        """A per-file callback; call :meth:`finish` with the file's size afterwards."""
        self.base = self.done

        def cb(done: int, _total: int) -> None:
            self.done = self.base + done
            if self.progress:
                self.progress(self.done, self.total)

        return cb

    def finish(self, size: int) -> None:
        self.done = self.base + size
        if self.progress:
            self.progress(self.done, self.total)
