"""What the quantizers share: their base class, the code books and scale dtypes, the group
arithmetic and the clipping search (the stages are in :mod:`zipmodel.stages.quant` and
:mod:`zipmodel.stages.quant_group`)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

from ..dtypes import numpy_dtype
from ..quality import measure
from ..readers.base import Segment
from .tensor import Part, StageContext, Staged, TensorStage

__all__ = [
    "ASYM_FACTORS",
    "CLIP_FACTORS",
    "FLOATS",
    "INT4_LEVELS",
    "MAX_GROUP",
    "NF4_LEVELS",
    "SCALE_DTYPES",
    "SEARCH_BLOCK",
    "Quantizer",
    "all_finite",
    "as_bytes",
    "as_stored",
    "as_values",
    "expand_groups",
    "float_dtype_of",
    "group_count",
    "level_codes",
    "measure_quality",
    "next_up",
    "numel",
    "param_int",
    "per_group_rows",
    "pick_scale_dtype",
    "require",
    "round_mantissa",
    "scale_dtype_param",
    "search_asym",
    "search_sym",
    "seg_rows",
    "store_values",
]

FLOATS = ("F32", "F16", "BF16")
MAX_GROUP = 1 << 16

# QLoRA's NF4 code book (Dettmers et al. 2023, as in bitsandbytes): quantiles of N(0, 1)
# scaled to [-1, 1], with an exact zero.
NF4_LEVELS = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=np.float32,
)
INT4_LEVELS = np.arange(-8, 8, dtype=np.float32)
# Clipping factors tried per group (fractions of the group's largest magnitude).
CLIP_FACTORS = tuple(1.0 - 0.025 * i for i in range(11))
ASYM_FACTORS = tuple(1.0 - 0.05 * i for i in range(6))  # per end of an asymmetric range
SEARCH_BLOCK = 1 << 18  # elements per search pass (bounds the temporaries)
SCALE_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
# -- helpers ------------------------------------------------------------------------------


def numel(shape: Sequence[int] | None) -> int:
    n = 1
    for d in shape or ():
        n *= int(d)
    return n


def seg_rows(seg: Segment, per_tensor: bool = False) -> tuple[int, int]:
    """``(rows, cols)``: output channels of a 2-D+ tensor, one row otherwise."""
    n = numel(seg.shape)
    shape = seg.shape or ()
    rows = shape[0] if len(shape) >= 2 and not per_tensor else 1
    return rows, (n // rows if rows else 0)


def as_values(tensor: np.ndarray, dtype: str) -> np.ndarray:
    """The tensor's elements as float32 (exact for F32, F16, BF16)."""
    return tensor.view(numpy_dtype(dtype)).astype(np.float32)


def store_values(values: np.ndarray, dtype: str, out: np.ndarray) -> None:
    """Write float32 ``values`` into ``out`` (uint8) as ``dtype``, rounding to nearest even."""
    out[:] = values.astype(numpy_dtype(dtype)).reshape(-1).view(np.uint8)


def as_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def round_mantissa(u: np.ndarray, mant: int, keep: int) -> np.ndarray:
    """Round IEEE bit patterns ``u`` (unsigned words) to ``keep`` mantissa bits, RNE.

    A carry out of the mantissa increments the exponent (the next binade); a finite value that
    would round to inf saturates to the largest finite value with ``keep`` bits; NaN and inf
    are returned unchanged.
    """
    drop = mant - keep
    if drop <= 0:
        return u.copy()
    t = u.dtype.type
    width = u.dtype.itemsize * 8
    sign = t(1 << (width - 1))
    exp_mask = t(((1 << (width - 1 - mant)) - 1) << mant)
    mag = u & t(~int(sign) & ((1 << width) - 1))
    low = t((1 << drop) - 1)
    lsb = (mag >> t(drop)) & t(1)
    r = (mag + t((1 << (drop - 1)) - 1) + lsb) & ~low  # < 2^(width-1): no overflow
    max_finite = t((int(exp_mask) - (1 << mant)) | (((1 << mant) - 1) & ~int(low)))
    r = np.minimum(r, max_finite)
    r = np.where((u & exp_mask) == exp_mask, mag, r)
    return r | (u & sign)


def all_finite(x: np.ndarray) -> bool:
    return bool(np.isfinite(x).all())


def measure_quality(
    x: np.ndarray, stored_bits: float, dtype: str, deq: np.ndarray
) -> dict[str, Any]:
    """Error of what decoding gives (``deq``, bytes of ``dtype``) and the bits stored."""
    return measure(x, deq.view(numpy_dtype(dtype)), stored_bits=stored_bits).to_json()


def require(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def param_int(params: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = params.get(key)
    require(
        isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
        f"stage param {key}={v!r} is not an integer in [{lo}, {hi}]",
    )
    return int(v)


def scale_dtype_param(params: dict[str, Any]) -> str:
    v = params.get("scale_dtype")
    require(v in SCALE_DTYPES, f"stage param scale_dtype={v!r} is not one of {list(SCALE_DTYPES)}")
    return str(v)


def float_dtype_of(seg: Segment) -> str:
    require(seg.dtype in FLOATS, f"tensor dtype {seg.dtype!r} is not one of {list(FLOATS)}")
    return str(seg.dtype)


class Quantizer(TensorStage):
    """Shared encode/decode: subclasses quantize float32 values and dequantize parts."""

    lossy: ClassVar[bool] = True
    takes_nonfinite: ClassVar[bool] = False  # bf16/mantissa carry NaN/inf through

    def accepts(self, dtype: str) -> bool:
        return dtype in FLOATS

    def encode(self, tensor: np.ndarray, seg: Segment, ctx: StageContext) -> Staged | None:
        dtype = seg.dtype or ""
        if not self.accepts(dtype) or numel(seg.shape) == 0:
            return None
        with np.errstate(invalid="ignore"):  # casting a signalling NaN warns
            x = as_values(tensor, dtype)
        if not self.takes_nonfinite and not all_finite(x):
            return None
        got = self.quantize(x, seg, tensor)
        if got is None:
            return None
        parts, params = got
        deq = np.empty(seg.size, np.uint8)
        self.decode([p.data for p in parts], deq, seg, params, ctx)
        return Staged(
            parts,
            params,
            measure_quality(x, self.stored_bits(parts, params, dtype), dtype, deq),
            restored=deq,
        )

    def stored_bits(self, parts: list[Part], params: dict[str, Any], dtype: str) -> float:
        """Bits the parts hold before entropy coding (4-bit codes count 4, not their byte)."""
        return float(sum(p.data.size for p in parts) * 8)

    def quantize(
        self, x: np.ndarray, seg: Segment, tensor: np.ndarray
    ) -> tuple[list[Part], dict[str, Any]] | None:
        """Parts and params for float32 values ``x`` (``tensor``: the same, as raw bytes)."""
        raise NotImplementedError

    def dequantize(
        self, parts: Sequence[np.ndarray], seg: Segment, params: dict[str, Any]
    ) -> np.ndarray:
        raise NotImplementedError

    def decode(self, parts, out, seg, params, ctx, offset=0) -> None:
        sizes = self.part_sizes(seg, params)
        require(len(parts) == len(sizes), f"{self.name}: {len(parts)} parts, expected {len(sizes)}")
        for p, n in zip(parts, sizes):
            require(p.size == n, f"{self.name}: part of {p.size} bytes, expected {n}")
        with np.errstate(invalid="ignore", over="ignore"):
            store_values(self.dequantize(parts, seg, params), float_dtype_of(seg), out)


# -- 4-bit per group: int4 (symmetric or with zero points) and nf4 ------------------------


def group_count(n: int, g: int) -> int:
    return -(-n // g)


def pick_scale_dtype(base: np.ndarray) -> str:
    """BF16 when every candidate scale is a normal BF16 number (or zero), else F32.

    Measured on all-MiniLM-L6-v2 (int4/nf4, group 64): BF16 scales code to 0.146/0.130
    bits per weight against F16's 0.188/0.173, and the error is the same to 4 digits (the
    clipping search sees the rounded scale).
    """
    a = np.abs(base)
    nz = a[a > 0]
    if nz.size == 0:
        return "BF16"
    lo = float(nz.min()) * CLIP_FACTORS[-1]
    return "BF16" if lo >= 2.0**-126 and float(nz.max()) < 3.3e38 else "F32"


def as_stored(s: np.ndarray, scale_dtype: str) -> np.ndarray:
    return s.astype(SCALE_DTYPES[scale_dtype]).astype(np.float32)


def next_up(s: np.ndarray, scale_dtype: str) -> np.ndarray:
    """The next scale above ``s`` (>= 0) representable in ``scale_dtype`` (0 stays 0)."""
    if scale_dtype == "F32":
        up = np.nextafter(s, np.float32(np.inf))
    else:
        bits = s.astype(SCALE_DTYPES[scale_dtype]).view(np.uint16)
        up = (bits + np.uint16(1)).view(SCALE_DTYPES[scale_dtype]).astype(np.float32)
    return np.where(s > 0, up, s).astype(np.float32)


def level_codes(y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest level (uint8) for each element of ``y`` (ties go down)."""
    if levels is INT4_LEVELS:
        return (np.clip(np.rint(y), -8, 7) + 8).astype(np.uint8)
    # 15 vector compares beat np.searchsorted's per-element binary search ~10x here
    q = np.zeros(y.shape, np.uint8)
    for m in (levels[1:] + levels[:-1]) / np.float32(2):
        q += y > m
    return q


def search_sym(xg: np.ndarray, base: np.ndarray, levels: np.ndarray, scale_dtype: str):
    """Per group (rows of ``xg``): the clipped scale with the least squared error, its codes."""
    best_err = np.full(xg.shape[0], np.inf)
    best_s = np.zeros(xg.shape[0], np.float32)
    best_q = np.zeros(xg.shape, np.uint8)
    for f in CLIP_FACTORS:
        s = as_stored(base * np.float32(f), scale_dtype)
        safe = np.where(s != 0, s, np.float32(1))[:, None]
        q = level_codes(xg / safe, levels)
        err = np.square(levels[q] * s[:, None] - xg).sum(axis=1, dtype=np.float64)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_q[better] = q[better]
    return best_s, best_q


def search_asym(xg: np.ndarray, lo: np.ndarray, hi: np.ndarray, scale_dtype: str):
    best_err = np.full(xg.shape[0], np.inf)
    best_s = np.zeros(xg.shape[0], np.float32)
    best_z = np.zeros(xg.shape[0], np.uint8)
    best_q = np.zeros(xg.shape, np.uint8)
    for fl, fh in itertools.product(ASYM_FACTORS, ASYM_FACTORS):
        # each end of the range clipped on its own
        s = as_stored((hi * np.float32(fh) - lo * np.float32(fl)) / np.float32(15), scale_dtype)
        safe = np.where(s != 0, s, np.float32(1))
        z = np.clip(np.rint(-lo * np.float32(fl) / safe), 0, 15).astype(np.uint8)
        zf = z.astype(np.float32)[:, None]
        q = np.clip(np.rint(xg / safe[:, None]) + zf, 0, 15).astype(np.uint8)
        err = np.square((q - zf) * s[:, None] - xg).sum(axis=1, dtype=np.float64)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, s, best_s)
        best_z = np.where(better, z, best_z)
        best_q[better] = q[better]
    return best_s, best_z, best_q


def per_group_rows(x: np.ndarray, g: int):
    """Yield ``(first_group, groups_array)`` blocks covering ``x``; the tail group alone."""
    n = x.size
    full = n // g
    step = max(1, SEARCH_BLOCK // g)
    for a in range(0, full, step):
        b = min(full, a + step)
        yield a, x[a * g : b * g].reshape(b - a, g)
    if n % g:
        yield full, x[full * g :].reshape(1, n - full * g)


def expand_groups(per_group: np.ndarray, n: int, g: int) -> np.ndarray:
    """Per-group values repeated over their elements (the tail group shorter)."""
    return np.repeat(per_group, g)[:n]
