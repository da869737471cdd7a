"""Sizes per tensor and per dtype, computed from an index alone (no decoding).

One piece serves ``zipmodel info``, the summary after ``compress`` and the API's results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .codecs import codec_name
from .container.format import FILE_HEADER, TRAILER
from .container.index import Index
from .readers.base import TENSOR
from .stages import get_stage, get_transform

__all__ = ["DtypeSummary", "Summary", "TensorSummary", "summarize"]


@dataclass
class TensorSummary:
    name: str
    dtype: str
    shape: list[int]
    original_bytes: int
    compressed_bytes: int
    codecs: dict[str, int]  # codec name -> stream bytes (decoded) it coded
    transform: str  # the tensor stage ("int8", ...) if it went through one, else the transform
    stage: str | None = None  # the tensor stage, if any
    lossy: bool = False  # the stage was lossy: the tensor comes back dequantized
    quality: dict | None = None  # a lossy stage's measured error (zipmodel.quality sums)
    note: str | None = None  # the stage's note on how it stored the tensor (a fallback type)

    @property
    def ratio(self) -> float:
        return self.compressed_bytes / self.original_bytes if self.original_bytes else 1.0

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per element, everything included (codes, scales, entropy coding)."""
        n = 1
        for d in self.shape:
            n *= d
        return 8 * self.compressed_bytes / n if n else 0.0


@dataclass
class DtypeSummary:
    dtype: str  # "verbatim" for non-tensor bytes
    tensors: int = 0
    original_bytes: int = 0
    compressed_bytes: int = 0
    codecs: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.compressed_bytes / self.original_bytes if self.original_bytes else 1.0


@dataclass
class Summary:
    source_name: str
    source_format: str
    original_bytes: int
    container_bytes: int
    overhead_bytes: int  # file header, index and trailer
    sha256: str
    dtypes: list[DtypeSummary]
    tensors: list[TensorSummary]
    options: dict
    lossy: bool = False  # some tensors went through a lossy stage
    base: dict | None = None  # the base model tensor stages were given (name, sha256)

    @property
    def ratio(self) -> float:
        return self.container_bytes / self.original_bytes if self.original_bytes else 1.0

    def staged(self) -> list[TensorSummary]:
        return [t for t in self.tensors if t.stage is not None]

    def quality_total(self) -> dict | None:
        """Exact error totals over every lossy-staged tensor (``zipmodel.quality`` sums), plus
        their element count, original and stored bytes and stored bits per weight."""
        rows = [t for t in self.tensors if t.lossy and t.quality is not None]
        if not rows:
            return None
        from .quality import total

        d = total(t.quality for t in rows).to_json()
        n = sum(int(np.prod(t.shape, dtype=np.int64)) for t in rows)
        stored = sum(t.compressed_bytes for t in rows)
        d.update(
            tensors=len(rows),
            elements=n,
            original_bytes=sum(t.original_bytes for t in rows),
            compressed_bytes=stored,
            bits_per_weight=8 * stored / n if n else 0.0,
        )
        return d

    def to_json(self, *, tensors: bool = True) -> dict:
        d = {
            "source": {
                "name": self.source_name,
                "format": self.source_format,
                "bytes": self.original_bytes,
                "sha256": self.sha256,
            },
            "container_bytes": self.container_bytes,
            "overhead_bytes": self.overhead_bytes,
            "ratio": round(self.ratio, 6),
            "options": self.options,
            "dtypes": [dict(asdict(r), ratio=round(r.ratio, 6)) for r in self.dtypes],
        }
        d["lossy"] = self.lossy
        if self.base is not None:
            d["base"] = self.base
        if self.lossy:
            d["quality"] = self.quality_total()
        if tensors:
            d["tensors"] = [_tensor_json(t) for t in self.tensors]
        return d


def _tensor_json(t: TensorSummary) -> dict:
    d = dict(asdict(t), ratio=round(t.ratio, 6))
    if t.stage is None:
        for k in ("stage", "lossy", "quality"):
            d.pop(k)
    if t.note is None:
        d.pop("note")
    else:
        d["bits_per_weight"] = round(t.bits_per_weight, 4)
    return d


def summarize(index: Index, container_bytes: int) -> Summary:
    """Aggregate the index of a container of ``container_bytes`` bytes."""
    ch, st = index.chunks, index.streams
    nseg = len(index.segments)
    frame_bytes = ch["frame_size"].astype(np.int64)
    counts = np.array([e.n_chunks for e in index.segments], np.int64)
    chunk_seg = np.repeat(np.arange(nseg), counts)
    seg_comp = np.bincount(chunk_seg, weights=frame_bytes, minlength=nseg).astype(np.int64)
    stream_chunk = np.repeat(np.arange(len(ch)), ch["n_streams"].astype(np.int64))
    stream_seg = chunk_seg[stream_chunk] if len(st) else np.zeros(0, np.int64)
    # codec mix per segment: decoded stream bytes per (segment, codec)
    mix: dict[int, dict[str, int]] = {}
    if len(st):
        key = stream_seg * 256 + st["codec"].astype(np.int64)
        uniq, inv = np.unique(key, return_inverse=True)
        sums = np.bincount(inv, weights=st["decoded_size"].astype(np.int64))
        for k, v in zip(uniq.tolist(), sums.tolist()):
            mix.setdefault(k // 256, {})[codec_name(k % 256)] = int(v)
    dtypes: dict[str, DtypeSummary] = {}
    tensors = []
    for i, e in enumerate(index.segments):
        s = e.segment
        key = s.dtype if s.kind == TENSOR else "verbatim"
        row = dtypes.setdefault(key, DtypeSummary(key))
        row.original_bytes += s.size
        row.compressed_bytes += int(seg_comp[i])
        if e.dup_of is not None:  # stored once: restored from an earlier segment
            mix[i] = {"dup": s.size}
        for c, v in mix.get(i, {}).items():
            row.codecs[c] = row.codecs.get(c, 0) + v
        if s.kind == TENSOR:
            row.tensors += 1
            t = get_transform(int(ch["transform"][e.first_chunk])) if e.n_chunks else None
            rec = e.stage
            name = t.name if t else "none"
            if e.dup_of is not None:
                name = "dup"
            elif rec is not None:
                name = rec.name
            cls = get_stage(rec.name) if rec is not None else None
            tensors.append(
                TensorSummary(
                    s.name or "",
                    s.dtype or "",
                    list(s.shape or ()),
                    s.size,
                    int(seg_comp[i]),
                    mix.get(i, {}),
                    name,
                    rec.name if rec is not None else None,
                    bool(cls is not None and cls.lossy),
                    dict(rec.quality) if rec is not None and rec.quality is not None else None,
                    _note(cls, rec.params) if cls is not None else None,
                )
            )
    overhead = container_bytes - int(frame_bytes.sum())
    order = sorted(dtypes.values(), key=lambda r: (r.dtype == "verbatim", -r.original_bytes))
    return Summary(
        source_name=str(index.source.get("name", "")),
        source_format=str(index.source.get("format", "")),
        original_bytes=int(index.source.get("size", 0)),
        container_bytes=container_bytes,
        overhead_bytes=overhead,
        sha256=str(index.source.get("sha256", "")),
        dtypes=order,
        tensors=tensors,
        options=index.options,
        lossy=index.lossy,
        base=index.base,
    )


MIN_CONTAINER = FILE_HEADER.size + TRAILER.size


def _note(cls, params) -> str | None:
    try:
        return cls.describe(params)
    except Exception:  # a hostile or older record: no note rather than no summary
        return None
