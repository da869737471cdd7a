"""What a reader produces: an ordered list of segments covering every byte of a source once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_INDEX_JSON",
    "MAX_INDEX_OBJECTS",
    "MAX_INDEX_SEGMENTS",
    "TENSOR",
    "VERBATIM",
    "Layout",
    "Segment",
    "check_tiling",
]

VERBATIM = "verbatim"
TENSOR = "tensor"

# Caps on a container's index JSON (docs/format.md, "Limits"). A reader checks them before
# the memory is spent (a parsed JSON object costs some 10x its bytes, and empty segments cost
# no frame, so a small file could otherwise list millions of them); a source reader whose
# layout would exceed them falls back to opaque bytes, so every file written can be read.
MAX_INDEX_JSON = 64 << 20  # bytes of the JSON stream, checked before it is decompressed
MAX_INDEX_OBJECTS = 1 << 19  # JSON objects, counted while parsing
MAX_INDEX_SEGMENTS = 1 << 17  # segments (tensors and the verbatim runs between them)


@dataclass(frozen=True, slots=True)
class Segment:
    """A byte range of the source.

    A ``verbatim`` segment is opaque bytes (headers, padding, pickles); a ``tensor`` segment
    is the data of one tensor: its name, dtype (safetensors spelling) and shape.
    """

    kind: str
    offset: int
    size: int
    name: str | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None

    @property
    def end(self) -> int:
        return self.offset + self.size

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "offset": self.offset, "size": self.size}
        if self.kind == TENSOR:
            d.update(name=self.name, dtype=self.dtype, shape=list(self.shape or ()))
        return d


@dataclass
class Layout:
    """A source file described as segments, plus format-level metadata."""

    format: str
    size: int
    segments: list[Segment]
    metadata: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why a reader fell back to a simpler view, shown to the user

    def tensors(self) -> list[Segment]:
        return [s for s in self.segments if s.kind == TENSOR]


def check_tiling(segments: list[Segment], size: int) -> str | None:
    """Return what is wrong if ``segments`` do not cover ``[0, size)`` in order, else None."""
    pos = 0
    for i, s in enumerate(segments):
        if s.offset != pos:
            return f"segment {i} starts at {s.offset}, expected {pos}"
        if s.size < 0:
            return f"segment {i} has negative size {s.size}"
        pos += s.size
    if pos != size:
        return f"segments cover {pos} bytes, the source has {size}"
    return None
