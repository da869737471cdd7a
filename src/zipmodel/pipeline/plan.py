"""Planning: the compression options, and cutting segments (and stage parts) into chunks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from .._checksum import xxh3_64
from ..codecs.select import policy_for_level
from ..container.format import (
    MAX_CHUNK_RAW,
)
from ..readers.base import TENSOR, Layout, Segment
from ..stages import Transform, transform_for

DEFAULT_CHUNK_SIZE = 1 << 20


MIN_CHUNK_SIZE = 4 << 10


@dataclass(frozen=True)
class CompressOptions:
    """Settings that determine the container's bytes (thread count does not)."""

    level: str = "default"
    chunk_size: int = DEFAULT_CHUNK_SIZE

    def __post_init__(self) -> None:
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_RAW:
            raise ValueError(
                f"chunk size {self.chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_RAW} bytes"
            )
        policy_for_level(self.level)  # validates the name

    def to_json(self) -> dict:
        return {"level": self.level, "chunk_size": self.chunk_size}


@dataclass(frozen=True)
class ChunkPlan:
    segment: int
    offset: int  # recorded as the chunk's src_offset (for a stage part: segment offset + position)
    size: int
    transform: Transform
    layout: tuple[int, int] | None = None  # (row_len, first_col) for matrix-shaped tensors
    # A stage part's bytes (``offset`` counts from the segment's offset into them); None: the
    # chunk is source bytes.
    part: np.ndarray | None = None
    credit: int | None = None  # source bytes done once it is written (default: ``size``)


def range_plans(
    segment: int,
    start: int,
    size: int,
    dtype: str | None,
    shape: tuple[int, ...] | None,
    chunk_size: int,
    part: np.ndarray | None = None,
) -> list[ChunkPlan]:
    """Chunks of ``size`` bytes of ``dtype`` elements laid out from ``start`` (whole elements)."""
    t = transform_for(dtype)
    if size % t.itemsize:
        t = transform_for(None)  # not whole elements (unknown packing): code the bytes whole
    step = max(t.itemsize, chunk_size - chunk_size % t.itemsize)
    rows = row_len(shape)
    plans = []
    for off in range(start, start + size, step):
        lay = None
        if rows > 1:
            lay = (rows, ((off - start) // t.itemsize) % rows)
        plans.append(ChunkPlan(segment, off, min(step, start + size - off), t, lay, part))
    return plans


def plan_chunks(
    layout: Layout, chunk_size: int, dups: dict[int, int] | None = None
) -> tuple[list[ChunkPlan], list[tuple[int, int]]]:
    """Cut every segment into chunks of at most ``chunk_size`` bytes (whole elements).

    Segments in ``dups`` (index -> earlier segment with the same bytes) get no chunks.
    Returns the chunks in source order and, per segment, ``(first_chunk, n_chunks)``.
    """
    plans: list[ChunkPlan] = []
    ranges = []
    for i, seg in enumerate(layout.segments):
        if dups and i in dups:
            ranges.append((len(plans), 0))
            continue
        first = len(plans)
        tensor = seg.kind == TENSOR
        plans += range_plans(
            i,
            seg.offset,
            seg.size,
            seg.dtype if tensor else None,
            seg.shape if tensor else None,
            chunk_size,
        )
        ranges.append((first, len(plans) - first))
    return plans, ranges


DEDUP_MIN = 4096  # segments at least this big are stored once when their bytes repeat


def find_duplicates(
    data: np.ndarray,
    layout: Layout,
    release: Callable[[int, int], None] | None = None,
) -> dict[int, int]:
    """Segments whose bytes equal an earlier segment's: ``{index: earlier index}``.

    Tied embeddings, shared layers and repeated tables are then coded once. Only segments of
    a size another segment has too are candidates (this runs before any chunk is coded, so
    it hashes as little as it can; benches/results-design-notes.md); they are found by XXH3
    and confirmed byte for byte.
    """
    segs = layout.segments
    sizes = Counter(seg.size for seg in segs if seg.size >= DEDUP_MIN)
    cands = [i for i, seg in enumerate(segs) if seg.size >= DEDUP_MIN and sizes[seg.size] > 1]

    seen: dict[tuple[int, int], list[int]] = {}
    dups: dict[int, int] = {}
    for i in cands:
        seg = segs[i]
        view = data[seg.offset : seg.end]
        h = xxh3_64(view)
        if release:
            release(seg.offset, seg.size)
        for j in seen.get((seg.size, h), ()):
            other = segs[j]
            if np.array_equal(data[other.offset : other.end], view):
                dups[i] = j
                break
        else:
            seen.setdefault((seg.size, h), []).append(i)
    return dups


def row_len(shape: tuple[int, ...] | None) -> int:
    """Elements per row when a tensor is viewed as a matrix (first axis x the rest), else 0."""
    if not shape or len(shape) < 2:
        return 0
    n = 1
    for d in shape[1:]:
        n *= d
    return n if shape[0] > 1 else 0


def part_plans(
    i: int, seg: Segment, parts: list, first: int, chunk_size: int
) -> tuple[list[ChunkPlan], list[tuple[int, int]]]:
    """Chunk plans for a staged tensor's parts, one after the other, and each part's
    ``(first chunk, n_chunks)`` when its first chunk gets number ``first``."""
    plans: list[ChunkPlan] = []
    ranges = []
    for part in parts:
        more = range_plans(
            i,
            seg.offset,
            int(part.data.size),
            part.dtype,
            tuple(part.shape) or None,
            chunk_size,
            np.ascontiguousarray(part.data),
        )
        ranges.append((first + len(plans), len(more)))
        plans += [replace(q, credit=0) for q in more]
    if plans:  # the tensor's source bytes are done with its last chunk
        plans[-1] = replace(plans[-1], credit=seg.size)
    return plans, ranges
