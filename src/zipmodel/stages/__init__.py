"""Stages: reversible (or declared-lossy) transforms of a tensor's bytes into streams.

``TRANSFORMS`` maps the container's transform id to the float transforms and
``BLOCK_TRANSFORMS`` to the GGUF block-field splits (:mod:`.gguf`); :func:`transform_for`
picks the lossless transform for a segment's dtype.
"""

from __future__ import annotations

from ..dtypes import get_dtype
from .base import Transform
from .gguf import BLOCK_SPLITS
from .split import Identity, SplitBF16, SplitF16, SplitF32

__all__ = ["BLOCK_TRANSFORMS", "TRANSFORMS", "Transform", "get_transform", "transform_for"]

TRANSFORMS: dict[int, Transform] = {
    t.transform_id: t for t in (Identity(), SplitBF16(), SplitF16(), SplitF32())
}
# The GGUF block splits (ids 32 and up) are plain numpy: nothing for the JIT warm-up to compile.
BLOCK_TRANSFORMS: dict[int, Transform] = {t.transform_id: t for t in BLOCK_SPLITS.values()}
_BY_DTYPE = {"BF16": 1, "F16": 2, "F32": 3}
_BY_DTYPE.update((d, t.transform_id) for d, t in BLOCK_SPLITS.items())


def get_transform(transform_id: int) -> Transform | None:
    """The transform with this container id, or ``None`` if this version has none."""
    return TRANSFORMS.get(transform_id) or BLOCK_TRANSFORMS.get(transform_id)


def transform_for(dtype: str | None) -> Transform:
    """The lossless transform for a tensor of ``dtype`` (``identity`` for verbatim bytes)."""
    d = get_dtype(dtype) if dtype else None
    t = get_transform(_BY_DTYPE.get(d.name, 0) if d else 0)
    assert t is not None
    return t
