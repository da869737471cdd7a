"""The codec chooser: entropy estimates, near-random shortcuts, constant streams."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from zipmodel.codecs.select import (
    SAMPLE,
    encode_stream,
    entropy_bytes,
    histogram,
    histogram4,
    policy_for_level,
)


def naive_entropy_bytes(hist) -> float:
    c = np.asarray(hist, np.float64)
    c = c[c > 0]
    return 0.0 if c.size == 0 else float(-(c * np.log2(c / c.sum())).sum() / 8)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 10**9), min_size=256, max_size=256))
def test_entropy_matches_reference(counts):
    h = np.array(counts, np.int64)
    assert np.isclose(entropy_bytes(h), naive_entropy_bytes(h), rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=5000))
def test_histograms_count_every_byte(b):
    a = np.frombuffer(b, np.uint8)
    ref = np.bincount(a, minlength=256)
    assert np.array_equal(histogram(a), ref)
    assert np.array_equal(histogram4(a).sum(axis=0), ref)


def test_histogram_needs_one_compile_whoever_calls():
    """Writeable streams (a transform's output) and read-only ones (mapped tensor bytes) go to
    the one specialisation warmup compiles: no compile waits on the first stream of a kind."""
    from zipmodel import _jit

    kernel = _jit.kernels("split")._hist
    before = set(kernel.signatures)
    writeable = np.arange(1000, dtype=np.uint8)
    readonly = np.frombuffer(bytes(range(256)) * 4, np.uint8)
    assert writeable.flags.writeable and not readonly.flags.writeable
    assert histogram(writeable).sum() == 1000 and histogram(readonly).sum() == 1024
    assert writeable.flags.writeable  # the caller's array is left as it was
    new = set(kernel.signatures) - before
    assert not any(sig[0].mutable for sig in new), new


def test_near_random_field_is_raw_and_constant_is_const():
    rng = np.random.default_rng(0)
    policy = policy_for_level("default")
    noise = rng.integers(0, 256, 8 * SAMPLE, dtype=np.uint8)
    cid, payload, _ = encode_stream(noise, "field", policy)
    assert cid == 0 and payload is noise
    const = np.full(8 * SAMPLE, 7, np.uint8)
    assert encode_stream(const, "field", policy)[:2] == (1, b"\x07")
    # a skewed stream is not near-random on its sample: decided on the whole stream, coded
    skewed = np.minimum(rng.geometric(0.3, 8 * SAMPLE), 255).astype(np.uint8)
    cid, payload, _ = encode_stream(skewed, "field", policy)
    assert cid in (3, 4) and len(payload) < skewed.size // 2
