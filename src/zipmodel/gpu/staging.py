"""Decoded chunks to device memory through a ring of reused pinned host memory.

``zipmodel.load(path, device="cuda")`` allocates each tensor on the device, decodes chunks on
the thread pool into regions of one pinned host buffer (:class:`StagingRing`), and copies each
chunk to its place in the device tensor with a non-blocking copy on a side stream as soon as it
is decoded (in order), so reading, decoding and copying overlap. A region is handed out again
only once the device has finished the copy that reads it (an event per copy). Host memory stays
bounded by the ring (tens of MiB), whatever the model's size: pinning a buffer per tensor
would pin the whole model.

The ring is sized for every chunk the decode window can hold at once; a chunk it cannot place
without waiting on a chunk whose copy has not been issued yet (which would deadlock), or one
larger than the ring, is decoded into ordinary memory and copied from there. Tensors a stage
decodes whole (lossy, delta) are copied from the stage's result.

The device is behind :class:`Backend`, so the ring and the ordering are tested on the CPU with a
backend whose copies run late on another thread (tests/test_staging.py); :class:`TorchCuda`
is the CUDA one. **The CUDA backend has not been run on a GPU yet.**
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..pipeline.chunk import decode_chunk_into
from ..pipeline.decode import DecodeJob, run_jobs, segment_jobs
from ..stages.tensor import StageContext, TensorStage
from ..threads import BATCH_BYTES

__all__ = ["Backend", "StagingRing", "TorchCuda", "load_segments", "ring_size"]


class Backend:
    """What staging needs of a device. ``copy`` must not read ``src`` after the event it
    returns has completed, and may read it at any time before."""

    def host_buffer(self, nbytes: int) -> np.ndarray:
        """Page-locked host memory (uint8) that ``copy`` can read asynchronously."""
        raise NotImplementedError

    def device_buffer(self, nbytes: int) -> Any:
        """Device memory (uint8) for one tensor."""
        raise NotImplementedError

    def copy(self, dst: Any, offset: int, src: np.ndarray, staged: bool) -> Any:
        """Start copying ``src`` to ``dst[offset:offset + src.size]``; return an event.
        ``staged``: ``src`` lies in :meth:`host_buffer` memory (else ordinary memory)."""
        raise NotImplementedError

    def wait(self, event: Any) -> None:
        """Block until the copy behind ``event`` has completed."""
        raise NotImplementedError

    def start(self) -> None:
        """Called once every device buffer exists, before the first copy."""

    def finish(self) -> None:
        """Block until every copy has completed (device buffers are then ready to use)."""
        raise NotImplementedError


class StagingRing:
    """Contiguous regions of one host buffer, handed out in order, each reused only once the
    copy reading it has completed. Single-threaded: the thread that creates jobs takes
    regions, the thread that issues copies (the same one) marks them issued."""

    def __init__(self, backend: Backend, nbytes: int):
        self.backend = backend
        self.buf = backend.host_buffer(nbytes)
        self.size = int(self.buf.size)
        self._head = 0
        # live regions, oldest first: [start, end, event]; event None until the copy is issued
        self._live: deque[list] = deque()
        self.fallbacks = 0  # chunks that could not be staged (ordinary memory instead)

    def take(self, n: int) -> tuple[np.ndarray, list] | None:
        """A region of ``n`` bytes, waiting for the oldest copies as needed; None when the
        region would need a chunk whose copy is not issued yet, or ``n`` exceeds the ring."""
        if n > self.size or n <= 0:
            self.fallbacks += n > 0
            return None
        start = self._head if self._head + n <= self.size else 0
        while any(a < start + n and start < b for a, b, _ in self._live):
            oldest = self._live[0]
            if oldest[2] is None:  # its chunk is decoded or decoding, not copied yet
                self.fallbacks += 1
                return None
            self.backend.wait(oldest[2])
            self._live.popleft()
        region = [start, start + n, None]
        self._live.append(region)
        self._head = start + n
        return self.buf[start : start + n], region

    def issued(self, region: list, event: Any) -> None:
        region[2] = event


def ring_size(threads: int, max_chunk: int) -> int:
    """Bytes the ring needs so that no chunk falls back: the decode window holds up to
    ``2 × threads`` batches in flight, one batch being formed and one being copied, each at
    most ``BATCH_BYTES`` bytes plus one chunk; twice that, as a wrap can skip up to a chunk at the
    end of the ring and copies complete after they are issued."""
    per_batch = BATCH_BYTES + max_chunk
    return 2 * ((2 * threads + 2) * per_batch + max_chunk)


def load_segments(
    reader,
    owners: list[int],
    backend: Backend,
    *,
    threads: int,
    context: StageContext | None = None,
    ring_bytes: int | None = None,
) -> tuple[dict[int, Any], StagingRing | None]:
    """Decode segments ``owners`` of ``reader`` (none a duplicate) into device buffers.

    Returns ``{segment: device buffer}`` (uint8, the segment's size) once every copy has
    completed, and the ring used (for its counters).
    """
    idx = reader.index
    rows = idx.chunks
    segs = idx.segments
    dev = {o: backend.device_buffer(segs[o].segment.size) for o in owners}
    plain = [o for o in owners if segs[o].stage is None]
    max_chunk = max((int(rows[c]["raw_size"]) for o in plain for c in _chunks(segs[o])), default=0)
    ring = None
    if max_chunk:
        ring = StagingRing(backend, ring_bytes or ring_size(threads, max_chunk))
    backend.start()
    regions: deque[list | None] = deque()  # per job, in job order: its ring region
    stages: dict[str, TensorStage] = {}

    def jobs() -> Iterator[DecodeJob]:
        for o in owners:
            e = segs[o]
            if e.stage is not None:  # a stage decodes it: its result is copied
                for job in segment_jobs(reader, o, None, context=context, stages=stages):
                    regions.append(None)
                    yield job
                continue
            base = e.segment.offset
            for c in _chunks(e):
                rel, size = int(rows[c]["src_offset"]) - base, int(rows[c]["raw_size"])
                got = ring.take(size) if ring is not None else None
                buf, region = got if got is not None else (np.empty(size, np.uint8), None)
                regions.append(region)
                job = DecodeJob(c, _decoder(reader, c, buf, base + rel), o, size)
                job.last = c == e.first_chunk + e.n_chunks - 1
                yield job

    # ordinary memory being copied from, kept alive until its copy completes (bounded)
    keep: deque[tuple[Any, np.ndarray]] = deque()
    kept = 0
    limit = ring.size if ring is not None else ring_size(threads, 0)
    try:
        for job, res in run_jobs(jobs(), threads):
            region = regions.popleft()
            if res is None:
                continue
            src_offset, arr = res
            rel = src_offset - segs[job.segment].segment.offset
            event = backend.copy(dev[job.segment], rel, arr, region is not None)
            if region is not None:
                ring.issued(region, event)
                continue
            keep.append((event, arr))
            kept += arr.nbytes
            while kept > limit and len(keep) > 1:
                ev, old = keep.popleft()
                backend.wait(ev)
                kept -= old.nbytes
    finally:
        backend.finish()
    return dev, ring


def _chunks(e) -> range:
    return range(e.first_chunk, e.first_chunk + e.n_chunks)


def _decoder(reader, c: int, buf: np.ndarray, src_offset: int):
    def run() -> tuple[int, np.ndarray]:
        decode_chunk_into(reader, c, buf)
        return src_offset, buf

    return run


class TorchCuda(Backend):
    """CUDA through torch: a pinned host tensor, ``torch.empty`` on the device, copies with
    ``non_blocking=True`` on a side stream, a CUDA event per copy."""

    def __init__(self, torch, device: Any):
        self.torch = torch
        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)
        self._host = None  # the pinned tensor behind host_buffer's array

    def host_buffer(self, nbytes: int) -> np.ndarray:
        self._host = self.torch.empty(nbytes, dtype=self.torch.uint8, pin_memory=True)
        return self._host.numpy()

    def device_buffer(self, nbytes: int):
        return self.torch.empty(nbytes, dtype=self.torch.uint8, device=self.device)

    def start(self) -> None:
        # the device buffers were allocated on the current stream: order the copies after them
        self.stream.wait_stream(self.torch.cuda.current_stream(self.device))

    def copy(self, dst, offset: int, src: np.ndarray, staged: bool):
        torch = self.torch
        if staged:  # a slice of the pinned tensor itself, so torch sees pinned memory
            start = src.ctypes.data - self._host.data_ptr()
            host = self._host[start : start + src.size]
        else:
            host = torch.from_numpy(src)
        with torch.cuda.stream(self.stream):
            dst[offset : offset + src.size].copy_(host, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.stream)
        return event

    def wait(self, event) -> None:
        event.synchronize()

    def finish(self) -> None:
        self.torch.cuda.current_stream(self.device).wait_stream(self.stream)
        self.stream.synchronize()
