"""Compile every Numba kernel now (``zipmodel warmup``): for Docker images and CI caches.

Commands compile what they use on first use (``zipmodel._jit``); this module compiles all of
it ahead, at every level, by running the real pipeline on small synthetic checkpoints (so the
kernels see exactly the argument types production passes) plus the codecs and transforms on
aligned, unaligned, read-only and writable buffers. The work is split into independent groups
that run in parallel processes (``jobs``), each filling the same Numba cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from .samples import safetensors_sample

__all__ = ["GROUPS", "run_group", "warmup"]

# Independent groups of kernels: "max" is the 2-D and context rANS coders (level max), "core"
# everything the fast and default levels and every decoder use, "ggml" the block quantizers
# and dequantizers of the ggml presets (--lossy q4_k, ...: about 15 s cold).
GROUPS = ("core", "max", "ggml")


def warmup(jobs: int = 0) -> float:
    """Compile (or load from the cache) every kernel; returns the seconds it took.

    ``jobs``: processes compiling at once (0: one per core, at most one per group)."""
    t0 = time.perf_counter()
    jobs = jobs or min(len(GROUPS), os.cpu_count() or 1)
    if jobs <= 1:
        for g in GROUPS:
            run_group(g)
    else:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", f"from zipmodel.warmup import run_group; run_group({g!r})"],
                stdin=subprocess.DEVNULL,
            )
            for g in GROUPS[1:]
        ]
        try:
            run_group(GROUPS[0])
        finally:
            failed = [p for p in procs if p.wait() != 0]
        if failed:
            raise RuntimeError("a kernel warm-up process failed; see its message above")
        for g in GROUPS[1:]:  # load what the other processes compiled into this one
            run_group(g)
    return time.perf_counter() - t0


def run_group(group: str) -> None:
    """Compile one group's kernels in this process."""
    if group == "core":
        _round_trips(("fast", "default"))
        _codecs_and_transforms()
    elif group == "max":
        _round_trips(("max",))
    elif group == "ggml":
        _ggml_round_trips()
    else:
        raise ValueError(f"unknown warm-up group {group!r} (one of {', '.join(GROUPS)})")


def _round_trips(levels) -> None:
    from .api import compress_bytes, decompress_bytes

    data = safetensors_sample()
    for level in levels:
        for threads in (1, 2):
            blob = compress_bytes(data, level=level, chunk_size=16 << 10, threads=threads)
            if decompress_bytes(blob, threads=threads) != data:
                raise RuntimeError(f"warm-up round trip at level {level} differs")


def _ggml_round_trips() -> None:
    """Each ggml preset through the pipeline (its quantizer and dequantizer, as compress and
    decompress call them)."""
    from .api import compress_bytes, decompress_bytes
    from .options import GGML_PRESETS

    data = safetensors_sample(256)  # rows of whole 256-blocks: every K-type, not its q8_0 fallback
    for preset in GGML_PRESETS:
        blob = compress_bytes(data, lossy=preset, chunk_size=16 << 10, threads=1)
        if len(decompress_bytes(blob, threads=1)) != len(data):
            raise RuntimeError(f"warm-up round trip of {preset} lost bytes")


def _codecs_and_transforms() -> None:
    """Each codec and transform on aligned/unaligned, read-only/writable buffers, and the
    one-call frame decoder on frames of each transform and codec it handles."""
    from ._checksum import xxh3_64
    from .codecs import CODECS, get_codec
    from .codecs.select import entropy_bytes, histogram, histogram4
    from .container.format import CHUNK_MAGIC, NO_CONTEXT
    from .container.frames import HEADROOM, StreamInfo, build_frame
    from .pipeline.fused import decode_frame_fused
    from .stages import TRANSFORMS

    rng = np.random.default_rng(0)
    raw = np.frombuffer(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), np.uint8)
    for src in (raw, raw[1 : 1 + 4092]):
        for t in TRANSFORMS.values():
            streams = t.forward(src)
            for shift in (0, 1):
                out = np.empty(src.size + 1, np.uint8)[shift : shift + src.size]
                t.inverse(streams, out)
                t.inverse([np.frombuffer(s.tobytes(), np.uint8) for s in streams], out)
    entropy_bytes(histogram(raw))
    histogram4(raw)
    skewed = np.frombuffer(
        np.minimum(rng.geometric(0.4, 4096), 255).astype(np.uint8).tobytes(), np.uint8
    )
    for cid in CODECS:
        c = get_codec(cid)
        for data in (skewed, raw):
            ctx = skewed if c.uses_context else None
            payload = c.encode(data, ctx) if ctx is not None else c.encode(data)
            if payload is None:
                continue
            out = np.empty(data.size, np.uint8)
            if ctx is not None:
                c.decode(memoryview(payload), out, ctx)
            else:
                c.decode(memoryview(payload), out)
    for t in TRANSFORMS.values():
        for data in (skewed, raw):
            for cid in (0, 3, 4):
                streams = t.forward(data)
                payloads = [s if cid == 0 else get_codec(cid).encode(s) for s in streams]
                if any(p is None for p in payloads):
                    continue
                payloads = [bytes(memoryview(p)) for p in payloads]
                infos = [
                    StreamInfo(cid, NO_CONTEXT, s.size, len(p)) for s, p in zip(streams, payloads)
                ]
                (frame,) = build_frame(
                    CHUNK_MAGIC, t.transform_id, 0, data.size, xxh3_64(data), infos, payloads
                )
                fb = np.empty(HEADROOM + frame.size, np.uint8)
                fb[HEADROOM:] = frame
                row = {"transform": t.transform_id, "src_offset": 0, "n_streams": t.n_streams}
                for shift in (0, 1):
                    out = np.empty(data.size + 1, np.uint8)[shift : shift + data.size]
                    decode_frame_fused(fb, frame.size, out, row)
