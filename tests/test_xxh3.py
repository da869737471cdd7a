"""The XXH3-64 kernel (inside the one-call frame coders) against python-xxhash (the
reference, and what ``zipmodel._checksum.xxh3_64`` calls), on every length path, aligned and
unaligned, read-only and writable."""

import numpy as np
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from zipmodel import _jit
from zipmodel._checksum import xxh3_64

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


def test_checksum_of_any_buffer_is_of_its_bytes():
    """Arrays of any dtype, strided views, memoryviews and bytes hash as their bytes."""
    buf = np.random.default_rng(3).integers(0, 256, (1 << 20) + 1, dtype=np.uint8)
    words = buf[:-1].view(np.float32).reshape(512, 512)
    for a in (buf, buf[1:], words, words[:, ::2], words.T, memoryview(buf), buf.tobytes()):
        want = xxhash.xxh3_64_intdigest(np.ascontiguousarray(a).tobytes(), seed=7)
        assert xxh3_64(a, 7) == want


def test_python_xxhash_releases_the_gil():
    """The dependency floor (xxhash>=3.0) is the release that always releases the GIL."""
    major = int(xxhash.VERSION.split(".")[0])
    assert major >= 3


@settings(max_examples=50)
@given(st.binary(max_size=5000), st.integers(0, 2**64 - 1))
def test_kernel_matches_xxhash_random(data, seed):
    a = np.frombuffer(data, np.uint8)
    assert kernel(a, seed) == xxhash.xxh3_64_intdigest(data, seed=seed)
    assert xxh3_64(data, seed) == xxhash.xxh3_64_intdigest(data, seed=seed)
