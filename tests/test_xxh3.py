"""The XXH3-64 kernel against python-xxhash (the reference), on every length path, aligned
and unaligned, read-only and writable, and through ``zipmodel._checksum.xxh3_64``'s routing
(python-xxhash below ``KERNEL_MIN`` bytes and for one-shot hashes, the kernel above)."""

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from zipmodel import _jit
from zipmodel._checksum import KERNEL_MIN, xxh3_64

LENGTHS = [
    *range(0, 260),
    511,
    512,
    1023,
    1024,
    1025,
    1087,
    1088,
    2047,
    2048,
    2049,
    4096 + 63,
    100_003,
]
SEEDS = (0, 1, 0x9E3779B1, 2**63 + 11, 2**64 - 1)


def kernel(a: np.ndarray, seed: int) -> int:
    """The Numba kernel itself: word path on an aligned start, byte path elsewhere."""
    k = _jit.kernels("xxh3")
    n = a.size
    aligned = a.ctypes.data % 8 == 0
    words = a[: n - n % 8 if aligned else 0].view(np.uint64)
    return int(k.xxh3_64(a, words, aligned, np.uint64(seed)))


@pytest.mark.parametrize("n", LENGTHS)
def test_kernel_matches_xxhash_every_path(n):
    rng = np.random.default_rng(n)
    buf = rng.integers(0, 256, n + 8, dtype=np.uint8)
    for off in (0, 1, 5):  # aligned and unaligned starts
        a = buf[off : off + n]
        ro = a.view()
        ro.flags.writeable = False
        for seed in SEEDS:
            want = xxhash.xxh3_64_intdigest(a.tobytes(), seed=seed)
            assert kernel(a, seed) == want
            assert kernel(ro, seed) == want
            assert xxh3_64(a, seed) == want


@pytest.mark.parametrize("n", [KERNEL_MIN - 1, KERNEL_MIN, KERNEL_MIN + 13])
def test_routing_at_the_kernel_threshold(n):
    buf = np.random.default_rng(n).integers(0, 256, n + 1, dtype=np.uint8)
    for a in (buf[:n], buf[1:], np.frombuffer(buf[:n].tobytes(), np.uint8)):
        want = xxhash.xxh3_64_intdigest(a.tobytes(), seed=7)
        assert xxh3_64(a, 7) == want
        assert xxh3_64(a, 7, release_gil=False) == want
        assert xxh3_64(a.tobytes(), 7) == want


@settings(max_examples=50)
@given(st.binary(max_size=5000), st.integers(0, 2**64 - 1))
def test_kernel_matches_xxhash_random(data, seed):
    a = np.frombuffer(data, np.uint8)
    assert kernel(a, seed) == xxhash.xxh3_64_intdigest(data, seed=seed)
    assert xxh3_64(data, seed) == xxhash.xxh3_64_intdigest(data, seed=seed)
