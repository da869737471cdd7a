"""Model folders (Hugging Face style): ``X/`` → ``X.zm/`` and back, byte for byte.

Each weight file becomes ``<path>.zm`` (through :func:`zipmodel.files.compress_file`); small files
(config, tokenizer, index JSON, README) are copied unchanged, so the compressed folder stays
readable. ``zipmodel.json`` at the output root lists every original file with its size, SHA-256
and how it is stored (the format is specified in ``docs/folders.md``).

Safety, as for single files: the output is built in a hidden temporary sibling folder and renamed
into place only when complete, so an error or Ctrl-C leaves no partial output; inputs are never
modified. A manifest is untrusted input: its paths must be relative, free of ``..`` and resolve
inside the folder, and every restored file must match its recorded SHA-256. Symlinks in a source
folder are followed only when they point to a file inside the tree (the file is stored, and
restored as a regular file); one pointing outside is an error unless ``follow_symlinks``, and
symlinked folders are always an error (no cycles, no escapes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import __version__
from ._io import FileMeta, fsync_dir, fsync_file, umask
from .errors import (
    FormatError,
    OutputExistsError,
    UnsupportedError,
    VerifyMismatchError,
    ZipmodelError,
)
from .options import LossyOptions

__all__ = [
    "MANIFEST",
    "FolderEntry",
    "FolderResult",
    "compress_dir",
    "decompress_dir",
    "default_dir_output",
    "is_zm_folder",
    "read_manifest",
    "remove_listed",
    "verify_dir",
]

MANIFEST = "zipmodel.json"
MANIFEST_FORMAT = "zipmodel-folder"
MANIFEST_VERSION = 1
SUFFIX = ".zm"
DEFAULT_MIN_SIZE = 1 << 20
# Compressed whatever their size (when it saves bytes); other files only from ``min_size`` up.
WEIGHT_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack"}
)
COPY, ZM = "copy", "zm"
MAX_MANIFEST_BYTES = 64 << 20  # a million files is ~150 MB of JSON; real folders hold dozens
_SHA = re.compile(r"^[0-9a-f]{64}$")
_COPY_BLOCK = 1 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes in all), over the whole folder


@dataclass
class FolderEntry:
    """One original file: where it is, how big, its SHA-256, and how the folder stores it."""

    path: str  # relative, POSIX separators
    size: int
    sha256: str
    stored: str  # "copy" or "zm"
    stored_path: str  # relative path in the compressed folder
    stored_size: int
    format: str = ""  # source format recorded in the .zm index ("" for copies)
    # The .zm was written against a base (docs/delta.md): {"path": an earlier file of this
    # folder} (tensors shared across the folder's files), or {"name", "sha256"} of a base
    # outside it (``compress --base``). None: stored on its own.
    base: dict[str, str] | None = None
    # Tensors stored against the base, by stage: {"same": [tensors, original bytes], ...}.
    stages: dict[str, list[int]] | None = None
    # The original's permission bits and modification time (None: not recorded, an older
    # manifest), given back to the restored file.
    mode: int | None = None
    mtime_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "stored": self.stored,
            "stored_path": self.stored_path,
            "stored_size": self.stored_size,
        }
        if self.format:
            d["format"] = self.format
        if self.base:
            d["base"] = self.base
        if self.stages:
            d["stages"] = self.stages
        if self.mode is not None:
            d["mode"] = self.mode
        if self.mtime_ns is not None:
            d["mtime_ns"] = self.mtime_ns
        return d

    def restored_meta(self, stored: Path) -> FileMeta | None:
        """The mode and times the restored file gets: the recorded ones (the mode less the
        umask: a manifest may come from anyone, and must not make a file world-writable),
        else those of the stored file, as zstd gives a restored file its container's."""
        own = FileMeta.of(stored)
        if self.mode is None and self.mtime_ns is None:
            return own
        mode = self.mode & ~umask() if self.mode is not None else None
        mtime = self.mtime_ns
        if own is not None:
            mode = own.mode if mode is None else mode
            mtime = own.mtime_ns if mtime is None else mtime
        if mode is None or mtime is None:
            return None
        return FileMeta(mode, mtime)


@dataclass
class FolderResult:
    """What :func:`compress_dir`, :func:`decompress_dir` or :func:`verify_dir` did."""

    input: str
    output: str
    files: list[FolderEntry]
    directories: list[str] = field(default_factory=list)  # empty folders kept
    seconds: float = 0.0
    writer: str = f"zipmodel {__version__}"  # from the manifest, when read from one

    @property
    def original_bytes(self) -> int:
        return sum(e.size for e in self.files)

    @property
    def stored_bytes(self) -> int:
        """Bytes of the compressed folder's files (the manifest not counted)."""
        return sum(e.stored_size for e in self.files)

    @property
    def ratio(self) -> float:
        """Stored / original bytes."""
        return self.stored_bytes / self.original_bytes if self.original_bytes else 1.0

    @property
    def compressed_files(self) -> int:
        return sum(e.stored == ZM for e in self.files)

    @property
    def mb_per_s(self) -> float:
        """Original bytes per second (compressed, restored or verified)."""
        return self.original_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def totals(self) -> dict[str, int]:
        d = {
            "files": len(self.files),
            "compressed_files": self.compressed_files,
            "copied_files": len(self.files) - self.compressed_files,
            "original_bytes": self.original_bytes,
            "stored_bytes": self.stored_bytes,
        }
        same = [e.stages["same"] for e in self.files if e.stages and "same" in e.stages]
        if same:  # tensors stored once for the whole folder (or in the base)
            d["deduplicated_tensors"] = sum(n for n, _ in same)
            d["deduplicated_bytes"] = sum(b for _, b in same)
        return d

    def to_json(self, *, files: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "input": self.input,
            "output": self.output,
            **self.totals(),
            "ratio": round(self.ratio, 6),
            "seconds": round(self.seconds, 4),
            "mb_per_s": round(self.mb_per_s, 2),
        }
        if files:
            d["entries"] = [e.to_json() for e in self.files]
        return d


# -- names and checks -------------------------------------------------------------------------
def is_zm_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a compressed folder (a folder holding ``zipmodel.json``)."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def default_dir_output(path: str | os.PathLike, *, decompress: bool) -> Path:
    """``X`` → ``X.zm`` and ``X.zm`` → ``X`` (``.`` and ``..`` are named by what they are)."""
    p = Path(path)
    if p.name in ("", ".", ".."):
        p = p.resolve()
    if not decompress:
        return p.with_name(p.name + SUFFIX)
    if p.suffix != SUFFIX or p.name == SUFFIX:
        raise ZipmodelError(f"does not end in {SUFFIX}; name the output with -o", path=p)
    return p.with_name(p.name[: -len(SUFFIX)])


def _check_rel(rel: object, where: Path) -> str:
    """A manifest path must be relative, in POSIX form, and name no parent or current folder."""
    if not isinstance(rel, str) or not rel:
        raise FormatError(f"a file path is {rel!r}, not a relative path", path=where)
    parts = rel.split("/")
    bad = (
        rel.startswith("/")
        or "\\" in rel
        or "\0" in rel
        or re.match(r"^[A-Za-z]:", rel)
        or any(p in ("", ".", "..") for p in parts)
    )
    if bad:
        raise FormatError(
            f"unsafe path {rel!r}: paths must be relative, without '..', '.' or empty parts",
            path=where,
        )
    return rel


def _inside(root: Path, rel: str, where: Path, link_root: Path | None = None) -> Path:
    """``root / rel``, after checking that it resolves inside ``root`` (symlinks included), or
    inside ``link_root`` when one is given."""
    base = root.resolve()
    target = (base / rel).resolve()
    inside = target.is_relative_to(base) and target != base
    if not inside and link_root is not None:
        inside = target.is_relative_to(link_root.resolve())
    if not inside:
        raise FormatError(f"path {rel!r} resolves outside {root}", path=where)
    return base / rel


def _check_outputs(src: Path, out: Path, force: bool) -> None:
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
def _atomic_dir(dest: Path, *, force: bool) -> Iterator[Path]:
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
        _sync_folders(tmp)  # (its files were synced as written) before --rm deletes inputs
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


def _sync_folders(root: Path) -> None:
    """``fsync`` every folder of the tree ``root``, deepest first: their entries are on the
    disk (each file is synced when written)."""
    dirs = [dirpath for dirpath, _dirnames, _filenames in os.walk(root)]
    for d in reversed(dirs):  # os.walk lists a folder before those inside it
        fsync_dir(d)


# -- walking a source folder -------------------------------------------------------------------
def _walk(src: Path, *, follow_symlinks: bool) -> tuple[list[tuple[str, Path]], list[str]]:
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


def _wants_compression(rel: str, size: int, min_size: int) -> bool:
    if size == 0:
        return False
    return PurePosixPath(rel).suffix.lower() in WEIGHT_SUFFIXES or size >= min_size


def _copy_hashing(
    src: Path, dst: Path, advance: Callable[[int], None], meta: FileMeta | None
) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (new file), returning ``(size, sha256)`` of the bytes copied;
    ``dst`` gets ``meta``'s mode and times (or the usual permissions) and is on the disk."""
    h = hashlib.sha256()
    n = 0
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        while block := fi.read(_COPY_BLOCK):
            fo.write(block)
            h.update(block)
            n += len(block)
            advance(len(block))
        fo.flush()
        if meta is not None:
            meta.apply(fo.fileno())
        os.fsync(fo.fileno())
    return n, h.hexdigest()


def _hash_file(path: Path, advance: Callable[[int], None] | None = None) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(_COPY_BLOCK):
            h.update(block)
            n += len(block)
            if advance:
                advance(len(block))
    return n, h.hexdigest()


def _ignore(_n: int) -> None:
    pass


class _Ticker:
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
    from .files import compress_file
    from .pipeline import DEFAULT_CHUNK_SIZE

    t0 = time.perf_counter()
    src = Path(src_dir)
    if not src.is_dir():
        raise ZipmodelError("not a folder" if src.exists() else "no such folder", path=src)
    if (src / MANIFEST).exists():
        raise UnsupportedError(
            f"already holds {MANIFEST}: it looks like a compressed folder",
            path=src,
            hint=f"restore it with: zipmodel decompress {src}",
        )
    out = Path(out_dir) if out_dir is not None else default_dir_output(src, decompress=False)
    _check_outputs(src, out, force)
    if base is not None and not Path(base).is_dir():
        raise ZipmodelError("the base of a folder must be a folder", path=base)
    lossy = LossyOptions.of(lossy, **lossy_options)
    if lossy.enabled:
        if base is not None:
            raise ValueError("base= cannot be combined with a lossy stage")
        dedup = False  # a tensor goes through one stage: the lossy one
    files, empty = _walk(src, follow_symlinks=follow_symlinks)
    prints: dict[str, tuple] = {}  # weight files so far: rel -> tensor fingerprints
    sizes = {rel: p.stat().st_size for rel, p in files}
    names = set(sizes)
    ticker = _Ticker(sum(sizes.values()), progress)
    entries: list[FolderEntry] = []
    with _atomic_dir(out, force=force) as tmp:
        for d in empty:
            (tmp / d).mkdir(parents=True, exist_ok=True)
        for rel, path in files:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            size = sizes[rel]
            meta = FileMeta.of(path)
            zm_rel = rel + SUFFIX
            entry = None
            advance = ticker.add
            # a source file already named <rel>.zm keeps that name: then <rel> is copied
            if _wants_compression(rel, size, min_size) and zm_rel not in names:
                zm_dst = tmp / zm_rel
                cb = ticker.file()
                bm, base_rec = _file_base(src, rel, path, base, prints, entries, dedup, threads)
                try:
                    rep = compress_file(
                        path,
                        zm_dst,
                        level=level,
                        chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
                        threads=threads,
                        progress=cb,
                        lossy=lossy,
                        base=bm,
                    )
                finally:
                    if bm is not None:
                        bm.close()
                if rep.output_bytes < rep.input_bytes:
                    s = rep.summary
                    staged = _stage_counts(zm_dst) if bm is not None else {}
                    entry = FolderEntry(
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
                    ticker.finish(size)
                else:  # incompressible: a plain copy is smaller (progress already counted)
                    zm_dst.unlink()
                    ticker.finish(size)
                    advance = _ignore
            if entry is None:
                try:
                    n, sha = _copy_hashing(path, dst, advance, meta)
                except OSError as e:
                    raise ZipmodelError(f"cannot copy: {e.strerror or e}", path=path) from None
                if n != size:
                    raise ZipmodelError(
                        f"changed while being read ({size} -> {n} bytes)", path=path
                    )
                entry = FolderEntry(rel, size, sha, COPY, rel, size)
            if meta is not None:  # (the .zm got the source's mode and times from compress_file)
                entry.mode, entry.mtime_ns = meta.mode, meta.mtime_ns
            entries.append(entry)
        result = FolderResult(str(src), str(out), entries, empty)
        _write_manifest(tmp / MANIFEST, result)
    result.seconds = time.perf_counter() - t0
    return result


def _fingerprint(path: Path) -> tuple[dict[tuple, str], set[tuple]]:
    """A weight file's tensors: content keys (dedup) and (name, dtype, shape) (deltas)."""
    from ._io import Source
    from .basemodel import _dedup_min, content_key
    from .readers import read_layout

    with Source.open(path) as source:
        segs = read_layout(source.data, path=str(path)).tensors()
        keys = {
            content_key(g, source.data[g.offset : g.end]): g.name or ""
            for g in segs
            if g.size >= _dedup_min()
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
    from .basemodel import BaseMismatchError, open_base

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
    from .container.reader import ContainerReader

    counts: dict[str, list[int]] = {}
    with ContainerReader(zm) as r:
        for e in r.index.segments:
            if e.stage is not None:
                c = counts.setdefault(e.stage.name, [0, 0])
                c[0] += 1
                c[1] += e.segment.size
    return counts


def _write_manifest(path: Path, result: FolderResult) -> None:
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "writer": f"zipmodel {__version__}",
        "files": [e.to_json() for e in result.files],
        "directories": result.directories,
        "totals": result.totals(),
    }
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    fsync_file(path)


# -- manifest ----------------------------------------------------------------------------------
def read_manifest(
    folder: str | os.PathLike, *, link_root: str | os.PathLike | None = None
) -> FolderResult:
    """Read and check ``folder/zipmodel.json``; every path is checked to be safe.

    Checks structure, types, path safety (relative, no ``..``, inside ``folder``), duplicate and
    conflicting paths. Raises :class:`FormatError` (or :class:`UnsupportedError` for a newer
    version) naming the manifest; the stored files themselves are checked when read.
    ``link_root``: a folder that stored files may also reach through symlinks (a Hugging Face
    cache snapshot links every file into its repository's ``blobs/``, see ``zipmodel.hub``).
    """
    root = Path(folder)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise ZipmodelError("no such folder" if not root.exists() else "not a folder", path=root)
    if not mpath.is_file():
        raise FormatError(f"not a compressed folder: no {MANIFEST}", path=root)
    if mpath.stat().st_size > MAX_MANIFEST_BYTES:
        raise FormatError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes", path=mpath)
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"manifest is not valid JSON: {e}", path=mpath) from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise FormatError(f"manifest's format is not {MANIFEST_FORMAT!r}", path=mpath)
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise FormatError("manifest has no integer version", path=mpath)
    if version > MANIFEST_VERSION:
        raise UnsupportedError(
            f"manifest version {version} is newer than this zipmodel reads ({MANIFEST_VERSION})",
            path=mpath,
            hint="pip install -U zipmodel",
        )
    files, dirs = doc.get("files"), doc.get("directories", [])
    if not isinstance(files, list) or not isinstance(dirs, list):
        raise FormatError("manifest's 'files' and 'directories' must be lists", path=mpath)
    entries: list[FolderEntry] = []
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            raise FormatError(f"files[{i}] is not an object", path=mpath)
        rel = _check_rel(f.get("path"), mpath)
        stored = f.get("stored")
        if stored not in (COPY, ZM):
            raise FormatError(f"{rel}: 'stored' is {stored!r}, not 'copy' or 'zm'", path=mpath)
        stored_rel = _check_rel(f.get("stored_path"), mpath)
        if stored_rel == MANIFEST:
            raise FormatError(f"{rel}: stored as the manifest itself", path=mpath)
        nums = [f.get("size"), f.get("stored_size")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in nums):
            raise FormatError(f"{rel}: 'size'/'stored_size' are not byte counts", path=mpath)
        sha = f.get("sha256")
        if not isinstance(sha, str) or not _SHA.match(sha):
            raise FormatError(f"{rel}: 'sha256' is not 64 lowercase hex digits", path=mpath)
        fmt = f.get("format", "")
        base = _check_base(f.get("base"), rel, {e.path for e in entries}, mpath)
        stages = f.get("stages")
        mode, mtime = f.get("mode"), f.get("mtime_ns")
        if mode is not None and not (_is_int(mode) and 0 <= mode <= 0o777):
            raise FormatError(f"{rel}: 'mode' is not permission bits (0..0o777)", path=mpath)
        if mtime is not None and not (_is_int(mtime) and -(1 << 63) <= mtime < 1 << 63):
            raise FormatError(f"{rel}: 'mtime_ns' is not a time in nanoseconds", path=mpath)
        entries.append(
            FolderEntry(
                rel,
                nums[0],
                sha,
                stored,
                stored_rel,
                nums[1],
                fmt if isinstance(fmt, str) else "",
                base,
                stages if isinstance(stages, dict) else None,
                mode,
                mtime,
            )
        )
    directories = [_check_rel(d, mpath) for d in dirs]
    _check_unique([e.path for e in entries], directories, mpath, "path")
    _check_unique([e.stored_path for e in entries] + [MANIFEST], [], mpath, "stored_path")
    links = Path(link_root) if link_root is not None else None
    for e in entries:  # reading through a symlink planted in the folder must not escape it
        _inside(root, e.stored_path, mpath, links)
    writer = doc.get("writer")
    return FolderResult(str(root), "", entries, directories, writer=str(writer or "?"))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_base(base: object, rel: str, earlier: set[str], where: Path) -> dict[str, str] | None:
    """A manifest entry's base: an earlier file of the folder, or a SHA-256 from outside."""
    if base is None:
        return None
    if isinstance(base, dict) and "path" in base:
        ref = _check_rel(base["path"], where)
        if ref not in earlier:
            raise FormatError(f"{rel}: base {ref!r} is not an earlier file", path=where)
        return {"path": ref}
    if (
        isinstance(base, dict)
        and isinstance(base.get("sha256"), str)
        and _SHA.match(base["sha256"])
        and isinstance(base.get("name", ""), str)
    ):
        return {"name": base.get("name", ""), "sha256": base["sha256"]}
    raise FormatError(f"{rel}: 'base' is malformed", path=where)


def _check_unique(paths: list[str], dirs: list[str], where: Path, what: str) -> None:
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise FormatError(f"{what} {p!r} is listed twice", path=where)
        seen.add(p)
    parents = {str(PurePosixPath(p).parent) for p in paths} | set(dirs)
    for p in list(parents):  # every ancestor is a folder, so no file may share its name
        parents.update(str(a) for a in PurePosixPath(p).parents)
    clash = seen & parents
    if clash:
        raise FormatError(f"{what} {sorted(clash)[0]!r} is both a file and a folder", path=where)


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
    from .files import decompress_file
    from .zmfile import open as open_zm

    t0 = time.perf_counter()
    src = Path(src_dir)
    manifest = read_manifest(src, link_root=link_root)
    out = Path(out_dir) if out_dir is not None else default_dir_output(src, decompress=True)
    _check_outputs(src, out, force)
    ticker = _Ticker(sum(e.size for e in manifest.files), progress)
    with _atomic_dir(out, force=force) as tmp:
        for d in manifest.directories:
            _inside(tmp, d, src / MANIFEST).mkdir(parents=True, exist_ok=True)
        for e in manifest.files:
            stored = src / e.stored_path
            if not stored.is_file():
                raise ZipmodelError(
                    f"{e.stored_path} is listed in {MANIFEST} but missing", path=src
                )
            dst = _inside(tmp, e.path, src / MANIFEST)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if e.stored == COPY:
                try:
                    n, sha = _copy_hashing(stored, dst, ticker.add, e.restored_meta(stored))
                except OSError as exc:
                    raise ZipmodelError(
                        f"cannot copy: {exc.strerror or exc}", path=stored
                    ) from None
            else:
                # a base inside the folder is an earlier file: restored and checked by now
                bm = _entry_base(e, manifest, tmp, base, threads, restored=True)
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


def _entry_base(
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
    from .basemodel import BaseMismatchError, open_base

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
    inner = _entry_base(other, manifest, root, base, threads, restored=False)
    return open_base(root / other.stored_path, base=inner, threads=threads, owns_base=True)


_NOT_WEIGHTS = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state")


def weight_entries(
    manifest: FolderResult, root: Path, *, link_root: Path | None = None
) -> list[FolderEntry]:
    """The files of a compressed folder that hold the model's weights, as transformers
    picks them: the safetensors files (the shards ``*.safetensors.index.json`` names, when it
    is there), else the PyTorch ones (``*.bin.index.json``'s shards, else every ``.bin``,
    ``.pt`` and ``.pth`` that is not training state), else every GGUF and CTranslate2 file.
    A folder with both formats of the same weights gives one of them, in file order.
    ``link_root``: see :func:`read_manifest`."""
    files = {e.path: e for e in manifest.files}

    def suffix(e: FolderEntry) -> str:
        return PurePosixPath(e.path).suffix.lower()

    def indexed(kind: str) -> list[FolderEntry] | None:
        for e in manifest.files:
            if not e.path.endswith(f"{kind}.index.json") or e.stored != COPY:
                continue
            try:
                path = _inside(root, e.stored_path, root / MANIFEST, link_root)
                doc = json.loads(path.read_text("utf-8"))
                shards = set(doc["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise FormatError("unreadable shard index", path=root / e.path) from None
            parent = PurePosixPath(e.path).parent
            rels = sorted(str(parent / s) if str(parent) != "." else s for s in shards)
            missing = [r for r in rels if r not in files]
            if missing:
                raise FormatError(
                    f"shard index names missing files: {missing[:3]}", path=root / e.path
                )
            return [files[r] for r in rels]
        return None

    st = [e for e in manifest.files if suffix(e) == ".safetensors"]
    if st:
        return indexed(".safetensors") or st
    pt = [
        e
        for e in manifest.files
        if suffix(e) in (".bin", ".pt", ".pth")
        and not PurePosixPath(e.path).name.startswith(_NOT_WEIGHTS)
        and (e.format.startswith("torch") or e.stored == COPY)
    ]
    if pt:
        return indexed(".bin") or pt
    return [e for e in manifest.files if e.format in ("gguf", "ctranslate2")]


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
    from .files import verify_file

    t0 = time.perf_counter()
    root = Path(path)
    manifest = read_manifest(root)
    ticker = _Ticker(sum(e.size for e in manifest.files), progress)
    if against is not None:
        ref = Path(against)
        if not ref.is_dir():
            raise ZipmodelError("not a folder", path=ref)
        files, empty = _walk(ref, follow_symlinks=True)
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
            n, sha = _hash_file(stored, ticker.add)
            _check_entry(e, n, sha, stored)
            if other is not None:
                _check_entry(e, *_hash_file(other), other)
        else:
            cb = ticker.file()
            bm = _entry_base(e, manifest, root, base, threads, restored=False)
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
