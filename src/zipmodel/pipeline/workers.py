"""Moved to :mod:`zipmodel.threads` (the bottom layer, so the I/O helpers can use the pool)."""

from __future__ import annotations

from ..threads import (
    BATCH_BYTES,
    BATCH_ITEMS,
    batches,
    resolve_threads,
    windowed,
    windowed_pairs,
    worker_pool,
)

__all__ = [
    "BATCH_BYTES",
    "BATCH_ITEMS",
    "batches",
    "resolve_threads",
    "windowed",
    "windowed_pairs",
    "worker_pool",
]
