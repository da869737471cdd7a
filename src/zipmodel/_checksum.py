"""XXH3-64 checksums of the container, computed without holding the GIL.

``xxh3_64`` dispatches to the Numba kernel (``zipmodel._kernels.xxh3``), using the aligned
word path when the buffer allows it. Results equal ``xxhash.xxh3_64_intdigest``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["xxh3_64"]

_k = None


def _kernels():
    global _k
    if _k is None:
        from . import _jit

        _jit.ensure_ready()
        from ._kernels import xxh3

        _k = xxh3
    return _k


def xxh3_64(data, seed: int = 0) -> int:
    """XXH3-64 of a bytes-like object or uint8 array."""
    a = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if a.dtype != np.uint8 or a.ndim != 1:
        a = a.reshape(-1).view(np.uint8)
    k = _kernels()
    s = np.uint64(seed)
    n = a.size
    if n >= 1024:
        if a.ctypes.data % 8:  # the word path needs an aligned start: hash an aligned copy
            a = _aligned_copy(a)
        return int(k._xxh3_64_aligned(a, a[: n - n % 8].view(np.uint64), s))
    return int(k._xxh3_64(a, s))


def _aligned_copy(a: np.ndarray) -> np.ndarray:
    import threading

    local = _aligned_copy.__dict__.setdefault("local", threading.local())
    buf = getattr(local, "buf", None)
    if buf is None or buf.size < a.size:
        buf = local.buf = np.empty(max(a.size, 1 << 20), np.uint8)  # numpy aligns to 16+
    out = buf[: a.size]
    out[:] = a
    return out
