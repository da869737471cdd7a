"""Stages: reversible (or declared-lossy) transforms of a tensor's bytes into streams.

``TRANSFORMS`` maps the container's transform id to the float transforms and
``BLOCK_TRANSFORMS`` to the GGUF block-field splits (:mod:`.gguf`); :func:`transform_for`
picks the lossless transform for a segment's dtype.

Tensor stages (:mod:`.tensor`: quantizers, base deltas) are named in the container; the
registry maps a name to its class. The modules that define stages are imported on first use
(``import zipmodel`` stays light): each exports ``STAGES``, a dict ``name -> class``.
:func:`register_stage` adds a stage from elsewhere (a plugin, a test).
"""

from __future__ import annotations

import importlib
import threading

from ..dtypes import get_dtype
from .base import Transform
from .gguf import BLOCK_SPLITS
from .split import Identity, SplitBF16, SplitF16, SplitF32

__all__ = [
    "BLOCK_TRANSFORMS",
    "TRANSFORMS",
    "Transform",
    "get_stage",
    "get_transform",
    "register_stage",
    "stage_classes",
    "transform_for",
]

TRANSFORMS: dict[int, Transform] = {
    t.transform_id: t for t in (Identity(), SplitBF16(), SplitF16(), SplitF32())
}
# The GGUF block splits (ids 32 and up) are plain numpy: nothing for the JIT warm-up to compile.
BLOCK_TRANSFORMS: dict[int, Transform] = {t.transform_id: t for t in BLOCK_SPLITS.values()}
# dtype -> transform id, from what each transform class says it is for
_BY_DTYPE = {t.dtype: t.transform_id for t in (*TRANSFORMS.values(), *BLOCK_TRANSFORMS.values())}
_BY_DTYPE.pop(None, None)


def get_transform(transform_id: int) -> Transform | None:
    """The transform with this container id, or ``None`` if this version has none."""
    return TRANSFORMS.get(transform_id) or BLOCK_TRANSFORMS.get(transform_id)


def transform_for(dtype: str | None) -> Transform:
    """The lossless transform for a tensor of ``dtype`` (``identity`` for verbatim bytes)."""
    d = get_dtype(dtype) if dtype else None
    t = get_transform(_BY_DTYPE.get(d.name, 0) if d else 0)
    assert t is not None
    return t


# Modules whose ``STAGES`` dicts make the registry (imported on first use).
STAGE_MODULES = ("zipmodel.stages.quant", "zipmodel.stages.ecsq", "zipmodel.stages.delta",
                 "zipmodel.stages.ggml")  # fmt: skip
_stages: dict[str, type] | None = None
_extra: dict[str, type] = {}
_stages_lock = threading.Lock()


def stage_classes() -> dict[str, type]:
    """Every known tensor stage: ``name -> TensorStage subclass``."""
    global _stages
    with _stages_lock:
        if _stages is None:
            merged: dict[str, type] = {}
            for mod in STAGE_MODULES:
                try:
                    m = importlib.import_module(mod)
                except ModuleNotFoundError as e:
                    if e.name != mod:  # the module exists but lacks a dependency: say so
                        raise
                    continue
                for name, cls in getattr(m, "STAGES", {}).items():
                    if name in merged and merged[name] is not cls:
                        raise RuntimeError(f"tensor stage {name!r} is defined twice")
                    merged[name] = cls
            _stages = merged
        return {**_stages, **_extra}


def get_stage(name: str) -> type | None:
    """The tensor stage class called ``name`` in the container, or ``None``."""
    return stage_classes().get(name)


def register_stage(cls: type) -> type:
    """Make the stage ``cls`` (a TensorStage subclass with a ``name``) known; returns it.

    A name is never reused with another meaning: registering a different class under a name
    already taken is an error.
    """
    from .tensor import TensorStage

    if not (isinstance(cls, type) and issubclass(cls, TensorStage)):
        raise TypeError(f"{cls!r} is not a TensorStage subclass")
    known = stage_classes().get(cls.name)
    if known is not None and known is not cls:
        raise ValueError(f"tensor stage name {cls.name!r} is taken by {known.__qualname__}")
    _extra[cls.name] = cls
    return cls
