"""Lossy tensor stages: data-free, post-training quantizers (DESIGN §5).

Each stage takes an F32, F16 or BF16 tensor and stores it as parts (codes, scales, ...) that the
lossless stage then chunks and entropy-codes; decoding gives back the tensor's own dtype and
shape, dequantized. Integer tensors are never touched (``encode`` returns ``None``).

=========  ==========================================================================
stage      what is stored
=========  ==========================================================================
bf16       F32 → BF16, round to nearest even (optionally to fewer mantissa bits)
mantissa   the mantissa rounded to N bits (RNE), kept in the tensor's dtype: the
           float split then codes the zeroed low bits for ~nothing (elementwise)
fp8        E4M3 codes (saturating, RNE) × an F32 scale per output channel or tensor
int8       symmetric int8 codes × an F32 scale per output channel (row)
int4       4-bit codes, one per byte (U8 0..15), × a scale per group of 32-128
           elements (and a U8 zero point per group with ``asymmetric``)
nf4        QLoRA's NormalFloat-4 levels, one code per byte, × an absmax scale per group
=========  ==========================================================================

Choices (measured on all-MiniLM-L6-v2, see ``benches/lossy.py`` and docs/lossy.md):

* 4-bit codes are stored one per byte: the entropy coders then see the 16-symbol
  distribution and code it below 4 bits (3.72 bits for int4, 3.91 for nf4); two codes per
  byte came out within 0.5% of that either way (3.71 / 3.92), so the simpler layout stays.
* Group scales are BF16 (F32 only where a scale falls outside BF16's normal range): they
  code to ~0.04 bits per weight less than F16 with the same error. Per-channel scales
  (int8, fp8) are F32: one per row of hundreds of elements costs ~0.06 bits per weight.
* int4 and nf4 pick each group's scale from a small grid of clipping factors (1.0 down to
  0.75 of the group's largest magnitude) by the least squared error, computed with the
  scale as stored — so the stored error is what the search minimised. Asymmetric int4
  clips each end of the range on its own (6 × 6 factors: 0.1% less error than one factor
  for both ends on MiniLM, for ~1.7x its encode time).
* int8 (per channel) is absmax / 127 per row: its error is bounded (half a step, ~0.5% rel
  RMS on MiniLM) on every tensor. An entropy cap that coarsened the step is opt-in
  (``Int8Stage(entropy_cap=...)``, recorded in the params); ``--target-bits`` is the way to
  trade error for size (see :class:`Int8Stage`).
* Rounding of a finite value never gives inf or NaN: it saturates to the largest finite
  value. NaN and ±inf go through bf16 and mantissa rounding unchanged; the scaled
  quantizers cannot represent them and leave such tensors exact (``encode`` → ``None``).
* Rows: a tensor of 2 or more dimensions is viewed as ``[shape[0], -1]`` (output channels of
  a ``[out, in]`` weight); 0-d and 1-D tensors have one row. Groups run over the elements in
  storage order; the last group may be shorter.

``params`` describe decoding completely (group size, scale dtype, ...), so
``STAGES[name]().decode(...)`` needs nothing else.
"""

from __future__ import annotations

from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from ..dtypes import get_dtype
from ..options import GGML_PRESETS, GROUP_SIZES, PRESETS, LossyOptions
from .quant_common import (
    CLIP_FACTORS,
    FLOATS,
    INT4_LEVELS,
    MAX_GROUP,
    NF4_LEVELS,
    SCALE_DTYPES,
    Quantizer,
    as_bytes,
    as_stored,
    expand_groups,
    float_dtype_of,
    group_count,
    next_up,
    numel,
    param_int,
    per_group_rows,
    pick_scale_dtype,
    require,
    round_mantissa,
    scale_dtype_param,
    seg_rows,
)
from .quant_group import Int4Stage, Nf4Stage
from .tensor import Part, TensorStage

__all__ = [
    "CLIP_FACTORS",
    "FLOATS",
    "GROUP_SIZES",
    "INT4_LEVELS",
    "NF4_LEVELS",
    "PRESETS",
    "STAGES",
    "Bf16Stage",
    "Fp8Stage",
    "Int4Stage",
    "Int8Stage",
    "MantissaStage",
    "Nf4Stage",
    "make_stage",
]

E4M3_MAX = 448.0
# int8 with an entropy cap (opt-in): the cap the 2026-11-29 measurements used (see Int8Stage).
INT8_ENTROPY_CAP = 6.9
_SQRT_2PIE = float(np.sqrt(2 * np.pi * np.e))


# -- bf16 and mantissa rounding -----------------------------------------------------------


class Bf16Stage(Quantizer):
    """F32 → BF16 (round to nearest even; ``mantissa_bits`` < 7 rounds further, in one step)."""

    name: ClassVar[str] = "bf16"
    takes_nonfinite: ClassVar[bool] = True

    def __init__(self, mantissa_bits: int | None = None):
        if mantissa_bits is not None and not 0 <= mantissa_bits <= 7:
            raise ValueError(f"bf16 keeps at most 7 mantissa bits, not {mantissa_bits}")
        self.mantissa_bits = 7 if mantissa_bits is None else mantissa_bits

    def accepts(self, dtype: str) -> bool:
        return dtype == "F32"

    def quantize(self, x, seg, tensor):
        u = round_mantissa(tensor.view(np.uint32), 23, self.mantissa_bits)
        nan = np.isnan(x)
        u[nan] |= np.uint32(0x00400000)  # a NaN whose payload sat in the low bits stays NaN
        hi = (u >> np.uint32(16)).astype(np.uint16)
        part = Part("values", "BF16", as_bytes(hi), tuple(seg.shape or ()))
        return [part], {"mantissa_bits": self.mantissa_bits}

    def stored_bits(self, parts, params, dtype):
        return float(parts[0].data.size // 2 * (9 + params["mantissa_bits"]))

    def part_sizes(self, seg, params):
        require(seg.dtype == "F32", f"bf16 stage on a {seg.dtype} tensor")
        param_int(params, "mantissa_bits", 0, 7)
        return [2 * numel(seg.shape)]

    def dequantize(self, parts, seg, params):
        hi = parts[0].view(np.uint16).astype(np.uint32) << np.uint32(16)
        return hi.view(np.float32)


class MantissaStage(Quantizer):
    """Round the mantissa to ``bits`` bits (RNE), stored in the tensor's own dtype."""

    name: ClassVar[str] = "mantissa"
    elementwise: ClassVar[bool] = True
    takes_nonfinite: ClassVar[bool] = True

    def __init__(self, bits: int = 7):
        if not 0 <= bits <= 22:
            raise ValueError(f"mantissa bits must be in [0, 22], not {bits}")
        self.bits = bits

    def quantize(self, x, seg, tensor):
        d = get_dtype(seg.dtype)
        if self.bits >= d.mantissa_bits:
            return None  # nothing to round
        words = np.uint32 if d.bits == 32 else np.uint16
        r = round_mantissa(tensor.view(words), d.mantissa_bits, self.bits)
        return [Part("values", d.name, as_bytes(r), tuple(seg.shape or ()))], {"bits": self.bits}

    def stored_bits(self, parts, params, dtype):
        d = get_dtype(dtype)
        return float(parts[0].data.size // (d.bits // 8) * (1 + d.exponent_bits + params["bits"]))

    def part_sizes(self, seg, params):
        d = get_dtype(float_dtype_of(seg))
        param_int(params, "bits", 0, d.mantissa_bits - 1)
        return [seg.size]

    def decode(self, parts, out, seg, params, ctx, offset=0) -> None:
        # The stored values are the rounded tensor itself: any chunk decodes on its own.
        require(
            len(parts) == 1 and parts[0].size == out.size, "mantissa: part and output sizes differ"
        )
        out[:] = parts[0]


# -- fp8 and int8 (per output channel or per tensor) --------------------------------------


def _row_absmax(x: np.ndarray, rows: int) -> np.ndarray:
    return np.abs(x.reshape(rows, -1)).max(axis=1)


class Fp8Stage(Quantizer):
    """FP8 E4M3 codes (RNE, saturating at ±448) × an F32 scale per output channel or tensor."""

    name: ClassVar[str] = "fp8"

    def __init__(self, per_tensor: bool = False):
        self.per_tensor = per_tensor

    def quantize(self, x, seg, tensor):
        rows, cols = seg_rows(seg, self.per_tensor)
        scale = (_row_absmax(x, rows) / np.float32(E4M3_MAX)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1))
        with np.errstate(over="ignore"):  # a subnormal scale: saturated just below
            y = x.reshape(rows, cols) / safe[:, None]
        y = np.clip(y, -E4M3_MAX, E4M3_MAX)
        codes = y.astype(ml_dtypes.float8_e4m3fn)
        parts = [
            Part("codes", "F8_E4M3", as_bytes(codes), (rows, cols)),
            Part("scales", "F32", as_bytes(scale), (rows,)),
        ]
        return parts, {"per_tensor": self.per_tensor, "scale_dtype": "F32"}

    def part_sizes(self, seg, params):
        float_dtype_of(seg)
        require(isinstance(params.get("per_tensor"), bool), "fp8: per_tensor must be a boolean")
        require(scale_dtype_param(params) == "F32", "fp8: scales are F32")
        rows, _ = seg_rows(seg, params["per_tensor"])
        return [numel(seg.shape), 4 * rows]

    def dequantize(self, parts, seg, params):
        rows, cols = seg_rows(seg, params["per_tensor"])
        codes = parts[0].view(ml_dtypes.float8_e4m3fn).astype(np.float32).reshape(rows, cols)
        return codes * parts[1].view(np.float32)[:, None]


class Int8Stage(Quantizer):
    """Symmetric int8 codes in [-127, 127] × an F32 scale per output channel (row).

    The scale is the row's absmax / 127: the error is at most half a step, whatever the
    data. With ``entropy_cap`` (opt-in, recorded in the params) the step is never finer than
    the one that gives a Gaussian row that many bits of code entropy (``rms * sqrt(2 pi e) /
    2**entropy_cap``): 6.9 saved 0.38 bits per weight on all-MiniLM-L6-v2 but, as a silent
    default, coarsened one real conv tensor to 3.0% rel RMS (Q8_0: ~0.5%), so the preset
    no longer caps (issue 18); ``--target-bits`` trades error for size with a bound.

    ``group_size`` instead gives each run of that many elements its own absmax scale (BF16,
    as the 4-bit stages): GGUF Q8_0's layout at group 32, for comparisons at equal bits. The
    ``int8`` preset is per channel.
    """

    name: ClassVar[str] = "int8"

    def __init__(self, group_size: int | None = None, entropy_cap: float | None = None):
        if group_size is not None and not 1 <= group_size <= MAX_GROUP:
            raise ValueError(f"group size must be in [1, {MAX_GROUP}], not {group_size}")
        if entropy_cap is not None and not 1.0 <= entropy_cap <= 8.0:
            raise ValueError(f"int8 entropy cap must be in [1, 8] bits, not {entropy_cap}")
        self.group_size = group_size
        self.entropy_cap = entropy_cap

    def quantize(self, x, seg, tensor):
        if self.group_size:
            return self._quantize_groups(x, seg)
        rows, cols = seg_rows(seg)
        xr = x.reshape(rows, cols)
        scale = (_row_absmax(x, rows) / np.float32(127)).astype(np.float32)
        params: dict[str, Any] = {"scale_dtype": "F32"}
        if self.entropy_cap is not None:
            rms = np.sqrt(np.square(xr, dtype=np.float64).mean(axis=1))
            step = (rms * (_SQRT_2PIE / 2.0**self.entropy_cap)).astype(np.float32)
            scale = np.maximum(scale, step)
            params["entropy_cap"] = self.entropy_cap  # how the scales were chosen; not for decoding
        safe = np.where(scale > 0, scale, np.float32(1))
        with np.errstate(over="ignore"):
            y = np.rint(xr / safe[:, None])
        codes = np.clip(y, -127, 127).astype(np.int8)
        parts = [
            Part("codes", "I8", as_bytes(codes), (rows, cols)),
            Part("scales", "F32", as_bytes(scale), (rows,)),
        ]
        return parts, params

    def _quantize_groups(self, x, seg):
        g, n = self.group_size, x.size
        base = np.concatenate([np.abs(xg).max(axis=1) for _, xg in per_group_rows(x, g)])
        base = base / np.float32(127)
        sd = pick_scale_dtype(base)
        # the stored scale rounded to nearest may fall below absmax / 127 and clip the
        # group's largest value: per group, keep it or the next representable scale up,
        # whichever has the smaller squared error
        starts = np.arange(0, n, g)
        best_err = best_s = best_codes = None
        for s in (as_stored(base, sd), next_up(as_stored(base, sd), sd)):
            safe = expand_groups(np.where(s > 0, s, np.float32(1)), n, g)
            with np.errstate(over="ignore"):
                q = np.clip(np.rint(x / safe), -127, 127)
            err = np.add.reduceat(
                np.square(q * expand_groups(s, n, g) - x, dtype=np.float64), starts
            )
            if best_err is None:
                best_err, best_s, best_codes = err, s, q
                continue
            better = err < best_err
            best_s = np.where(better, s, best_s)
            best_codes = np.where(expand_groups(better, n, g), q, best_codes)
            best_err = np.where(better, err, best_err)
        parts = [
            Part("codes", "I8", as_bytes(best_codes.astype(np.int8)), tuple(seg.shape or ())),
            Part("scales", sd, as_bytes(best_s.astype(SCALE_DTYPES[sd])), (len(best_s),)),
        ]
        return parts, {"scale_dtype": sd, "group_size": g}

    def part_sizes(self, seg, params):
        float_dtype_of(seg)
        sd = scale_dtype_param(params)
        n = numel(seg.shape)
        if "group_size" in params:
            g = param_int(params, "group_size", 1, MAX_GROUP)
            return [n, group_count(n, g) * np.dtype(SCALE_DTYPES[sd]).itemsize]
        require(sd == "F32", "int8: per-channel scales are F32")
        rows, _ = seg_rows(seg)
        return [n, 4 * rows]

    def dequantize(self, parts, seg, params):
        codes = parts[0].view(np.int8).astype(np.float32)
        if "group_size" in params:
            s = parts[1].view(SCALE_DTYPES[params["scale_dtype"]]).astype(np.float32)
            return codes * expand_groups(s, codes.size, params["group_size"])
        rows, cols = seg_rows(seg)
        return codes.reshape(rows, cols) * parts[1].view(np.float32)[:, None]


STAGES: dict[str, type[TensorStage]] = {
    s.name: s for s in (Bf16Stage, MantissaStage, Fp8Stage, Int8Stage, Int4Stage, Nf4Stage)
}


def make_stage(
    preset: str | None = None, *, options: LossyOptions | None = None, **kwargs: Any
) -> TensorStage:
    """The stage for a ``--lossy`` preset (``None`` with ``mantissa_bits``: mantissa rounding).

    ``options`` is a :class:`~zipmodel.options.LossyOptions`; without it ``preset``
    and ``kwargs`` (its fields) make one, which checks the combination (``ValueError``).
    """
    if options is None:
        options = LossyOptions(preset=preset, **kwargs)
    elif preset is not None or kwargs:
        raise ValueError("give options= or the lossy keywords, not both")
    p, bits = options.preset, options.mantissa_bits
    if p is None:
        if bits is None:
            raise ValueError("give a lossy preset or mantissa bits")
        return MantissaStage(bits)
    if p == "bf16":
        return Bf16Stage(bits)
    if p == "fp8":
        return Fp8Stage(options.per_tensor)
    if p == "int8":
        return Int8Stage()
    if p == "int4":
        return Int4Stage(options.group_size, options.asymmetric)
    if p in GGML_PRESETS:  # the type itself (ggml_picker also picks fallbacks per tensor)
        from .ggml import ggml_stage

        return ggml_stage(p)
    return Nf4Stage(options.group_size)
