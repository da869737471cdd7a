"""The data path: segments → chunks → transform → codecs → frames, and back.

Chunks are independent: each one is transformed and coded on its own, so chunks run on a
thread pool (the heavy work releases the GIL) and the container's bytes do not depend on the
thread count. Results are written in source order through a bounded window, so memory stays
at about ``threads × 2`` chunks whatever the file size.

- :mod:`.plan`: options, and cutting segments (and tensor-stage parts) into chunks;
- :mod:`.chunk`: one chunk to a frame (:func:`encode_chunk`) and back (:func:`decode_chunk`;
  common frames in one Numba call through :mod:`.fused`);
- :mod:`.workers`: the process-wide thread pool and the bounded in-order windows;
- :mod:`.compress`: writing a container (:func:`compress_layout`), tensor stages included;
- :mod:`.decode`: reading one back, whole (:func:`iter_source`) or tensor by tensor.
"""

from __future__ import annotations

from ..threads import resolve_threads
from .chunk import BufferPool, EncodedChunk, decode_chunk, encode_chunk
from .compress import CompressResult, Progress, StageChooser, compress_layout, encode_stage
from .decode import check_context, decode_segment, iter_segments, iter_source, segment_jobs
from .plan import (
    DEDUP_MIN,
    DEFAULT_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    ChunkPlan,
    CompressOptions,
    find_duplicates,
    plan_chunks,
)

__all__ = [
    "DEDUP_MIN",
    "DEFAULT_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "BufferPool",
    "ChunkPlan",
    "CompressOptions",
    "CompressResult",
    "EncodedChunk",
    "Progress",
    "StageChooser",
    "check_context",
    "compress_layout",
    "decode_chunk",
    "decode_segment",
    "encode_chunk",
    "encode_stage",
    "find_duplicates",
    "iter_segments",
    "iter_source",
    "plan_chunks",
    "resolve_threads",
    "segment_jobs",
]
