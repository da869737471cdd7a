"""A batch's plan and records: sources to items, content hashes, cheap stamps, and whether
a recorded output still holds (what ``zipmodel batch`` resumes from). No Dask here: the
client builds the plan, and the workers call :func:`hash_source`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ZipmodelError
from .formats import SUFFIX

__all__ = [
    "HASH_BLOCK",
    "RECORD",
    "WARM_ENV",
    "BatchItem",
    "file_sha256",
    "hash_source",
    "load_records",
    "plan",
    "read_manifest",
    "stamp",
    "stamps",
    "still_holds",
    "tree_files",
    "tree_sha256",
]

RECORD = "batch.jsonl"
# The level whose kernels a local batch's fork server loads (zipmodel.batchworker), set in
# that process's environment only.
WARM_ENV = "ZIPMODEL_BATCH_WARM"
HASH_BLOCK = 8 << 20


@dataclass
class BatchItem:
    """One source of a batch and what became of it (one line of ``batch.jsonl``)."""

    source: str
    output: str
    kind: str = "file"  # or "folder"
    base: str | None = None
    status: str = "pending"  # ok, failed, duplicate, skipped (resumed: recorded earlier)
    record: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None  # for a failed item: the exception, when it came back

    @property
    def source_bytes(self) -> int:
        return int(self.record.get("source_bytes", 0))

    @property
    def message(self) -> str:
        return str(self.record.get("message", ""))


def hash_source(source: str, kind: str) -> str:
    return tree_sha256(source) if kind == "folder" else file_sha256(source)


# -- content hashes and cheap stamps -----------------------------------------------------------
def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(HASH_BLOCK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def tree_files(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(relative path, path)`` of every file under ``root`` (symlinks to files included:
    a Hugging Face snapshot), sorted, so a folder hashes the same wherever it lies."""
    root = Path(root)
    found = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            p = Path(d) / name
            if p.is_file():
                found.append((p.relative_to(root).as_posix(), p))
    return sorted(found)


def tree_sha256(root: str | os.PathLike) -> str:
    """SHA-256 over a folder: of the lines ``relative path NUL file SHA-256`` in path order."""
    h = hashlib.sha256()
    for rel, p in tree_files(root):
        h.update(f"{rel}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def stamp(path: str | os.PathLike, kind: str) -> tuple[int, int]:
    """``(bytes, newest mtime_ns)`` of a file, or over a folder's files (a changed, added or
    removed file moves one of them, short of a same-size edit that keeps the times)."""
    if kind != "folder":
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    size, mtime, n = 0, 0, 0
    for _rel, p in tree_files(path):
        st = p.stat()
        size, mtime, n = size + st.st_size, max(mtime, st.st_mtime_ns), n + 1
    return size, mtime + n  # the file count moves it too


def stamps(source: str, output: str, kind: str) -> dict[str, int]:
    s, o = stamp(source, kind), stamp(output, kind)
    return {
        "source_size": s[0],
        "source_mtime_ns": s[1],
        "output_size": o[0],
        "output_mtime_ns": o[1],
    }


# -- planning: sources -> items ----------------------------------------------------------------
def read_manifest(path: str | os.PathLike) -> list[dict[str, str | None]]:
    """The lines ``{"source": PATH, "base": PATH?, "output": PATH?}`` of a JSONL manifest.

    Relative ``source`` and ``base`` paths are relative to the manifest's folder; a relative
    ``output`` to the batch's output folder.
    """
    where = Path(path).resolve().parent
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ZipmodelError(f"line {n}: not JSON ({e.msg})", path=path) from None
            if not isinstance(d, dict) or not isinstance(d.get("source"), str):
                raise ZipmodelError(f'line {n}: wants {{"source": PATH, ...}}', path=path)
            unknown = set(d) - {"source", "base", "output"}
            if unknown:
                raise ZipmodelError(f"line {n}: unknown keys {sorted(unknown)}", path=path)
            for k in ("base", "output"):
                if d.get(k) is not None and not isinstance(d[k], str):
                    raise ZipmodelError(f"line {n}: {k} must be a path", path=path)
            entries.append(
                {
                    "source": str(where / d["source"]),
                    "base": str(where / d["base"]) if d.get("base") else None,
                    "output": d.get("output"),
                }
            )
    return entries


def plan(
    entries: Iterable[Mapping[str, str | None]], out_dir: Path, default_base: str | None
) -> tuple[list[BatchItem], list[tuple[str, str]]]:
    """Items for the sources (absolute paths; output ``OUTDIR/NAME.zm`` unless named), and
    ``(source, message)`` for sources skipped on purpose (already compressed)."""
    from .folder import is_zm_folder

    items: list[BatchItem] = []
    skipped: list[tuple[str, str]] = []
    outputs: dict[str, str] = {}
    for e in entries:
        src = Path(os.path.abspath(e["source"]))
        base = e.get("base") or default_base
        kind = "folder" if src.is_dir() else "file"
        if src.name.endswith(SUFFIX) or (kind == "folder" and is_zm_folder(src)):
            skipped.append((str(e["source"]), f"{e['source']}: already compressed -- ignored"))
            continue
        out = out_dir / (e.get("output") or src.name + SUFFIX)
        out = Path(os.path.abspath(out))
        if str(out) in outputs:
            raise ZipmodelError(
                f"{outputs[str(out)]} and {src} would both be written to {out}",
                hint='name the outputs in a --manifest: {"source": ..., "output": ...}',
            )
        outputs[str(out)] = str(src)
        items.append(
            BatchItem(
                str(src),
                str(out),
                kind,
                os.path.abspath(base) if base else None,
            )
        )
    return items, skipped


def load_records(out_dir: str | os.PathLike) -> dict[tuple[str, str], dict[str, Any]]:
    """The last record per ``(source, output)`` in ``OUTDIR/batch.jsonl`` (a torn last line,
    from a client killed while writing it, is ignored)."""
    records: dict[tuple[str, str], dict[str, Any]] = {}
    path = Path(out_dir) / RECORD
    if not path.exists():
        return records
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
                records[(r["source"], r["item_output"])] = r
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def still_holds(item: BatchItem, rec: Mapping[str, Any] | None, options: dict) -> bool:
    """Whether ``rec`` (an earlier run's line) still describes ``item``: cheap stamps first,
    SHA-256 only where a stamp moved."""
    if rec is None or rec.get("status") not in ("ok", "duplicate"):
        return False
    if rec.get("base") != item.base or rec.get("options") != options:
        return False
    kind = rec.get("kind", "file")
    if kind != item.kind:
        return False
    try:
        for path, what in ((rec["output"], "output"), (item.source, "source")):
            moved = stamp(path, kind) != (rec[f"{what}_size"], rec[f"{what}_mtime_ns"])
            if moved and hash_source(path, kind) != rec[f"{what}_sha256"]:
                return False
    except (OSError, KeyError, TypeError):
        return False
    return True
