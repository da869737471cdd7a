"""The folder manifest ``zipmodel.json``: its entries, reading it (untrusted input), writing it."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .. import __version__
from .._io import FileMeta, fsync_file, umask
from ..errors import (
    FormatError,
    UnsupportedError,
    ZipmodelError,
)
from ..formats import SUFFIX, WEIGHT_SUFFIXES

__all__ = [
    "COPY",
    "DEFAULT_MIN_SIZE",
    "MANIFEST",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "MAX_MANIFEST_BYTES",
    "SUFFIX",
    "WEIGHT_SUFFIXES",
    "ZM",
    "FolderEntry",
    "FolderResult",
    "Progress",
    "check_rel",
    "default_dir_output",
    "inside",
    "is_zm_folder",
    "read_manifest",
    "weight_entries",
    "write_manifest",
]


MANIFEST = "zipmodel.json"
MANIFEST_FORMAT = "zipmodel-folder"
MANIFEST_VERSION = 1
DEFAULT_MIN_SIZE = 1 << 20
COPY, ZM = "copy", "zm"
MAX_MANIFEST_BYTES = 64 << 20  # a million files is ~150 MB of JSON; real folders hold dozens
_SHA = re.compile(r"^[0-9a-f]{64}$")

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


def check_rel(rel: object, where: Path) -> str:
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


def inside(root: Path, rel: str, where: Path, link_root: Path | None = None) -> Path:
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


def write_manifest(path: Path, result: FolderResult) -> None:
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
        rel = check_rel(f.get("path"), mpath)
        stored = f.get("stored")
        if stored not in (COPY, ZM):
            raise FormatError(f"{rel}: 'stored' is {stored!r}, not 'copy' or 'zm'", path=mpath)
        stored_rel = check_rel(f.get("stored_path"), mpath)
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
    directories = [check_rel(d, mpath) for d in dirs]
    _check_unique([e.path for e in entries], directories, mpath, "path")
    _check_unique([e.stored_path for e in entries] + [MANIFEST], [], mpath, "stored_path")
    links = Path(link_root) if link_root is not None else None
    for e in entries:  # reading through a symlink planted in the folder must not escape it
        inside(root, e.stored_path, mpath, links)
    writer = doc.get("writer")
    return FolderResult(str(root), "", entries, directories, writer=str(writer or "?"))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_base(base: object, rel: str, earlier: set[str], where: Path) -> dict[str, str] | None:
    """A manifest entry's base: an earlier file of the folder, or a SHA-256 from outside."""
    if base is None:
        return None
    if isinstance(base, dict) and "path" in base:
        ref = check_rel(base["path"], where)
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
                path = inside(root, e.stored_path, root / MANIFEST, link_root)
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
