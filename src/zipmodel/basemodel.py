"""Base models: the model a fine-tune is stored against (``--base`` / ``base=``).

A base is given as

* a file in any format zipmodel reads (safetensors, PyTorch ``.bin``/``.pt``, GGUF, ...):
  its tensors are read in place from the mapped file;
* a ``.zm`` container: tensors are decoded lazily, one at a time, when a delta needs them;
* a folder, plain or compressed (``zipmodel.json``): the file with the same relative path as
  the one being (de)compressed is the base of that file.

A base's *identity* is the SHA-256 of its original bytes: hashed for a plain file, and for a
``.zm`` (or a file of a compressed folder) the SHA-256 its index or manifest records for the
original, which is the same value. A container written against a base records that SHA-256
and name; reading it needs a base with the same SHA-256 (:meth:`BaseModel.check`).

A base tensor is a candidate for a delta only with the same name, dtype and shape; a tensor
whose bytes equal a base tensor of another name or shape (same dtype and size) is found by
content hash and stored as a reference to it (:func:`delta_chooser`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ._io import Source
from .errors import BaseMismatchError, ZipmodelError
from .formats import SUFFIX, WEIGHT_SUFFIXES
from .readers.base import TENSOR, Segment
from .stages.tensor import StageContext

__all__ = [
    "BaseMismatchError",
    "BaseModel",
    "context_for",
    "decode_context",
    "delta_chooser",
    "open_base",
    "resolve_base_file",
    "using_base",
]


class BaseModel:
    """An opened base: tensor bytes by segment, and the base's identity.

    ``get(seg)`` returns the base tensor's bytes (uint8, read-only) when the base has a tensor
    of ``seg``'s name, dtype and shape, else ``None``. Safe to call from several threads.
    """

    def __init__(self, path: str, name: str, entries: dict[str, Segment]):
        self.path = path
        self.name = name  # the original file's name (recorded in the container)
        self._entries = entries  # tensor name -> its segment in the base
        self._sha256: str | None = None
        self._keys: dict[tuple, str] | None = None

    # -- identity ------------------------------------------------------------------------
    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = self._hash()
        return self._sha256

    def _hash(self) -> str:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What a container records about its base: ``{"name", "sha256"}``."""
        return {"name": self.name, "sha256": self.sha256}

    def check(self, recorded: dict[str, Any], *, container: str) -> None:
        """Raise :class:`BaseMismatchError` unless this is the base ``recorded`` names."""
        want = recorded.get("sha256")
        if self.sha256 != want:
            raise BaseMismatchError(
                f"was compressed against base {recorded.get('name')!r} with SHA-256 {want}; "
                f"the base given, {self.path}, has SHA-256 {self.sha256}",
                path=container,
                hint="pass the base it was compressed against with --base (base=)",
            )

    # -- tensors -------------------------------------------------------------------------
    def candidate(self, seg: Segment) -> Segment | None:
        """The base's segment for ``seg`` when name, dtype and shape match."""
        if seg.kind != TENSOR or seg.name is None:
            return None
        b = self._entries.get(seg.name)
        if b is None or b.dtype != seg.dtype or tuple(b.shape or ()) != tuple(seg.shape or ()):
            return None
        return b if b.size == seg.size else None

    def shape_of(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name].shape or ())

    def get(self, seg: Segment) -> np.ndarray | None:
        b = self.candidate(seg)
        return None if b is None else self._read(b)

    def _read(self, b: Segment) -> np.ndarray:
        raise NotImplementedError

    def content_keys(self) -> dict[tuple, str]:
        """``(dtype, size, xxh3) -> tensor name`` of the base's tensors of at least
        :data:`~zipmodel.pipeline.DEDUP_MIN` bytes (the first name for repeated contents)."""
        if self._keys is None:
            self._keys = {}
            for seg in self._entries.values():
                if seg.size >= _dedup_min():
                    self._keys.setdefault(content_key(seg, self._read(seg)), seg.name or "")
        return self._keys

    def context(self) -> StageContext:
        """What the delta stages get: this base's tensors and its identity."""
        return StageContext(base=self.get, base_info=self.identity())

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        pass

    def __enter__(self) -> BaseModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r}: {len(self)} tensors>"


def _dedup_min() -> int:
    from .pipeline import DEDUP_MIN

    return DEDUP_MIN


def content_key(seg: Segment, data: np.ndarray) -> tuple:
    """What identifies a tensor's content for dedup: dtype, byte size and XXH3-64 (not the
    shape: a PyTorch storage holds a safetensors tensor's bytes as one flat array)."""
    from ._checksum import xxh3_64

    return (seg.dtype, seg.size, xxh3_64(data))


class _FileBase(BaseModel):
    """A base file zipmodel can read: tensors are views of the mapped file."""

    def __init__(self, path: Path, *, sha256: str | None = None, name: str | None = None):
        from .readers import read_layout

        self._source = Source.open(path)
        try:
            layout = read_layout(self._source.data, path=str(path))
        except BaseException:
            self._source.close()
            raise
        entries = {s.name: s for s in layout.tensors() if s.name is not None}
        super().__init__(str(path), name or path.name, entries)
        self._sha256 = sha256

    def _hash(self) -> str:
        h = hashlib.sha256()
        data = self._source.data
        for a in range(0, int(data.size), 8 << 20):
            h.update(data[a : a + (8 << 20)])
        return h.hexdigest()

    def _read(self, b: Segment) -> np.ndarray:
        return self._source.data[b.offset : b.end]

    def close(self) -> None:
        self._source.close()


class _ZmBase(BaseModel):
    """A ``.zm`` base: each tensor is decoded when first asked for, and a few are kept.

    Delta chunks of one tensor ask for its base one chunk at a time (and from several
    threads), so the decoded tensors are cached, least recently used first out, up to
    ``cache_bytes`` (a tensor larger than that is still kept while it is the latest).

    The base is decoded on a thread of its own, one chunk after another: the callers are
    workers of the decoding pool, and a base decoded on that same pool would wait for
    workers that wait for it (and would reuse their per-thread scratch buffers).
    """

    def __init__(
        self,
        path: Path,
        *,
        base: BaseModel | None = None,
        threads: int = 0,
        cache_bytes: int = 1 << 30,
        name: str | None = None,
        owns_base: bool = False,
    ):
        from .container.reader import ContainerReader
        from .pipeline import check_context

        self._inner = base if owns_base else None
        self._reader = ContainerReader(path)
        idx = self._reader.index
        # A .zm stored against a base of its own: opened without it, the index reads and
        # decoding raises (naming that base's SHA-256), as zipmodel.open does.
        self._missing_base = base is None and bool(idx.base)
        try:
            context, opened = (None, None)
            if not self._missing_base:
                context, opened = context_for(idx, base, path=self._reader.name, threads=1)
            check_context(idx, context, path=self._reader.name)
        except BaseException:
            self._reader.close()
            if self._inner is not None:
                self._inner.close()
            raise
        self._context, self._opened = context, opened
        self._index_of = {
            e.segment.name: i for i, e in enumerate(idx.segments) if e.segment.kind == TENSOR
        }
        entries = {
            e.segment.name: e.segment
            for e in idx.segments
            if e.segment.kind == TENSOR and e.segment.name is not None
        }
        super().__init__(str(path), name or str(idx.source.get("name") or path.name), entries)
        self._sha256 = str(idx.source["sha256"])
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="zipmodel-base")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def _hash(self) -> str:  # pragma: no cover - set from the index in __init__
        return str(self._reader.index.source["sha256"])

    def _decode(self, name: str) -> np.ndarray:
        from .pipeline import decode_segment

        if self._missing_base:  # raises, naming the base's SHA-256
            context_for(self._reader.index, None, path=self._reader.name)
        return decode_segment(self._reader, self._index_of[name], threads=1, context=self._context)

    def _read(self, b: Segment) -> np.ndarray:
        name = b.name or ""
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None:
                self._cache.move_to_end(name)
                return hit
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:  # one thread decodes a tensor; the others wait for it
            with self._lock:
                hit = self._cache.get(name)
            if hit is not None:
                return hit
            data = self._decoder.submit(self._decode, name).result()
            data.flags.writeable = False
            with self._lock:
                self._cache[name] = data
                total = sum(int(v.size) for v in self._cache.values())
                while len(self._cache) > 1 and total > self._cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    total -= int(old.size)
                self._loading.pop(name, None)
            return data

    def close(self) -> None:
        self._cache.clear()
        self._decoder.shutdown()
        self._reader.close()
        if self._opened is not None:
            self._opened.close()
        if self._inner is not None:
            self._inner.close()


def resolve_base_file(
    base_dir: Path, rel: str, *, exact: bool = False
) -> tuple[Path, dict[str, Any] | None]:
    """The file in the folder ``base_dir`` that is the base of the file at ``rel``.

    In a compressed folder the manifest entry of ``rel`` is used (its stored ``.zm`` or copy,
    and its recorded SHA-256); in a plain folder ``rel`` itself, else ``rel + ".zm"``. When
    ``rel`` is not there and the folder holds exactly one weight file, that one is the base
    (``compress ft/model.safetensors --base base_folder/``), unless ``exact``. Returns ``(path, manifest
    entry or None)``; raises :class:`BaseMismatchError` when nothing matches.
    """
    from .folder.manifest import MANIFEST, is_zm_folder, read_manifest

    if is_zm_folder(base_dir):
        manifest = read_manifest(base_dir)
        by_path = {e.path: e for e in manifest.files}
        e = by_path.get(rel)
        if e is None and not exact:
            weights = [x for x in manifest.files if x.path.endswith(WEIGHT_SUFFIXES)]
            e = weights[0] if len(weights) == 1 else None
        if e is None:
            raise BaseMismatchError(
                f"the compressed folder lists no {rel!r} in its {MANIFEST} to use as base",
                path=base_dir,
            )
        return base_dir / e.stored_path, {"sha256": e.sha256, "name": e.path}
    for cand in (base_dir / rel, base_dir / (rel + SUFFIX)):
        if cand.is_file():
            return cand, None
    if exact:
        raise BaseMismatchError(f"holds no {rel!r} to use as base", path=base_dir)
    weights = sorted(
        p for p in base_dir.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )
    if len(weights) == 1:
        return weights[0], None
    raise BaseMismatchError(
        f"holds no {rel!r} to use as base"
        + (f" (and {len(weights)} weight files to choose from)" if weights else ""),
        path=base_dir,
        hint="name the base file itself with --base",
    )


def open_base(
    path: str | os.PathLike | BaseModel,
    *,
    rel: str | None = None,
    threads: int = 0,
    exact: bool = False,
    sha256: str | None = None,
    name: str | None = None,
    base: BaseModel | None = None,
    owns_base: bool = False,
) -> BaseModel:
    """Open a base model: a file, a ``.zm``, or a folder (then ``rel`` picks the file).

    A :class:`BaseModel` is returned as it is. ``rel`` is the relative path (or file name) of
    the file the base is for; it is needed only when ``path`` is a folder, where ``exact``
    refuses the fallback to the folder's only weight file. ``sha256`` is a plain file's
    SHA-256 when the caller already checked it (it is then not hashed again), ``name`` the
    name recorded for it, ``base`` the base a ``.zm`` base was itself stored against (closed
    with it when ``owns_base``).
    """
    if isinstance(path, BaseModel):
        return path
    p = Path(path)
    if not p.exists():
        raise ZipmodelError("no such base file or folder", path=p)
    sha = None
    if p.is_dir():
        if rel is None:
            raise BaseMismatchError("the base is a folder; name the file", path=p)
        p, entry = resolve_base_file(p, rel, exact=exact)
        if entry is not None:
            sha, name = entry["sha256"], Path(entry["name"]).name
    if _is_container(p):
        zm = _ZmBase(p, threads=threads, name=name, base=base, owns_base=owns_base)
        if sha is not None and zm.sha256 != sha:
            zm.close()
            raise BaseMismatchError(
                f"records SHA-256 {zm.sha256}, its folder's manifest {sha}", path=p
            )
        return zm
    return _FileBase(p, sha256=sha256, name=name)


def _is_container(p: Path) -> bool:
    from .container.format import FILE_MAGIC

    try:
        with open(p, "rb") as f:
            return f.read(len(FILE_MAGIC)) == FILE_MAGIC
    except OSError:
        return False


def context_for(
    index: Any,
    base: str | os.PathLike | BaseModel | None,
    *,
    path: str | os.PathLike | None = None,
    threads: int = 0,
) -> tuple[StageContext | None, BaseModel | None]:
    """The stage context to decode a container whose index is ``index``, with ``base``.

    A container written against a base (its index records the base's name and SHA-256)
    needs that base: none given, or one with another SHA-256, raises
    :class:`BaseMismatchError` naming the SHA-256 expected (and the base given). A base given
    for a container that needs none is ignored. Returns ``(context, opened base)``; the
    caller closes the base (``None`` when none was opened here).
    """
    want = getattr(index, "base", None)
    if not want:
        return None, None
    name = want.get("name") or "?"
    if base is None:
        raise BaseMismatchError(
            f"was compressed against base {name!r} with SHA-256 {want.get('sha256')}; "
            "decoding it needs that base",
            path=path,
            hint="pass the base model with --base BASE (base= in Python)",
        )
    opened = None if isinstance(base, BaseModel) else base
    rel = str(index.source.get("name") or name)
    bm = open_base(base, rel=rel, threads=threads)
    try:
        bm.check(want, container=os.fspath(path) if path is not None else "<container>")
    except BaseException:
        if opened is not None:
            bm.close()
        raise
    return bm.context(), (bm if opened is not None else None)


def delta_chooser(
    data: np.ndarray,
    segments: Any,
    base: BaseModel,
    *,
    level: str = "default",
    chunk_size: int = 1 << 20,
    threads: int = 0,
    content: bool = True,
) -> tuple[Any, StageContext]:
    """The stage chooser and context that store ``segments`` against ``base``: per tensor the
    smallest of standalone, ``xor``, ``sub``, or ``same`` (see :func:`plan_deltas`). With
    ``content``, a tensor equal to a base tensor of another name (found by content hash) is
    ``same`` with that name (a reference costs its index entry)."""
    from .pipeline.deltas import plan_deltas
    from .stages.delta import SameAsBase

    ctx = base.context()
    chosen = plan_deltas(data, segments, ctx, level=level, chunk_size=chunk_size, threads=threads)
    if content:  # tensors the base holds under another name: stored as a reference
        keys = base.content_keys()
        for seg in segments:
            if seg.kind != TENSOR or seg.size < _dedup_min() or seg.offset in chosen:
                continue
            ref = keys.get(content_key(seg, data[seg.offset : seg.end]))
            if ref is not None:
                chosen[seg.offset] = SameAsBase(ref, base.shape_of(ref))
    return (lambda seg: chosen.get(seg.offset)), ctx


@contextlib.contextmanager
def using_base(
    base: str | os.PathLike | BaseModel | None, *, rel: str | None = None, threads: int = 0
) -> Iterator[BaseModel | None]:
    """Open ``base`` for the duration (one given already open is left open)."""
    if base is None or isinstance(base, BaseModel):
        yield base
        return
    bm = open_base(base, rel=rel, threads=threads)
    try:
        yield bm
    finally:
        bm.close()


@contextlib.contextmanager
def decode_context(
    index: Any,
    base: str | os.PathLike | BaseModel | None,
    context: StageContext | None,
    *,
    path: str | os.PathLike | None = None,
    threads: int = 0,
) -> Iterator[StageContext | None]:
    """The context to decode ``index``'s container: ``context`` when given, else one for
    ``base`` (see :func:`context_for`: a missing or wrong base raises, naming the SHA-256)."""
    if context is not None:
        yield context
        return
    ctx, opened = context_for(index, base, path=path, threads=threads)
    try:
        yield ctx
    finally:
        if opened is not None:
            opened.close()
