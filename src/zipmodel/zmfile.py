"""Lazy, random access to a container's tensors: :func:`open` and :class:`ZmFile`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .basemodel import BaseModel, context_for
from .container.reader import ContainerReader
from .dtypes import get_dtype, numpy_dtype
from .pipeline import (
    check_context,
    decode_segment,
    iter_segments,
)
from .pipeline.chunk import decode_chunk_into
from .readers.base import TENSOR
from .stages.tensor import StageContext
from .summary import Summary, summarize

__all__ = ["TensorInfo", "ZmFile", "open"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    offset: int  # in the original file
    stage: str | None = None  # the tensor stage it went through (e.g. "int8"), if any
    quality: dict[str, Any] | None = None  # a lossy stage's measured error


def _as_tensor(seg, raw: np.ndarray) -> np.ndarray:
    """A segment's bytes as an array of its dtype and shape (unknown or packed dtypes: the
    bytes as they are)."""
    dt = get_dtype(seg.dtype or "")
    if dt is None or dt.itemsize == 0:
        return raw
    return raw.view(numpy_dtype(dt)).reshape(seg.shape)


class ZmFile:
    """Lazy, random access to the tensors of a container (see :func:`open`).

    Only the index is read up front; ``get_tensor`` reads and decodes only that tensor's
    frames. Thread-safe for concurrent ``get_tensor`` calls.
    """

    def __init__(
        self,
        file: str | os.PathLike | BinaryIO,
        *,
        threads: int = 0,
        context: StageContext | None = None,
        base: str | os.PathLike | BaseModel | None = None,
    ):
        self._reader = ContainerReader(file)
        self.name = self._reader.name
        self.threads = threads
        self._base: BaseModel | None = None  # a base opened here, closed with this file
        # Opened without the base it needs: the index (keys, info) reads; decoding raises.
        self._missing_base = context is None and base is None and bool(self._reader.index.base)
        try:
            if context is None and not self._missing_base:
                context, self._base = context_for(
                    self._reader.index, base, path=self.name, threads=threads
                )
            check_context(self._reader.index, context, path=self.name)
        except BaseException:
            self._reader.close()
            raise
        self.context = context
        self._entries = {
            e.segment.name: i
            for i, e in enumerate(self._reader.index.segments)
            if e.segment.kind == TENSOR
        }

    # -- metadata ------------------------------------------------------------------------
    @property
    def index(self):
        return self._reader.index

    @property
    def source(self) -> dict[str, Any]:
        """The original file: ``name``, ``size``, ``sha256``, ``format``."""
        return dict(self._reader.index.source)

    @property
    def bytes_read(self) -> int:
        """Bytes of the container read so far (index included)."""
        return self._reader.bytes_read

    def keys(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._entries)

    def metadata(self) -> dict[str, str] | None:
        """The source's own metadata (safetensors ``__metadata__``), if it had any."""
        return self._reader.index.metadata.get("__metadata__")

    @property
    def lossy(self) -> bool:
        """Whether some tensors went through a lossy stage (they come back dequantized)."""
        return self._reader.index.lossy

    def tensor_info(self, name: str) -> TensorInfo:
        e = self._reader.index.segments[self._entry(name)]
        s = e.segment
        if e.dup_of is not None:
            e = self._reader.index.segments[e.dup_of]
        rec = e.stage
        return TensorInfo(
            s.name or "",
            s.dtype or "",
            tuple(s.shape or ()),
            s.size,
            s.offset,
            rec.name if rec is not None else None,
            dict(rec.quality) if rec is not None and rec.quality is not None else None,
        )

    def summary(self) -> Summary:
        return summarize(self._reader.index, self._reader.file_size)

    # -- data ----------------------------------------------------------------------------
    def _entry(self, name: str) -> int:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.name}") from None

    def get_bytes(self, name: str) -> np.ndarray:
        """The raw bytes of tensor ``name`` as a uint8 array (decoding only its frames;
        dequantized for a tensor a lossy stage stored)."""
        if self._missing_base:  # raises, naming the base's SHA-256
            context_for(self._reader.index, None, path=self.name)
        return decode_segment(
            self._reader, self._entry(name), threads=self.threads, context=self.context
        )

    def get_segment(self, i: int) -> np.ndarray:
        """The bytes of the source's segment ``i`` (``index.segments`` order: verbatim headers
        and gaps as well as tensors), decoded; dequantized for a lossy-staged tensor."""
        if not 0 <= i < len(self._reader.index.segments):
            raise IndexError(f"{self.name} has no segment {i}")
        if self._missing_base:  # raises, naming the base's SHA-256
            context_for(self._reader.index, None, path=self.name)
        return decode_segment(self._reader, i, threads=self.threads, context=self.context)

    def get_part(self, name: str, part: str) -> np.ndarray:
        """The stored bytes (uint8) of part ``part`` of tensor ``name``, which a tensor stage
        stored (``"blocks"`` of a ggml stage, ``"codes"`` of int8, ...): its chunks decoded
        and checked, the stage not run. ``KeyError`` when the tensor has no such part."""
        idx = self._reader.index
        e = idx.segments[self._entry(name)]
        if e.dup_of is not None:
            e = idx.segments[e.dup_of]
        rec = e.stage
        p = next((p for p in rec.parts if p.name == part), None) if rec is not None else None
        if p is None:
            raise KeyError(f"tensor {name!r} in {self.name} has no stored part {part!r}")
        buf = np.empty(p.size, np.uint8)
        base = None
        for c in range(p.first_chunk, p.first_chunk + p.n_chunks):
            row = idx.chunks[c]
            off, size = int(row["src_offset"]), int(row["raw_size"])
            base = off if base is None else base  # a part's chunks follow each other
            decode_chunk_into(self._reader, c, buf[off - base : off - base + size])
        return buf

    def get_tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a numpy array of its dtype and shape (bfloat16 via ml_dtypes)."""
        s = self._reader.index.segments[self._entry(name)].segment
        return _as_tensor(s, self.get_bytes(name))

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, tensor)`` in file order, each a new array.

        Tensors decode ahead of the loop on ``threads`` threads, in one bounded window (about
        ``2 × threads`` MiB of chunks past the tensor being yielded; nothing more is started
        while the caller holds a tensor), so a file of many small tensors keeps every thread
        busy instead of decoding them one by one.
        """
        if self._missing_base:  # raises, naming the base's SHA-256
            context_for(self._reader.index, None, path=self.name)
        segs = self._reader.index.segments
        bufs: dict[int, np.ndarray] = {}

        def work() -> Iterator[tuple[int, np.ndarray]]:
            for i in self._entries.values():  # buffers are made as the window reaches them
                bufs[i] = np.empty(segs[i].segment.size, np.uint8)
                yield i, bufs[i]

        for i in iter_segments(self._reader, work(), threads=self.threads, context=self.context):
            s = segs[i].segment
            yield s.name or "", _as_tensor(s, bufs.pop(i))

    def close(self) -> None:
        self._reader.close()
        if self._base is not None:
            self._base.close()

    def __enter__(self) -> ZmFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ZmFile {self.name!r}: {len(self)} tensors>"


def open(
    file: str | os.PathLike | BinaryIO,
    *,
    threads: int = 0,
    context: StageContext | None = None,
    base: str | os.PathLike | BaseModel | None = None,
) -> ZmFile:
    """Open a container for lazy reading: ``keys()``, ``metadata()``, ``get_tensor(name)``.

    ``context`` is what tensor stages need to decode (the base model of a delta file);
    ``base`` gives that base as a file, ``.zm`` or folder instead (docs/delta.md). A delta
    file opened without its base still lists its tensors; reading one raises, naming the
    base's SHA-256. A different base fails here.
    """
    return ZmFile(file, threads=threads, context=context, base=base)
