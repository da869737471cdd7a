"""Which tensors a lossy stage touches.

Defaults keep exact what quantizing would hurt most for the least gain: norms and biases,
1-D tensors and small tensors (under ``min_elements``), and every tensor that is not a float
(integer, boolean and already-quantized block tensors are never touched). Embeddings *are*
quantized: they are often the largest tensor and quantize as well as any weight matrix (the
issue asks for it; DESIGN.md §5 had kept them). Patterns match the tensor's name with
shell-style globs (``fnmatch``, case-sensitive): ``keep`` excludes matching tensors, ``only``
restricts the stage to matching tensors; the default exclusions still apply inside ``only``.

PyTorch checkpoints store *storages* (``archive/data/N``, 1-D); a storage that exactly one
state-dict tensor views whole and contiguously is judged by that tensor's name and shape
(:func:`tensor_views`). Storages shared by several tensors (tied weights) or viewed in part
are judged as they are: 1-D, so kept exact.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from ..options import GGML_PRESETS, LossyOptions
from ..readers.base import TENSOR, Layout, Segment
from .tensor import TensorStage

__all__ = [
    "FLOAT_DTYPES",
    "MIN_ELEMENTS",
    "TensorRules",
    "lossy_chooser",
    "stage_chooser",
    "tensor_views",
]

FLOAT_DTYPES = frozenset({"F32", "F16", "BF16"})
MIN_ELEMENTS = 4096
# Normalisation layers under the names common checkpoints give them (LayerNorm, RMSNorm,
# GroupNorm, BatchNorm; "ln_1", "ln_f", "norm1", "layer_norm", "input_layernorm", ...).
_NORM = re.compile(r"(^|[._])(ln(_?\w*)?|\w*norm\w*)([._]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class TensorRules:
    """Tensor selection: :meth:`reason` says why a tensor is kept exact (``None``: stage it)."""

    keep: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    min_elements: int = MIN_ELEMENTS

    def reason(self, seg: Segment) -> str | None:
        if seg.kind != TENSOR:
            return "not a tensor"
        name = seg.name or ""
        if (seg.dtype or "") not in FLOAT_DTYPES:
            return f"{seg.dtype} is not a float type"
        if self.only and not any(fnmatchcase(name, g) for g in self.only):
            return "not matched by --only"
        for g in self.keep:
            if fnmatchcase(name, g):
                return f"matched by --keep {g}"
        shape = seg.shape or ()
        n = 1
        for d in shape:
            n *= d
        if len(shape) < 2:
            return "1-D" if shape else "scalar"
        if n < self.min_elements:
            return f"small ({n} < {self.min_elements} elements)"
        last = name.rsplit(".", 1)[-1].lower()
        if last == "bias" or last.endswith("_bias"):
            return "a bias"
        if _NORM.search(name):
            return "a normalisation layer"
        return None

    def selects(self, seg: Segment) -> bool:
        return self.reason(seg) is None


def tensor_views(layout: Layout | None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``storage segment name -> (tensor name, shape)`` for the storages of a PyTorch
    checkpoint that one state-dict tensor views whole and contiguously (empty otherwise)."""
    meta: Any = layout.metadata.get("torch") if layout is not None else None
    if not isinstance(meta, dict):
        return {}
    tensors, storages = meta.get("tensors"), meta.get("storages")
    if not isinstance(tensors, dict) or not isinstance(storages, dict):
        return {}
    by_storage: dict[str, list[tuple[str, dict]]] = {}
    for name, t in tensors.items():
        if isinstance(t, dict) and isinstance(t.get("storage"), str):
            by_storage.setdefault(t["storage"], []).append((name, t))
    out = {}
    for key, views in by_storage.items():
        st = storages.get(key)
        if len(views) != 1 or not isinstance(st, dict) or not isinstance(st.get("segment"), str):
            continue
        name, t = views[0]
        shape, stride = t.get("shape"), t.get("stride")
        if not (
            isinstance(shape, list)
            and isinstance(stride, list)
            and len(shape) == len(stride)
            and all(type(d) is int and d >= 0 for d in shape + stride)
        ):
            continue
        numel, contiguous, step = 1, True, 1
        for d, k in zip(reversed(shape), reversed(stride)):
            if d > 1 and k != step:
                contiguous = False
            step *= d
            numel *= d
        if t.get("offset") == 0 and contiguous and numel == st.get("numel"):
            out[st["segment"]] = (name, tuple(shape))
    return out


def stage_chooser(
    stage: TensorStage | Callable[[Segment], TensorStage | None],
    *,
    keep: Sequence[str] = (),
    only: Sequence[str] = (),
    layout: Layout | None = None,
) -> Callable[[Segment], TensorStage | None]:
    """``seg -> stage`` for the tensors the rules select, ``None`` for the others.

    ``stage`` is one stage for them all, or a function that picks each selected tensor's
    stage (or ``None``) from its segment (the ggml presets: a type per tensor).

    With ``layout``, PyTorch storages are judged as the tensor that views them
    (:func:`tensor_views`).
    """
    rules = TensorRules(tuple(keep), tuple(only))
    views = tensor_views(layout)

    def choose(seg: Segment) -> TensorStage | None:
        v = views.get(seg.name or "")
        judged = replace(seg, name=v[0], shape=v[1]) if v is not None else seg
        if not rules.selects(judged):
            return None
        return stage(seg) if callable(stage) else stage

    return choose


def lossy_chooser(
    options: LossyOptions, layout: Layout | None = None
) -> Callable[[Segment], TensorStage | None] | None:
    """The stage chooser ``options`` ask for (its stage, under its ``keep``/``only`` rules;
    ``layout`` as in :func:`stage_chooser`), ``None`` when nothing lossy is asked for."""
    if not options.enabled:
        return None
    if options.targeted:
        raise ValueError(
            "target_bits/target_size need the tensors' values: zipmodel.compress_file "
            "allocates them (zipmodel.stages.allocate)"
        )
    if options.preset in GGML_PRESETS:  # a type per tensor: the preset or its fallback
        from .ggml import ggml_picker

        stage: TensorStage | Callable[[Segment], TensorStage | None] = ggml_picker(options.preset)
    else:
        from .quant import make_stage  # numpy and the quantizers, only when quantizing

        stage = make_stage(options=options)
    return stage_chooser(stage, keep=options.keep, only=options.only, layout=layout)
