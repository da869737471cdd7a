"""ggml's block formats as lossy stages (issue 18): ``--lossy q4_k`` stores a tensor as the very
``block_q4_K`` blocks llama.cpp reads, so ``zipmodel export --to gguf`` writes them verbatim.

A tensor of shape ``(..., n)`` is quantized as rows of ``n`` (ggml's row is the innermost,
contiguous axis) with the byte-exact quantizers of :mod:`zipmodel.stages.kquant_blocks`. Its one
part, ``blocks``, has the GGUF block dtype (``GGUF_Q4_K``), so the lossless stage codes each
block field in a stream of its own (``stages.gguf.BLOCK_SPLITS``). Decoding dequantizes the
blocks (bit for bit as ``gguf.quants.dequantize``) and rounds to the tensor's own dtype.

=========  ====================  =========================================================
preset     stage (container)     block
=========  ====================  =========================================================
q3_k       ggml-q3_k             110 bytes / 256: 3.4375 bits
iq4_xs     ggml-iq4_xs           136 bytes / 256: 4.25 bits
q4_k       ggml-q4_k             144 bytes / 256: 4.5 bits
q5_k       ggml-q5_k             176 bytes / 256: 5.5 bits
q6_k       ggml-q6_k             210 bytes / 256: 6.5625 bits
q8_0       ggml-q8_0             34 bytes / 32: 8.5 bits
=========  ====================  =========================================================

Fallbacks, per tensor (:func:`choose_qtype`): a row that is not a multiple of the preset's
block (256) but is of 32 takes ``q8_0`` (the only 32-element type quantized here; llama.cpp
would take q5_0/q5_1/iq4_nl); any other row, and a tensor with NaN or inf (no faithful block
encoding), stays lossless. The fallback and its reason are recorded in the stage's params
(``fallback``) and shown by ``zipmodel info --tensors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..options import GGML_PRESETS
from ..readers.base import Segment
from .kquant_blocks import BLOCK, dequantize_blocks, quantize_blocks
from .quant_common import FLOATS, Quantizer, all_finite, float_dtype_of, numel, require
from .tensor import Part, TensorStage

__all__ = [
    "FALLBACK",
    "STAGES",
    "GgmlStage",
    "choose_qtype",
    "ggml_candidates",
    "ggml_picker",
    "ggml_stage",
    "gguf_dtype",
]

FALLBACK = "q8_0"  # what a row that fits no 256-block but 32-blocks takes


def gguf_dtype(qtype: str) -> str:
    """The zipmodel dtype of ``qtype``'s blocks (``q4_k`` -> ``GGUF_Q4_K``)."""
    return f"GGUF_{qtype.upper()}"


def row_of(shape: tuple[int, ...] | None) -> int:
    """ggml's row: the innermost dimension (a scalar is a row of one)."""
    return int(shape[-1]) if shape else 1


def choose_qtype(preset: str, shape: tuple[int, ...] | None) -> tuple[str | None, str | None]:
    """``(qtype, why)`` for a tensor of ``shape`` asked to be ``preset``: the preset when its
    rows are whole blocks, else :data:`FALLBACK` when they are whole 32-blocks, else ``None``
    (stays lossless); ``why`` says why it is not the preset (``None`` when it is)."""
    n = row_of(shape)
    block = BLOCK[preset][0]
    if n % block == 0:
        return preset, None
    why = f"rows of {n} are not a multiple of {block}"
    if n % BLOCK[FALLBACK][0] == 0:
        return FALLBACK, why
    return None, why


class GgmlStage(Quantizer):
    """One ggml block type: the tensor's rows as that type's blocks (see the module doc)."""

    qtype: ClassVar[str]

    def __init__(self, fallback: dict[str, str] | None = None):
        # {"from": preset, "reason": ...} when this type stands in for another preset
        self.fallback = fallback

    @classmethod
    def block(cls) -> tuple[int, int]:
        return BLOCK[cls.qtype]

    def quantize(self, x, seg, tensor):
        nblock, _ = self.block()
        n = row_of(seg.shape)
        if n % nblock:
            return None
        blocks = quantize_blocks(x.reshape(-1, n), self.qtype, threads=1).reshape(-1)
        part = Part("blocks", gguf_dtype(self.qtype), blocks, tuple(seg.shape or ()))
        params: dict[str, Any] = {}
        if self.fallback is not None:
            params["fallback"] = dict(self.fallback)
        return [part], params

    def part_sizes(self, seg, params):
        float_dtype_of(seg)
        fb = params.get("fallback")
        require(
            fb is None or (isinstance(fb, dict) and all(isinstance(v, str) for v in fb.values())),
            f"{self.name}: fallback must be a dict of strings",
        )
        nblock, nbytes = self.block()
        n = numel(seg.shape)
        require(row_of(seg.shape) % nblock == 0, f"{self.name}: rows are not whole blocks")
        return [n // nblock * nbytes]

    def dequantize(self, parts, seg, params):
        return dequantize_blocks(parts[0], self.qtype, numel(seg.shape))

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str | None:
        fb = params.get("fallback")
        if isinstance(fb, dict):
            return f"for {fb.get('from')}: {fb.get('reason')}"
        return None


def _stage_class(qtype: str) -> type[GgmlStage]:
    return type(
        f"Ggml{qtype.upper()}Stage",
        (GgmlStage,),
        {
            "qtype": qtype,
            "name": f"ggml-{qtype}",
            "__doc__": f"ggml {qtype.upper()} blocks ({BLOCK[qtype][1]} bytes per "
            f"{BLOCK[qtype][0]} elements).",
            "__module__": __name__,
        },
    )


# preset -> stage class; the names are written into containers and never change
CLASSES: dict[str, type[GgmlStage]] = {q: _stage_class(q) for q in GGML_PRESETS}
STAGES: dict[str, type[TensorStage]] = {c.name: c for c in CLASSES.values()}
# each preset's stage, and q8_0 standing in for each K-type (stages are stateless: shared)
_PLAIN = {q: c() for q, c in CLASSES.items()}


def ggml_stage(qtype: str, fallback_from: str | None = None, why: str | None = None) -> GgmlStage:
    """The stage for ``qtype``; with ``fallback_from``, recording that it stands in for that
    preset and why."""
    if fallback_from is None:
        return _PLAIN[qtype]
    return CLASSES[qtype]({"from": fallback_from, "reason": why or ""})


def ggml_candidates(tensor: np.ndarray, name: str) -> list[TensorStage]:
    """The ggml stages that apply to ``tensor`` (a float array of its shape; ``name`` for the
    record), in order of bits: those whose block divides its rows. Empty for a non-float,
    empty or non-finite tensor (the quantizers refuse NaN/inf)."""
    a = np.asarray(tensor)
    dtype = a.dtype.name
    if a.size == 0 or not (np.issubdtype(a.dtype, np.floating) or dtype == "bfloat16"):
        return []
    with np.errstate(invalid="ignore"):
        if not all_finite(a.astype(np.float32)):
            return []
    n = row_of(a.shape)
    return [_PLAIN[q] for q in GGML_PRESETS if n % BLOCK[q][0] == 0]


def ggml_picker(preset: str) -> Callable[[Segment], TensorStage | None]:
    """``seg -> stage`` for a tensor the rules selected (``stages.rules.lossy_chooser``) when
    ``preset`` is asked for: the preset or its fallback (:func:`choose_qtype`), ``None`` for a
    non-float tensor or a row no block fits."""
    if preset not in GGML_PRESETS:
        raise ValueError(f"{preset!r} is not a ggml preset ({', '.join(GGML_PRESETS)})")

    def pick(seg: Segment) -> TensorStage | None:
        if (seg.dtype or "") not in FLOATS:
            return None
        qtype, why = choose_qtype(preset, seg.shape)
        if qtype is None:
            return None
        return ggml_stage(qtype, preset if qtype != preset else None, why)

    return pick
