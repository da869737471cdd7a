"""Slow, obviously correct references for the quantizers in zipmodel.stages.quant.

One element at a time in Python numbers: rounding to nearest even with ``round()`` on exact
binary fractions, nearest levels by trying every level, FP8 by enumerating all 256 codes.
The arithmetic that decides a code is done in float32 where the stage does it in float32, so
the codes must agree exactly.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

F32 = np.float32


def round_to_bits(x: float, keep: int, emin: int, max_finite: float) -> float:
    """``x`` rounded to ``keep`` mantissa bits (RNE) in a format whose smallest normal
    exponent is ``emin``; saturates at ``max_finite``; NaN and inf unchanged."""
    if not math.isfinite(x) or x == 0:
        return x
    _, e = math.frexp(x)  # x = m * 2**e, 0.5 <= |m| < 1
    spacing = 2.0 ** (max(e, emin + 1) - 1 - keep)
    q = abs(x) / spacing  # exact: a power-of-two scaling
    r = math.copysign(round(q) * spacing, x)  # round() on a float rounds half to even
    if keep == 0 and q == 1.5:
        # a tie with no mantissa bit left: "even" is the candidate whose bit pattern ends in
        # 0, i.e. whose biased exponent is even (2^E or 2^(E+1))
        lo = spacing
        biased = math.frexp(lo)[1] - 1 + (1 - emin)
        r = math.copysign(lo if biased % 2 == 0 else 2 * lo, x)
    if abs(r) > max_finite:
        r = math.copysign(max_finite, x)
    return math.copysign(r, x) if r == 0 else r


def max_finite(exp_bits: int, keep: int) -> float:
    bias = (1 << (exp_bits - 1)) - 1
    return (2.0 - 2.0**-keep) * 2.0**bias


def bf16(x: np.ndarray, keep: int = 7) -> np.ndarray:
    """F32 → BF16 values (as float32) rounded to ``keep`` mantissa bits."""
    with np.errstate(invalid="ignore"):
        vals = x.astype(np.float64).reshape(-1)
    out = [round_to_bits(float(v), keep, -126, max_finite(8, keep)) for v in vals]
    return np.array(out, dtype=F32).reshape(x.shape)


def mantissa(x: np.ndarray, keep: int) -> np.ndarray:
    """Mantissa rounding in ``x``'s own dtype (F32, F16 or BF16)."""
    exp_bits = {4: 8, 2: 5 if x.dtype == np.float16 else 8}[x.dtype.itemsize]
    emin = 2 - (1 << (exp_bits - 1))
    with np.errstate(invalid="ignore"):  # signalling NaNs warn when cast
        vals = x.astype(np.float64).reshape(-1)
        out = [round_to_bits(float(v), keep, emin, max_finite(exp_bits, keep)) for v in vals]
        return np.array(out, dtype=np.float64).astype(x.dtype).reshape(x.shape)


_E4M3 = np.arange(256, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float64)


def e4m3_code(y: float) -> int:
    """The E4M3 code nearest to ``y`` (ties to the even code), saturating at ±448."""
    y = min(max(y, -448.0), 448.0)
    best = None
    for c in range(256):
        v = _E4M3[c]
        if math.isnan(v):
            continue
        d = abs(v - y)
        if best is None or d < best[0] or (d == best[0] and c % 2 == 0 and best[1] % 2 == 1):
            best = (d, c)
    code = best[1]
    if _E4M3[code] == 0 and math.copysign(1, y) < 0:  # -0.0 keeps its sign
        code = 0x80
    return code


def rows_of(x: np.ndarray, per_tensor: bool = False) -> np.ndarray:
    rows = x.shape[0] if x.ndim >= 2 and not per_tensor else 1
    return x.reshape(rows, -1)


def fp8(x: np.ndarray, per_tensor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 [rows, cols], scales float32 [rows])."""
    r = rows_of(x.astype(F32), per_tensor)
    codes = np.zeros(r.shape, np.uint8)
    scales = np.zeros(r.shape[0], F32)
    for i, row in enumerate(r):
        s = F32(max(abs(float(v)) for v in row)) / F32(448)
        scales[i] = s
        for j, v in enumerate(row):
            y = float(F32(v) / s) if s > 0 else float(v)
            codes[i, j] = e4m3_code(y if math.isfinite(y) else math.copysign(448.0, y))
    return codes, scales


def int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes int8 [rows, cols], scales float32 [rows])."""
    r = rows_of(x.astype(F32))
    codes = np.zeros(r.shape, np.int8)
    scales = np.zeros(r.shape[0], F32)
    for i, row in enumerate(r):
        s = F32(max(abs(float(v)) for v in row)) / F32(127)
        scales[i] = s
        for j, v in enumerate(row):
            y = float(F32(v) / s) if s > 0 else float(v)
            codes[i, j] = max(-127, min(127, round(y)))
    return codes, scales


def nearest_level(y: float, levels: np.ndarray) -> int:
    """Index of the level closest to ``y`` (the lower one on a tie)."""
    d = [abs(float(v) - y) for v in levels]
    return d.index(min(d))


def group_error(xg: np.ndarray, deq: np.ndarray) -> float:
    return sum((float(a) - float(b)) ** 2 for a, b in zip(xg, deq))


def groups_of(x: np.ndarray, g: int) -> list[np.ndarray]:
    flat = x.astype(F32).reshape(-1)
    return [flat[a : a + g] for a in range(0, flat.size, g)]


def sym_group(xg: np.ndarray, levels: np.ndarray, scale: float) -> tuple[list[int], np.ndarray]:
    """Codes of one group for a given (stored) scale, and the dequantized values."""
    s = F32(scale)
    codes = [nearest_level(float(F32(v) / s) if s != 0 else 0.0, levels) for v in xg]
    return codes, np.array([F32(levels[c]) * s for c in codes], dtype=F32)


def asym_group(xg: np.ndarray, scale: float, zero: int) -> tuple[list[int], np.ndarray]:
    s = F32(scale)
    codes = [max(0, min(15, round(float(F32(v) / s) if s != 0 else 0.0) + zero)) for v in xg]
    return codes, np.array([F32(c - zero) * s for c in codes], dtype=F32)
