"""Small synthetic checkpoints built in memory: what ``zipmodel warmup`` and the batch
workers' fork server run through the pipeline so that the kernels load (or compile) with the
argument types production passes, before any real file arrives."""

from __future__ import annotations

import json
import struct

import numpy as np

__all__ = ["safetensors_sample"]


def safetensors_sample(cols: int = 128) -> bytes:
    """A small safetensors file: weight-like BF16, F16 and F32 matrices (rows of ``cols``), a
    bias, an integer."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((96, cols)) * 0.02).astype(np.float32)
    tensors = {
        "bf16.weight": ("BF16", (w.view(np.uint32) >> 16).astype(np.uint16)),
        "f16.weight": ("F16", w.astype(np.float16)),
        "f32.bias": ("F32", w[0].copy()),
        "f32.weight": ("F32", w),
        "ids": ("I64", np.arange(64, dtype=np.int64)),
    }
    header, blobs, pos = {}, [], 0
    for name, (dtype, a) in tensors.items():
        b = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)
