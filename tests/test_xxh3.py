import numpy as np
import pytest
import xxhash
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("n", LENGTHS)
def test_matches_xxhash_every_path(n):
    rng = np.random.default_rng(n)
    buf = rng.integers(0, 256, n + 8, dtype=np.uint8)
    for off in (0, 1, 5):  # aligned and unaligned starts
        a = buf[off : off + n]
        for seed in (0, 1, 0x9E3779B1, 2**63 + 11, 2**64 - 1):
            assert xxh3_64(a, seed) == xxhash.xxh3_64_intdigest(a.tobytes(), seed=seed)


@given(st.binary(max_size=5000), st.integers(0, 2**64 - 1))
def test_matches_xxhash_random(data, seed):
    assert xxh3_64(data, seed) == xxhash.xxh3_64_intdigest(data, seed=seed)
