"""The worker pool and the bounded, in-order windows that run chunk work on it.

The bottom layer (no zipmodel imports): the pipeline codes chunks on it, and the I/O helpers
page-fault and copy big buffers on it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait

__all__ = [
    "BATCH_BYTES",
    "BATCH_ITEMS",
    "batches",
    "resolve_threads",
    "windowed",
    "windowed_pairs",
    "worker_pool",
]


def resolve_threads(threads: int | None) -> int:
    """``0``/``None`` means one thread per core (capped at 32)."""
    if not threads:
        return max(1, min(32, os.cpu_count() or 1))
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    return threads


_pools: dict[int, ThreadPoolExecutor] = {}


_pools_lock = threading.Lock()


def worker_pool(threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``threads`` workers, kept between calls.

    Workers keep their per-thread scratch buffers (stream, frame and decode-table scratch),
    so a second call does not page-fault them in again: with a pool per call, two threads
    decoded slower than one.
    """
    with _pools_lock:
        ex = _pools.get(threads)
        if ex is None:
            ex = _pools[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix=f"zipmodel-{threads}"
            )
        return ex


def windowed(items, fn: Callable, threads: int) -> Iterator:
    """Map ``fn`` over ``items`` (a list or an iterator, consumed as the window moves) on
    ``threads`` threads; yield results in order, at most ``2 × threads`` in flight."""
    if threads <= 1 or (isinstance(items, list) and len(items) <= 1):
        for it in items:
            yield fn(it)
        return
    ex = worker_pool(threads)
    pending: deque[Future] = deque()
    it = iter(items)
    for x in it:
        pending.append(ex.submit(fn, x))
        if len(pending) >= 2 * threads:
            break
    try:
        while pending:
            res = pending.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(ex.submit(fn, nxt))
            yield res
    finally:
        # stop what has not started, and let running work finish before the caller's
        # buffers are reused (the pool outlives this call)
        for f in pending:
            f.cancel()
        wait(pending)


def windowed_pairs(items: Iterator, fn: Callable, threads: int) -> Iterator[tuple]:
    """``(item, fn(item))`` in order, for items from an iterator (see :func:`windowed`)."""
    return windowed(items, lambda x: (x, fn(x)), threads)


BATCH_BYTES = 1 << 20


BATCH_ITEMS = 8  # compress: each frame in flight holds a pooled buffer


def batches(items, target: int, max_items: int = 1 << 30) -> Iterator[list]:
    """Consecutive items (with a ``size`` in bytes) grouped until a group holds at least
    ``target`` bytes or ``max_items`` items."""
    batch: list = []
    total = 0
    for item in items:
        batch.append(item)
        total += item.size
        if total >= target or len(batch) >= max_items:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch
