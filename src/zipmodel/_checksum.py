"""XXH3-64 checksums of the container.

Two implementations, bit-exact with each other (``tests/test_xxh3.py``):

* python-xxhash (C, no compile step) for buffers under :data:`KERNEL_MIN` bytes and for
  one-shot hashes (``release_gil=False``: index, headers). It holds the GIL, which costs
  nothing on a 64 KiB buffer but capped two decoding threads at ~1.3x one on 1 MiB chunks.
* the Numba kernel (``zipmodel._kernels.xxh3``) for large buffers hashed on the worker pool:
  it releases the GIL. It is compiled (or loaded from Numba's cache) on first use only, so a
  command that hashes nothing large (``info``, a small file) never imports Numba.
"""

from __future__ import annotations

import threading

import numpy as np
import xxhash

__all__ = ["KERNEL_MIN", "xxh3_64"]

KERNEL_MIN = 256 << 10  # from here on the GIL-free kernel pays for its first-use cost
_EMPTY_WORDS = np.zeros(0, np.uint64)


def xxh3_64(data, seed: int = 0, *, release_gil: bool = True) -> int:
    """XXH3-64 of a bytes-like object or uint8 array (C-contiguous).

    ``release_gil=False`` always uses python-xxhash (a hash the caller waits for alone)."""
    if not isinstance(data, np.ndarray):
        if not release_gil or len(data) < KERNEL_MIN:
            return xxhash.xxh3_64_intdigest(data, seed)
        a = np.frombuffer(data, np.uint8)
    else:
        a = data
        if a.dtype != np.uint8 or a.ndim != 1:
            a = a.reshape(-1).view(np.uint8)
        if not release_gil or a.size < KERNEL_MIN:
            return xxhash.xxh3_64_intdigest(a, seed)
    from . import _jit

    k = _jit.kernels("xxh3")
    if a.ctypes.data % 8:  # the word path needs an aligned start: hash an aligned copy
        a = _aligned_copy(a)
    n = a.size
    ro = _readonly(a)  # one array type, one compiled signature, whatever the caller passed
    return int(k.xxh3_64(ro, ro[: n - n % 8].view(np.uint64), True, np.uint64(seed)))


def _readonly(a: np.ndarray) -> np.ndarray:
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v


_local = threading.local()


def _aligned_copy(a: np.ndarray) -> np.ndarray:
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < a.size:
        buf = _local.buf = np.empty(max(a.size, 1 << 20), np.uint8)  # numpy aligns to 16+
    out = buf[: a.size]
    out[:] = a
    return out
