"""Rate-aware allocation (``--target-bits`` / ``--target-size``): per tensor, the ECSQ step that
minimises the total squared error of the quantized tensors at a budget of bits after entropy
coding.

Each tensor the rules select gets a ladder of candidate steps (``STEPS_PER_OCTAVE`` per
octave, relative to its RMS); :func:`zipmodel.stages.ecsq.rd_points` gives each candidate's
exact squared error and its codes' order-0 entropy, to which a per-chunk table overhead is
added (the rANS / Huffman coders land within a few hundredths of a bit of it; the pipeline's
second pass corrects the rest). One Lagrange multiplier λ, shared by every tensor, picks per
tensor the candidate minimising ``err + λ · bits``; λ is found by bisection so that the bits
fit the budget. Sharing λ is what makes the allocation optimal for the *sum* of squared
errors: at high rate it gives every tensor the same step (an error of step² / 12 per weight)
and lets the entropy coder spend bits where the variance is.

The ggml block stages (:mod:`zipmodel.stages.ggml`) are not candidates: at equal bits their
error is 20-30% above ECSQ's on MiniLM (benches/results-lossy-2026-12-07.md), so the
multiplier would never pick them, and their coded size would need a trial encode per tensor.

Numpy only: this module runs before the pipeline, on the tensors' values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from .ecsq import MAX_GROUPS, EcsqStage, code_bits, level_counts, rd_points, row_ranks

__all__ = [
    "STEPS_PER_OCTAVE",
    "Allocation",
    "BudgetError",
    "TensorCurve",
    "allocate",
    "tensor_curve",
]

STEPS_PER_OCTAVE = 32  # 16 left small models 0.03 bits off their target
# Steps from RMS * 2**-10 (about 11 bits per weight on Gaussian data, where escapes already
# make a step useless) to RMS * 2**4 (every code 0).
LADDER = 2.0 ** (np.arange(-10 * STEPS_PER_OCTAVE, 4 * STEPS_PER_OCTAVE + 1) / STEPS_PER_OCTAVE)
CHUNK_OVERHEAD_BYTES = 24  # a frame's header and index entry, per chunk of codes
TABLE_BYTES_PER_SYMBOL = 1.0  # a coder's table, per symbol present in the chunk
GROUP_CHOICES = (2, 4, 8)  # row groups tried per tensor (nested: see ecsq.row_ranks)


class BudgetError(ValueError):
    """The budget is out of what any candidate reaches (the message says the range)."""


@dataclass
class TensorCurve:
    """One tensor's candidates: ECSQ steps, their squared error and coded bits."""

    name: str
    elements: int
    sum_sq: float  # sum of x^2 (the rel RMS denominator)
    steps: np.ndarray
    err: np.ndarray
    bits: np.ndarray
    groups: np.ndarray | None = None  # the ECSQ row groups of each candidate (None: all 1)


def _table_bits(elements: int, top: np.ndarray, chunk_elements: int) -> np.ndarray:
    """The coders' tables and frames of one I8 part: about one byte per symbol present, per
    chunk, plus a frame."""
    chunks = -(-elements // chunk_elements)
    symbols = np.minimum(2 * top + 2, 256)
    return 8.0 * chunks * (CHUNK_OVERHEAD_BYTES + TABLE_BYTES_PER_SYMBOL * symbols)


def _top(counts: np.ndarray) -> np.ndarray:
    """The largest level holding a value, per row of ``level_counts`` (escapes: the last)."""
    nz = counts[:, 1:] > 0
    last = counts.shape[1] - 2 - np.argmax(nz[:, ::-1], axis=1)
    return np.where(nz.any(1), np.minimum(last + 1, counts.shape[1] - 2), 0)


def tensor_curve(name: str, x: np.ndarray, chunk_elements: int = 1 << 20) -> TensorCurve | None:
    """The candidates of float32 values ``x`` (``None`` for an empty, all-zero or non-finite
    tensor: ECSQ leaves those alone or has nothing to choose).

    With ``x`` shaped as its tensor (2-D or more: rows are the first dimension, as
    :func:`zipmodel.stages.quant_common.seg_rows`), each candidate step also gets the number of
    ECSQ row groups (:func:`zipmodel.stages.ecsq.row_groups`) that codes it in the fewest bits:
    per group its codes' order-0 entropy and its own tables, plus the row map."""
    shape = x.shape
    x = np.ascontiguousarray(x, np.float32).reshape(-1)
    if x.size == 0 or not np.isfinite(x).all():
        return None
    a = np.sort(np.abs(x.astype(np.float64)))
    sum_sq = float(np.dot(a, a))
    if sum_sq == 0.0:
        return None
    rms = math.sqrt(sum_sq / x.size)
    steps = (LADDER * rms).astype(np.float32).astype(np.float64)
    steps = steps[steps > 0]
    err, bits = rd_points(x, steps, sorted_abs=a, negatives=int((x < 0).sum()))
    top = np.minimum(np.floor(a[-1] / steps + 0.5), 127)
    bits = bits + _table_bits(x.size, top, chunk_elements)
    rows = int(shape[0]) if len(shape) >= 2 else 1
    choices = [g for g in GROUP_CHOICES if g <= min(rows, MAX_GROUPS)]
    if not choices:
        return TensorCurve(name, int(x.size), sum_sq, steps, err, bits)
    cols = x.size // rows
    x2 = x.reshape(rows, cols)
    finest = max(choices)
    fine = row_ranks(x2) * finest // rows
    # per finest group: its level counts at every step and its negatives
    counts, negs, nrows = [], [], []
    for k in range(finest):
        v = x2[fine == k]
        nrows.append(v.shape[0])
        negs.append(int((v < 0).sum()))
        counts.append(level_counts(np.sort(np.abs(v.reshape(-1).astype(np.float64))), steps))
    groups = np.ones(len(steps), np.int64)
    for g in choices:
        per = finest // g
        total = np.zeros(len(steps))
        for j in range(g):
            c = sum(counts[j * per : (j + 1) * per])
            r = sum(nrows[j * per : (j + 1) * per])
            total += code_bits(c, sum(negs[j * per : (j + 1) * per]))
            total += _table_bits(r * cols, _top(c), chunk_elements)
        # the row map: log2(G) bits a row (equal counts), a frame and a small table
        total += rows * math.log2(g) + 8.0 * (CHUNK_OVERHEAD_BYTES + g)
        better = total < bits
        bits = np.where(better, total, bits)
        groups = np.where(better, g, groups)
    return TensorCurve(name, int(x.size), sum_sq, steps, err, bits, groups)


def _pick(curves: list[TensorCurve], lam: float) -> list[int]:
    return [int(np.argmin(c.err + lam * c.bits)) for c in curves]


def allocate(curves: list[TensorCurve], budget_bits: float, nearest: bool = False) -> list[int]:
    """Per curve, the index of the candidate chosen by the shared multiplier whose total bits
    is the largest not above ``budget_bits`` (``nearest``: the nearest to it, above or below;
    ``BudgetError`` when even the cheapest candidates do not fit)."""
    least = sum(float(c.bits.min()) for c in curves)
    if budget_bits < least:
        raise BudgetError(f"needs at least {least:.0f} bits")
    most = sum(float(c.bits.max()) for c in curves)
    if budget_bits >= most:  # finest steps everywhere
        return _pick(curves, 0.0)
    # bisection on log2(λ): bits fall as λ grows
    lo, hi = -200.0, 200.0
    for _ in range(80):
        mid = (lo + hi) / 2
        total = sum(float(c.bits[k]) for c, k in zip(curves, _pick(curves, 2.0**mid)))
        if total > budget_bits:
            lo = mid
        else:
            hi = mid
    if not nearest:
        return _pick(curves, 2.0**hi)
    # the two sides of the budget: the nearer one (a few candidates decide a small model)
    below, above = _pick(curves, 2.0**hi), _pick(curves, 2.0**lo)
    r_below = sum(float(c.bits[k]) for c, k in zip(curves, below))
    r_above = sum(float(c.bits[k]) for c, k in zip(curves, above))
    return above if r_above - budget_bits < budget_bits - r_below else below


@dataclass
class Allocation:
    """The curves of a file's selected tensors, and the steps chosen for a budget.

    ``fixed_bits``: bits of the file outside the quantized tensors (``--target-size``: the
    rest of the container, measured after a first pass; 0 for ``--target-bits``).
    """

    curves: list[TensorCurve]
    steps: dict[str, float] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)
    estimate_bits: float = 0.0

    @property
    def elements(self) -> int:
        return sum(c.elements for c in self.curves)

    def reachable_bits_per_weight(self) -> tuple[float, float]:
        n = self.elements or 1
        return (
            sum(float(c.bits.min()) for c in self.curves) / n,
            sum(float(c.bits.max()) for c in self.curves) / n,
        )

    def fit(self, budget_bits: float) -> None:
        """Choose the steps for ``budget_bits`` over the quantized tensors."""
        choice = allocate(self.curves, budget_bits, nearest=True)
        self.steps = {c.name: float(c.steps[k]) for c, k in zip(self.curves, choice)}
        self.groups = {
            c.name: int(c.groups[k]) if c.groups is not None else 1
            for c, k in zip(self.curves, choice)
        }
        self.estimate_bits = sum(float(c.bits[k]) for c, k in zip(self.curves, choice))

    def estimate_rel_rms(self) -> float:
        err = sq = 0.0
        for c in self.curves:
            k = int(np.flatnonzero(c.steps == self.steps[c.name])[0])
            err += float(c.err[k])
            sq += c.sum_sq
        return math.sqrt(err / sq) if sq else 0.0

    def stage_for(self, name: str) -> EcsqStage | None:
        step = self.steps.get(name)
        return EcsqStage(step, groups=self.groups.get(name, 1)) if step is not None else None


def curves_of(
    tensors: Iterable[tuple[str, np.ndarray]],
    chunk_elements: int = 1 << 20,
    progress: Callable[[str], None] | None = None,
) -> list[TensorCurve]:
    """:func:`tensor_curve` of each ``(name, float32 values)``, skipping those with none."""
    out = []
    for name, x in tensors:
        c = tensor_curve(name, x, chunk_elements)
        if c is not None:
            out.append(c)
        if progress is not None:
            progress(name)
    return out
