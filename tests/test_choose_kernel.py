"""The one-call field-stream chooser (``zipmodel._kernels.choose``) against the Python chooser
it short-cuts: same codec, same payload bytes, on any stream, at the ``fast`` (Huffman) and
``default`` (Huffman or rANS, then the zstd probe) levels."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import zipmodel.codecs.select as select
from subproc import run_python
from zipmodel.codecs.select import SAMPLE, encode_stream, policy_for_level


def _both(data: np.ndarray, level: str, layout=None):
    policy = policy_for_level(level)
    assert select._order0_only(policy, layout)
    fused = encode_stream(data, "field", policy, None, layout)
    fused = (fused[0], bytes(memoryview(fused[1]).cast("B")), fused[2])
    real = select._order0_only
    select._order0_only = lambda *a: False
    try:
        python = encode_stream(data, "field", policy, None, layout)
    finally:
        select._order0_only = real
    python = (python[0], bytes(memoryview(python[1]).cast("B")), python[2])
    return fused, python


def _stream(kind: str, n: int, seed: int, p: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "geometric":  # exponent-like: a few symbols carry most of the mass
        return np.minimum(rng.geometric(p, n) + 100, 255).astype(np.uint8)
    if kind == "uniform":  # sign|mantissa-like: near-random
        return rng.integers(0, 256, n, dtype=np.uint8)
    if kind == "near8":  # entropy close to 8 bits: either side of the near-random limits
        out = rng.integers(0, 256, n, dtype=np.uint8)
        out[rng.random(n) < p / 8] = 0
        return out
    if kind == "few":  # 1 or 2 symbols (const, or the smallest Huffman code)
        return (rng.random(n) < p).astype(np.uint8) * 7
    mix = rng.integers(0, 256, n, dtype=np.uint8)  # random bytes with a skewed part
    mix[: n // 2] = np.minimum(rng.geometric(p, n // 2), 255).astype(np.uint8)
    return mix


@given(
    kind=st.sampled_from(["geometric", "uniform", "near8", "few", "mixed"]),
    n=st.one_of(st.integers(0, 5000), st.integers(4 * SAMPLE - 2, 4 * SAMPLE + 40000)),
    seed=st.integers(0, 2**32 - 1),
    p=st.sampled_from([0.001, 0.05, 0.1, 0.15, 0.3, 0.7, 0.999]),
    level=st.sampled_from(["fast", "default"]),
)
def test_same_choice_and_payload_as_python_chooser(kind, n, seed, p, level):
    data = _stream(kind, n, seed, p)
    fused, python = _both(data, level)
    assert fused == python


@given(data=st.binary(max_size=3000), level=st.sampled_from(["fast", "default"]))
def test_any_bytes(data, level):
    arr = np.frombuffer(data, np.uint8)
    fused, python = _both(arr, level, layout=(64, 0))
    assert fused == python


def _structured(n: int) -> np.ndarray:
    """A field stream with repeats only zstd finds: a skewed 4 KiB block over and over."""
    block = _stream("geometric", 4096, 9, 0.3)
    return np.resize(block, n)


@pytest.mark.parametrize(
    ("level", "kind", "want"),
    [
        ("fast", "geometric", 3),
        ("fast", "uniform", 0),
        ("fast", "few", 1),
        ("fast", "mixed", 3),
        ("fast", "structured", 3),  # fast never tries zstd on a field
        ("default", "geometric", 4),  # rANS: more than 1% under Huffman on skewed data
        ("default", "uniform", 0),
        ("default", "few", 1),
        ("default", "structured", 2),  # the zstd probe finds the repeats
    ],
)
def test_each_outcome_is_reached(level, kind, want):
    if kind == "structured":
        data = _structured(300_000)
    else:
        data = _stream(
            kind, 300_000, 5, 0.7 if kind == "geometric" else 0.0 if kind == "few" else 0.3
        )
    fused, python = _both(data, level)
    assert fused == python
    assert fused[0] == want


def test_max_keeps_the_python_chooser():
    assert select._order0_only(policy_for_level("fast"), None)
    assert select._order0_only(policy_for_level("default"), None)
    assert not select._order0_only(policy_for_level("max"), None)


def fixed_cases() -> None:
    for level in ("fast", "default"):
        for kind in ("geometric", "uniform", "near8", "few", "mixed"):
            for n in (0, 1, 3000, 4 * SAMPLE + 5):
                fused, python = _both(_stream(kind, n, 3, 0.1), level)
                assert fused == python, (level, kind, n)


def test_kernel_bodies_without_jit():
    """NUMBA_DISABLE_JIT=1: the chooser kernel as Python gives the same choices and bytes."""
    run_python("import test_choose_kernel as t; t.fixed_cases()", NUMBA_DISABLE_JIT="1")
