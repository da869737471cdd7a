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

Row groups (``groups`` G > 1): the rows of a weight matrix differ in spread, so one set of
coding tables over all of them wastes bits. The rows (output channels, :func:`seg_rows`) are
ranked by their sum of squares and cut into G groups of (nearly) equal row counts
(:func:`row_groups`); the codes are then G parts ``codes0`` .. ``codes{G-1}`` (a group's rows
contiguous, in their original order), so each group's chunks get entropy tables of their
own, then ``rowmap`` (U8: each row's group), then ``escapes`` (in the order of the stored
codes). ``params`` add ``groups`` (G) and ``group_rows`` (each group's row count). Without
``groups`` (every container written before row groups, and G = 1 now) the layout is the one
above, byte for byte.

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

__all__ = [
    "ESCAPE",
    "ESCAPE_BITS",
    "MAX_CODE",
    "MAX_GROUPS",
    "STAGES",
    "EcsqStage",
    "best_offset",
    "code_bits",
    "ecsq_codes",
    "level_counts",
    "rd_points",
    "row_groups",
    "row_ranks",
]

MAX_CODE = 127  # codes in [-127, 127] are stored in the I8 part itself
ESCAPE = -128  # the I8 code of a value whose code is in the ``escapes`` part
MAX_GROUPS = 14  # row groups per tensor: with the row map and escapes, the index's 16 parts
# What the rate estimates charge an escaped code besides its escape symbol: its I32 entry
# after the entropy coders (byte split: ~8 bits for the low byte, a few for the rest; 590
# escapes of |q| ~ 150 coded to 12-14 bits each). Was 32, which put a synthetic model with
# many escapes 0.3 bits per weight under its --target-bits.
ESCAPE_BITS = 14.0


def row_groups(x2: np.ndarray, groups: int) -> np.ndarray:
    """Each row's group (uint8) for float32 rows ``x2`` (rows, cols): rows ranked by their sum
    of squares (ties by index), the k-th of R rows in group ``k * G // R`` (equal counts)."""
    rows = x2.shape[0]
    g = max(1, min(int(groups), rows))
    return (row_ranks(x2) * g // max(rows, 1)).astype(np.uint8)


def row_ranks(x2: np.ndarray) -> np.ndarray:
    """Each row's rank (int64, 0 = the smallest) by its sum of squares, ties by index.

    Ranks cut by ``rank * G // rows`` nest: the groups for G are unions of those for 2G."""
    ss = np.einsum("ij,ij->i", x2, x2, dtype=np.float64)
    ranks = np.empty(x2.shape[0], np.int64)
    ranks[np.argsort(ss, kind="stable")] = np.arange(x2.shape[0])
    return ranks


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

    ``centroid``: store the least-squares ``offset`` (else 0). ``groups``: row groups, each
    with parts (so entropy tables) of its own (1: none; a tensor with fewer rows gets as many
    groups as rows). ``EcsqStage()`` (no step) only decodes: the registry makes stages that
    way from a container's record.
    """

    name: ClassVar[str] = "ecsq"

    def __init__(
        self,
        step: float | None = None,
        rounding: float = 0.5,
        centroid: bool = True,
        groups: int = 1,
    ):
        self.step: float | None = None
        self.rounding = float(rounding)
        self.centroid = centroid
        if not 0.0 < rounding <= 0.5:
            raise ValueError(f"ecsq rounding must be in (0, 0.5], not {rounding}")
        if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= MAX_GROUPS:
            raise ValueError(f"ecsq groups must be an integer in [1, {MAX_GROUPS}], not {groups}")
        self.groups = groups
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
        g = min(self.groups, rows)
        extra: dict[str, Any] = {}
        if g > 1:
            labels = row_groups(x.reshape(rows, cols), g)
            order = np.argsort(labels, kind="stable")  # group-major, rows in order within
            q = q.reshape(rows, cols)[order].reshape(-1)
            counts = np.bincount(labels, minlength=g)
            extra = {"groups": g, "group_rows": [int(c) for c in counts]}
        out = np.abs(q) > MAX_CODE
        codes = np.where(out, ESCAPE, q).astype(np.int8)
        if g > 1:
            parts, at = [], 0
            for k, c in enumerate(extra["group_rows"]):
                blk = codes[at * cols : (at + c) * cols]
                parts.append(Part(f"codes{k}", "I8", as_bytes(blk), (c, cols)))
                at += c
            parts.append(Part("rowmap", "U8", as_bytes(labels), (rows,)))
        else:
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
            **extra,
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
        tail = [4 * esc] if esc else []
        if "groups" not in params:
            return [n, *tail]
        rows, cols = seg_rows(seg)
        g, counts = params.get("groups"), params.get("group_rows")
        require(
            isinstance(g, int) and not isinstance(g, bool) and 2 <= g <= min(MAX_GROUPS, rows),
            f"ecsq: groups {g!r} is not an integer in [2, {min(MAX_GROUPS, rows)}]",
        )
        require(
            isinstance(counts, list)
            and len(counts) == g
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts)
            and sum(counts) == rows,
            f"ecsq: group_rows {counts!r} are not {g} positive row counts summing to {rows}",
        )
        return [c * cols for c in counts] + [rows, *tail]

    def dequantize(self, parts, seg, params):
        g = params.get("groups", 1)
        if g > 1:
            codes = np.concatenate([p.view(np.int8) for p in parts[:g]])
            labels = parts[g].view(np.uint8)
            require(
                int(labels.max()) < g
                and np.bincount(labels, minlength=g).tolist() == params["group_rows"],
                "ecsq: the row map and the groups' row counts disagree",
            )
            esc_part = parts[g + 1] if len(parts) > g + 1 else None
        else:
            codes = parts[0].view(np.int8)
            esc_part = parts[1] if len(parts) > 1 else None
        esc_at = codes == ESCAPE
        n_esc = params["escapes"]
        require(int(esc_at.sum()) == n_esc, "ecsq: escape codes and the escapes part disagree")
        if n_esc:
            q = codes.astype(np.int64)
            q[esc_at] = esc_part.view("<i4")
        else:
            q = codes
        y = _dequantize(q, params["step"], params["offset"])
        if g > 1:  # scatter the group-major rows back
            rows, cols = seg_rows(seg)
            order = np.argsort(labels, kind="stable")
            out = np.empty((rows, cols), np.float32)
            out[order] = y.reshape(rows, cols)
            y = out.reshape(-1)
        return y

    def stored_bits(self, parts, params, dtype):
        return float(sum(p.data.size for p in parts) * 8)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str | None:
        """The parameters ``info --tensors`` shows: step, offset, escaped codes."""
        step, off = params.get("step"), params.get("offset")
        if not isinstance(step, float) or not isinstance(off, (int, float)):
            return None
        text = f"step {step:.4g}, offset {off:.3f}"
        if isinstance(params.get("groups"), int):
            text += f", {params['groups']} row groups"
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
    their count (escaped codes are charged as one symbol plus ``ESCAPE_BITS`` each). Exact up to
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
        bits[i] = h + ESCAPE_BITS * cnt[-1]
    return errs, bits


def level_counts(sorted_abs: np.ndarray, steps: np.ndarray, rounding: float = 0.5) -> np.ndarray:
    """How many of the sorted magnitudes ``sorted_abs`` (float64) fall on each level at each
    of ``steps``: shape (steps, MAX_CODE + 2), column 0 level 0, column m level m, the last
    the escapes; all steps at once (one ``searchsorted`` of every edge). Counts of disjoint
    sets of values add up, which is what makes the allocator's row-group curves cheap."""
    a = sorted_abs
    steps = np.asarray(steps, np.float64).astype(np.float32).astype(np.float64)
    # level m >= 1 holds |x| / step in [m - r, m + 1 - r); from MAX_CODE + 1 - r: escapes
    edges = (np.arange(1, MAX_CODE + 2, dtype=np.float64) - rounding)[None, :] * steps[:, None]
    idx = np.searchsorted(a, edges.ravel(), side="left").reshape(edges.shape)
    k = len(steps)
    idx = np.concatenate([np.zeros((k, 1), np.int64), idx, np.full((k, 1), a.size)], 1)
    return np.diff(idx, axis=1)


def code_bits(counts: np.ndarray, negatives: int) -> np.ndarray:
    """Per row of :func:`level_counts`, the bits :func:`rd_points` charges: the codes' order-0
    entropy with the sign independent of the level, plus ``ESCAPE_BITS`` per escape."""
    cnt = np.asarray(counts, np.float64)
    n = cnt.sum(1)
    tot = float(n[0]) if len(n) else 0.0
    if tot == 0:
        return np.zeros(len(cnt))
    p_neg = negatives / tot
    h_sign = 0.0
    if 0 < p_neg < 1:
        h_sign = -(p_neg * math.log2(p_neg) + (1 - p_neg) * math.log2(1 - p_neg))
    p = cnt / tot
    plogp = np.where(cnt > 0, p * np.log2(np.where(cnt > 0, p, 1.0)), 0.0)
    return -plogp.sum(1) * tot + h_sign * (tot - cnt[:, 0]) + ESCAPE_BITS * cnt[:, -1]


STAGES = {EcsqStage.name: EcsqStage}
