"""Choosing a delta stage per tensor by measuring it: each candidate is coded with the chunk
encoder the container uses (see :mod:`zipmodel.stages.delta` for the stages themselves)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..codecs.select import policy_for_level
from ..readers.base import TENSOR, Segment
from ..stages import transform_for
from ..stages.delta import DELTA_STAGES, SAME, base_of, delta_itemsize, part_type
from ..stages.tensor import StageContext, Staged, TensorStage
from ..threads import resolve_threads, windowed
from .chunk import encode_chunk
from .plan import row_len

__all__ = ["SAMPLE_BYTES", "SAMPLE_PIECES", "DeltaChoice", "choose_delta", "plan_deltas"]


@dataclass
class DeltaChoice:
    """What :func:`choose_delta` measured for one tensor (coded bytes of the sample)."""

    stage: TensorStage | None  # None: standalone codes smallest
    staged: Staged | None
    sizes: dict[str, int]  # "standalone" / "xor" / "sub" -> coded bytes of the sample
    sampled: int  # tensor bytes the sizes cover


SAMPLE_PIECES = 4  # pieces coded per candidate for a tensor larger than SAMPLE_BYTES
SAMPLE_BYTES = 512 << 10  # tensor bytes coded per candidate, at most


def choose_delta(
    tensor: np.ndarray,
    seg: Segment,
    ctx: StageContext,
    *,
    level: str = "default",
    chunk_size: int = 1 << 20,
) -> DeltaChoice:
    """Code ``tensor`` standalone and as each delta; keep whichever is smallest.

    A tensor of up to :data:`SAMPLE_BYTES` is coded whole (in chunks of ``chunk_size``), a
    larger one by :data:`SAMPLE_PIECES` pieces of ``SAMPLE_BYTES / SAMPLE_PIECES`` spread
    evenly over it (the same pieces for every candidate): measuring costs at most about
    three times that much coding per tensor, whatever its size. Ties go to standalone,
    then ``xor``: the simplest that is as small. A tensor equal to the base's is ``same``
    (no parts) without coding anything.
    """
    base = base_of(seg, ctx)
    if base is None or seg.kind != TENSOR or seg.size == 0:
        return DeltaChoice(None, None, {}, 0)
    if np.array_equal(tensor, base):  # unchanged: costs nothing but its index entry
        return DeltaChoice(SAME, Staged([]), {"same": 0}, seg.size)
    policy = policy_for_level(level)
    dtype, shape = part_type(seg)
    t = transform_for(dtype)
    if seg.size % t.itemsize:
        t = transform_for(None)
    # the tensor alone is coded as the pipeline would (a GGUF block type by its own split)
    t_alone = transform_for(seg.dtype)
    if seg.size % t_alone.itemsize:
        t_alone = transform_for(None)
    itemsize = delta_itemsize(seg)
    unit = math.lcm(t.itemsize, t_alone.itemsize, itemsize)  # every chunk whole elements
    if seg.size <= SAMPLE_BYTES:
        step = max(unit, chunk_size - chunk_size % unit)
        starts = list(range(0, seg.size, step))
    else:
        piece = min(chunk_size, SAMPLE_BYTES // SAMPLE_PIECES)
        step = max(unit, piece - piece % unit)
        last = (seg.size - step) // unit
        starts = sorted({int(x) * unit for x in np.linspace(0, last, SAMPLE_PIECES).round()})
    rows = row_len(shape)

    def coded(candidate, tr=t) -> int:
        total = 0
        for a in starts:
            b = min(a + step, seg.size)
            lay = (rows, (a // tr.itemsize) % rows) if rows > 1 else None
            total += encode_chunk(candidate(a, b), a, tr, policy, lay).frame_size
        return total

    sizes = {"standalone": coded(lambda a, b: tensor[a:b], t_alone)}
    for name, stage in DELTA_STAGES.items():
        sizes[name] = coded(lambda a, b, s=stage: s.forward(tensor[a:b], base[a:b], itemsize))
    sampled = sum(min(step, seg.size - a) for a in starts)
    best = min(sizes, key=lambda k: (sizes[k], k != "standalone", k != "xor"))
    if best == "standalone":
        return DeltaChoice(None, None, sizes, sampled)
    stage = DELTA_STAGES[best]
    return DeltaChoice(stage, stage.encode(tensor, seg, ctx), sizes, sampled)


def plan_deltas(
    data: np.ndarray,
    segments: Sequence[Segment],
    ctx: StageContext,
    *,
    level: str = "default",
    chunk_size: int = 1 << 20,
    threads: int = 0,
) -> dict[int, TensorStage]:
    """Measure every tensor of ``segments`` (bytes in ``data``) against the base in ``ctx``.

    Returns ``{segment offset: stage}`` for the tensors a delta (or ``same``) stores smaller;
    a tensor missing from the base, or of another dtype or shape, or one that codes smaller
    alone, is not in it. The measurements run on ``threads`` threads (0: every core).
    """
    cands = [s for s in segments if s.kind == TENSOR and s.size and base_of(s, ctx) is not None]

    def one(seg: Segment) -> tuple[int, TensorStage | None]:
        c = choose_delta(data[seg.offset : seg.end], seg, ctx, level=level, chunk_size=chunk_size)
        return seg.offset, c.stage

    chosen = {}
    for off, stage in windowed(cands, one, resolve_threads(threads)):
        if stage is not None:
            chosen[off] = stage
    return chosen
