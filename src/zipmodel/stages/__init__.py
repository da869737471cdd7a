"""Stages: reversible (or declared-lossy) transforms of a tensor's bytes into streams.

``TRANSFORMS`` maps the container's transform id to the transform; :func:`transform_for`
picks the lossless transform for a segment's dtype.
"""

from __future__ import annotations

from ..dtypes import get_dtype
from .base import Transform
from .split import Identity, SplitBF16, SplitF16, SplitF32

__all__ = ["TRANSFORMS", "Transform", "get_transform", "transform_for"]

TRANSFORMS: dict[int, Transform] = {
    t.transform_id: t for t in (Identity(), SplitBF16(), SplitF16(), SplitF32())
}
_BY_DTYPE = {"BF16": 1, "F16": 2, "F32": 3}


def get_transform(transform_id: int) -> Transform | None:
    """The transform with this container id, or ``None`` if this version has none."""
    return TRANSFORMS.get(transform_id)


def transform_for(dtype: str | None) -> Transform:
    """The lossless transform for a tensor of ``dtype`` (``identity`` for verbatim bytes)."""
    d = get_dtype(dtype) if dtype else None
    return TRANSFORMS[_BY_DTYPE.get(d.name, 0) if d else 0]
