"""Which tensors a lossy stage touches.

Defaults keep exact what quantizing would hurt most for the least gain: norms and biases,
1-D tensors and small tensors (under ``min_elements``), and every tensor that is not a float
(integer, boolean and already-quantized block tensors are never touched). Embeddings *are*
quantized: they are often the largest tensor and quantize as well as any weight matrix (the
issue asks for it; DESIGN.md §5 had kept them). Patterns match the tensor's name with
shell-style globs (``fnmatch``, case-sensitive): ``keep`` excludes matching tensors, ``only``
restricts the stage to matching tensors; the default exclusions still apply inside ``only``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..readers.base import TENSOR, Segment
from .tensor import TensorStage

__all__ = ["FLOAT_DTYPES", "MIN_ELEMENTS", "TensorRules", "stage_chooser"]

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


def stage_chooser(
    stage: TensorStage, *, keep: Sequence[str] = (), only: Sequence[str] = ()
) -> Callable[[Segment], TensorStage | None]:
    """``seg -> stage`` for the tensors the rules select, ``None`` for the others."""
    rules = TensorRules(tuple(keep), tuple(only))

    def choose(seg: Segment) -> TensorStage | None:
        return stage if rules.selects(seg) else None

    return choose
