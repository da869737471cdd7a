"""Entropy-coded scalar quantization (``ecsq``): codes ``q = round(x / step)`` with one absolute
step per tensor, no scales; the lossless stage's entropy coders then spend the bits.

Why: with codes entropy-coded, a uniform quantizer's squared error is about ``step² / 12`` per
weight whatever the tensor's spread, and its rate follows the spread. One step (or one rate /
error trade-off, :mod:`zipmodel.stages.allocate`) over every tensor is then the allocation that
minimises total squared error at a budget (reverse water-filling), with no group scales to pay
for. Measured against llama.cpp's K-quants in ``benches/lossy.py``.

Encoding (``rounding`` r, 0 < r <= 0.5): ``m = floor(|x| / step + r)``, ``q = sign(x) · m``;
r = 0.5 is rounding to nearest, a smaller r widens the zero bin and pulls every threshold up
(a dead zone, which saves rate at low bits). Decoding: ``(q - sign(q) · offset) · step`` in
float32, then the tensor's dtype (round to nearest even); ``offset`` (0 <= offset < 1) moves
every nonzero level toward zero onto the mean of its values (the centroid), chosen by least
squares at encoding (:func:`best_offset`).

Parts: ``codes`` (I8, the tensor's shape viewed as rows) with -128 an escape, and, only when a
code falls outside [-127, 127], ``escapes`` (I32: those codes in storage order). ``params``:
``step`` (a float32 value), ``offset``, ``escapes`` (their count), ``rounding`` (how the codes
were made; not needed to decode).

:func:`rd_points` gives, for a tensor and a ladder of steps, the exact squared error and the
order-0 code entropy of each, from one sort and prefix sums (no pass over the tensor per step):
what the allocator needs.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .quant_common import Quantizer, as_bytes, float_dtype_of, numel, require, seg_rows
from .tensor import Part

__all__ = ["ESCAPE", "MAX_CODE", "STAGES", "EcsqStage", "best_offset", "ecsq_codes", "rd_points"]

MAX_CODE = 127  # codes in [-127, 127] are stored in the I8 part itself
ESCAPE = -128  # the I8 code of a value whose code is in the ``escapes`` part


def ecsq_codes(x: np.ndarray, step: float, rounding: float = 0.5) -> np.ndarray:
    """``sign(x) · floor(|x| / step + rounding)`` as int64 (``x`` float32, finite)."""
    a = np.abs(x, dtype=np.float64) / np.float64(np.float32(step))
    m = np.floor(a + rounding).astype(np.int64)
    return np.where(x < 0, -m, m)


def best_offset(x: np.ndarray, q: np.ndarray, step: float) -> float:
    """The offset (toward zero, in steps) of the nonzero levels with the least squared error:
    the mean of ``|q| - |x| / step`` over nonzero codes, clipped to [0, 0.5]."""
    nz = q != 0
    if not nz.any():
        return 0.0
    d = np.abs(q[nz]).astype(np.float64) - np.abs(x[nz], dtype=np.float64) / np.float32(step)
    return float(np.float32(min(max(d.mean(), 0.0), 0.5)))


def _dequantize(q: np.ndarray, step: float, offset: float) -> np.ndarray:
    qf = q.astype(np.float32)
    if offset:
        qf = qf - np.sign(qf) * np.float32(offset)
    return qf * np.float32(step)


class EcsqStage(Quantizer):
    """ECSQ codes with one absolute ``step`` per tensor (see the module docstring).

    ``centroid``: store the least-squares ``offset`` (else 0). ``EcsqStage()`` (no step)
    only decodes: the registry makes stages that way from a container's record.
    """

    name: ClassVar[str] = "ecsq"

    def __init__(self, step: float | None = None, rounding: float = 0.5, centroid: bool = True):
        self.step: float | None = None
        self.rounding = float(rounding)
        self.centroid = centroid
        if not 0.0 < rounding <= 0.5:
            raise ValueError(f"ecsq rounding must be in (0, 0.5], not {rounding}")
        if step is None:
            return
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"ecsq step must be a positive number, not {step}")
        s32 = float(np.float32(step))
        if not (math.isfinite(s32) and s32 > 0):
            raise ValueError(f"ecsq step {step} is not a positive float32 number")
        self.step = s32

    def quantize(self, x, seg, tensor):
        if self.step is None:
            raise ValueError("EcsqStage() without a step only decodes")
        q = ecsq_codes(x, self.step, self.rounding)
        if q.size and int(np.abs(q).max()) >= 2**31:
            return None  # a step far below the values' size: no I32 escape holds them
        offset = best_offset(x, q, self.step) if self.centroid else 0.0
        rows, cols = seg_rows(seg)
        out = np.abs(q) > MAX_CODE
        codes = np.where(out, ESCAPE, q).astype(np.int8)
        parts = [Part("codes", "I8", as_bytes(codes), (rows, cols))]
        n_esc = int(out.sum())
        if n_esc:
            esc = q[out].astype(np.int32)  # |q| <= |x|max / step: float32 range / tiny step fits
            parts.append(Part("escapes", "I32", as_bytes(esc), (n_esc,)))
        params = {
            "step": self.step,
            "offset": offset,
            "escapes": n_esc,
            "rounding": self.rounding,
        }
        return parts, params

    def part_sizes(self, seg, params):
        float_dtype_of(seg)
        step, offset = params.get("step"), params.get("offset")
        require(
            isinstance(step, float) and math.isfinite(step) and step > 0,
            f"ecsq: step {step!r} is not a positive number",
        )
        require(
            isinstance(offset, (int, float)) and not isinstance(offset, bool) and 0 <= offset < 1,
            f"ecsq: offset {offset!r} is not in [0, 1)",
        )
        n = numel(seg.shape)
        esc = params.get("escapes")
        require(
            isinstance(esc, int) and not isinstance(esc, bool) and 0 <= esc <= n,
            f"ecsq: escapes {esc!r} is not a count in [0, {n}]",
        )
        return [n, 4 * esc] if esc else [n]

    def dequantize(self, parts, seg, params):
        codes = parts[0].view(np.int8)
        esc_at = codes == ESCAPE
        n_esc = params["escapes"]
        require(int(esc_at.sum()) == n_esc, "ecsq: escape codes and the escapes part disagree")
        if n_esc:
            q = codes.astype(np.int64)
            q[esc_at] = parts[1].view("<i4")
        else:
            q = codes
        return _dequantize(q, params["step"], params["offset"])

    def stored_bits(self, parts, params, dtype):
        return float(sum(p.data.size for p in parts) * 8)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str | None:
        """The parameters ``info --tensors`` shows: step, offset, escaped codes."""
        step, off = params.get("step"), params.get("offset")
        if not isinstance(step, float) or not isinstance(off, (int, float)):
            return None
        text = f"step {step:.4g}, offset {off:.3f}"
        if params.get("escapes"):
            text += f", {params['escapes']} escapes"
        return text


def rd_points(
    x: np.ndarray,
    steps: np.ndarray,
    rounding: float = 0.5,
    centroid: bool = True,
    sorted_abs: np.ndarray | None = None,
    negatives: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(sq_err, entropy_bits)`` of ECSQ at each of ``steps`` on float32 values ``x``.

    ``sq_err``: the total squared error of the dequantized values (float64 arithmetic, the
    rounding to the tensor's dtype aside); ``entropy_bits``: the codes' order-0 entropy times
    their count (escaped codes are charged as one symbol plus 32 bits each). Exact up to
    ties on bin edges; the sort of ``|x|`` (``sorted_abs``) can be passed in to reuse it.
    The sign is taken as independent of the magnitude (one bit per nonzero code at most,
    the split of each level's count between +m and -m estimated by the tensor's share of
    negatives), which keeps this to one sort.
    """
    a = np.sort(np.abs(x.astype(np.float64))) if sorted_abs is None else sorted_abs
    n = a.size
    if negatives is None:
        negatives = int((x < 0).sum())
    p_neg = negatives / n if n else 0.5
    h_sign = 0.0
    if 0 < p_neg < 1:
        h_sign = -(p_neg * math.log2(p_neg) + (1 - p_neg) * math.log2(1 - p_neg))
    s1 = np.concatenate([[0.0], np.cumsum(a)])
    s2 = np.concatenate([[0.0], np.cumsum(a * a)])
    amax = float(a[-1]) if n else 0.0
    errs = np.empty(len(steps))
    bits = np.empty(len(steps))
    for i, step in enumerate(np.asarray(steps, np.float64)):
        step = float(np.float32(step))
        top = int(min(math.floor(amax / step + rounding), MAX_CODE))
        # level m >= 1 holds |x| / step in [m - r, m + 1 - r); the last stored level and the
        # escapes above it are one range whose error is bounded by rounding anyway
        edges = (np.arange(1, top + 2) - rounding) * step
        idx = np.concatenate([[0], np.searchsorted(a, edges, side="left"), [n]])
        idx[-2] = idx[-1] if top < MAX_CODE else idx[-2]
        cnt = np.diff(idx).astype(np.float64)  # level 0, 1..top, then escapes
        A1 = np.diff(s1[idx]) / step
        A2 = np.diff(s2[idx]) / (step * step)
        levels = np.arange(top + 2, dtype=np.float64)
        levels[-1] = 0.0
        nz = cnt[1 : top + 1].sum()
        off = 0.0
        if centroid and nz:
            off = (levels[1 : top + 1] @ cnt[1 : top + 1] - A1[1 : top + 1].sum()) / nz
            off = float(np.float32(min(max(off, 0.0), 0.5)))
        c = levels - off
        c[0] = 0.0
        e = A2 - 2 * c * A1 + cnt * c * c
        e[-1] = cnt[-1] / 12.0  # escapes: plain rounding, about 1/12 of a step squared
        errs[i] = max(float(e.sum()), 0.0) * step * step
        # entropy: level 0, the nonzero levels split by sign, one escape symbol
        p = cnt[cnt > 0] / n
        h = -(p * np.log2(p)).sum() * n + h_sign * (n - cnt[0])
        bits[i] = h + 32.0 * cnt[-1]
    return errs, bits


STAGES = {EcsqStage.name: EcsqStage}
