"""Our ggml block quantizers (zipmodel._kernels.kquant via zipmodel.stages.kquant_blocks):

(a) the blocks are ggml's: gguf-py's dequantizer reads exactly our dequantizer's floats,
    on uniform, LLM-like normal and heavy-tailed rows, and on random block bytes;
(b) the kernels equal the slow references in tests/naive_kquant.py (every dequantizer, and
    the Q8_0 search byte for byte);
(c) our error is no larger than llama.cpp's own quantizers' on the same rows (when the peer
    library ../shared/peers/ggml/libggml-base.so is there; skipped otherwise);
(d) edge cases: zero, constant, subnormal, outlier and huge rows; non-finite input refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import naive_kquant as naive
from zipmodel.stages.kquant_blocks import BLOCK, QTYPES, dequantize_blocks, quantize_blocks

gguf = pytest.importorskip("gguf")

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "ggml"


def rows(kind: str, n_rows: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(-1, 1, (n_rows, n)).astype(np.float32)
    if kind == "normal":
        return (rng.standard_normal((n_rows, n)) * 0.02).astype(np.float32)
    if kind == "student_t":
        return (rng.standard_t(3, (n_rows, n)) * 0.02).astype(np.float32)
    raise ValueError(kind)


def gguf_deq(blocks: np.ndarray, qtype: str) -> np.ndarray:
    t = getattr(gguf.GGMLQuantizationType, qtype.upper())
    return np.asarray(gguf.quants.dequantize(blocks.reshape(-1), t), np.float32).reshape(-1)


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.uint32)


def rel_rms(y: np.ndarray, x: np.ndarray) -> float:
    x = x.astype(np.float64).reshape(-1)
    return float(np.sqrt(((y.astype(np.float64).reshape(-1) - x) ** 2).sum() / (x**2).sum()))


# ---------------------------------------------------------------------------------------
# (a) format


@pytest.mark.parametrize("kind", ["uniform", "normal", "student_t"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_gguf_reads_our_blocks(qtype, kind):
    x = rows(kind, 6, 512, seed=hash((qtype, kind)) % 1000)
    b = quantize_blocks(x, qtype)
    nblock, nbytes = BLOCK[qtype]
    assert b.dtype == np.uint8 and b.shape == (6, 512 // nblock * nbytes)
    ours = dequantize_blocks(b, qtype)
    assert np.array_equal(bits(ours), bits(gguf_deq(b, qtype)))
    assert rel_rms(ours, x) < {"q8_0": 0.01, "q6_k": 0.03, "q5_k": 0.06}.get(qtype, 0.25)


def random_blocks(qtype: str, n: int, seed: int) -> np.ndarray:
    """Random bytes in every field, with finite fp16 scales (NaN payloads aside)."""
    rng = np.random.default_rng(seed)
    _, nbytes = BLOCK[qtype]
    b = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    f16_at = {"q8_0": (0,), "q3_k": (108,), "q4_k": (0, 2), "q5_k": (0, 2), "q6_k": (208,),
              "iq4_xs": (0,)}[qtype]  # fmt: skip
    for p in f16_at:
        h = rng.standard_normal(n).astype(np.float16) * np.float16(0.01)
        b[:, p : p + 2] = h.view(np.uint8).reshape(n, 2)
    return b


@pytest.mark.parametrize("qtype", QTYPES)
def test_random_block_bytes_dequantize_like_gguf_and_naive(qtype):
    b = random_blocks(qtype, 5, seed=len(qtype))
    ours = dequantize_blocks(b, qtype)
    assert np.array_equal(bits(ours), bits(gguf_deq(b, qtype)))
    assert np.array_equal(bits(ours), bits(naive.dequantize(b, qtype)))


# ---------------------------------------------------------------------------------------
# (b) naive references


@pytest.mark.parametrize("qtype", QTYPES)
def test_dequantize_equals_naive(qtype):
    x = rows("student_t", 2, 256, seed=3)
    b = quantize_blocks(x, qtype)
    assert np.array_equal(bits(dequantize_blocks(b, qtype)), bits(naive.dequantize(b, qtype)))


@pytest.mark.parametrize("effort", [0, 1, 2])
@pytest.mark.parametrize("kind", ["uniform", "normal", "student_t"])
def test_q8_0_search_equals_naive(kind, effort):
    x = rows(kind, 1, 32 * 6, seed=effort)
    x[0, 40] = 0.0
    x[0, 64:96] = 0  # a zero block
    x[0, 96:128] = 1e-3 * np.float32(7)  # a constant block
    got = quantize_blocks(x, "q8_0", effort=effort).tobytes()
    want = b"".join(naive.quantize_q8_0_block(x[0, i : i + 32], effort) for i in range(0, 192, 32))
    assert got == want


def test_f16_rounding_matches_numpy():
    from zipmodel._jit import kernels

    k = kernels("kquant")
    # the helpers are internal (no CPython wrapper): go through a Q8_0 block of constant v,
    # whose scale is v/127 rounded to fp16 or a neighbour; check decoding of every fp16 code
    codes = np.arange(0x7C00, dtype=np.uint16)
    blocks = np.zeros((codes.size, 34), np.uint8)
    blocks[:, :2] = codes.view(np.uint8).reshape(-1, 2)
    blocks[:, 2] = 1  # q = 1: the value is d itself
    y = np.empty(codes.size * 32, np.float32)
    k.dequantize_q8_0(blocks.reshape(-1), y)
    assert np.array_equal(bits(y[::32]), bits(codes.view(np.float16).astype(np.float32)))


# ---------------------------------------------------------------------------------------
# (c) against llama.cpp's quantizers


@pytest.fixture(scope="module")
def ggml():
    if not (PEER / "libggml-base.so").exists():
        pytest.skip("ggml peer library not built (../shared/peers/ggml)")
    sys.path.insert(0, str(PEER))
    try:
        import ggml_quant
    except Exception as e:  # no safetensors, a library that does not load, ...
        pytest.skip(f"ggml peer not usable: {e}")
    finally:
        sys.path.remove(str(PEER))
    return ggml_quant


@pytest.mark.parametrize("kind", ["normal", "student_t"])
@pytest.mark.parametrize("qtype", QTYPES)
def test_error_no_worse_than_ggml(ggml, qtype, kind):
    x = rows(kind, 16, 1024, seed=7)
    ours = dequantize_blocks(quantize_blocks(x, qtype), qtype)
    theirs, nbytes = ggml.quantize(x, qtype.upper())
    assert nbytes == quantize_blocks(x[:1], qtype).size * 16
    assert rel_rms(ours, x) <= rel_rms(theirs, x)


# ---------------------------------------------------------------------------------------
# (d) edge cases


@pytest.mark.parametrize("qtype", QTYPES)
def test_zero_rows(qtype):
    x = np.zeros((2, 256), np.float32)
    b = quantize_blocks(x, qtype)
    assert not np.any(dequantize_blocks(b, qtype))
    assert not np.any(gguf_deq(b, qtype))


@pytest.mark.parametrize("value", [0.5, -0.5, 3e-3, 1000.0])
@pytest.mark.parametrize("qtype", QTYPES)
def test_constant_rows(qtype, value):
    x = np.full((1, 256), value, np.float32)
    y = dequantize_blocks(quantize_blocks(x, qtype), qtype)
    assert np.all(np.isfinite(y))
    # an fp16 scale times integers; at 3e-3 the Q6_K/IQ4_XS super-block scale d (value / 31 /
    # 127) is an fp16 subnormal with a few bits of precision
    assert rel_rms(y, x) < (1e-2 if abs(value) < 0.01 else 2e-3)


@pytest.mark.parametrize("qtype", QTYPES)
def test_subnormal_and_tiny_rows(qtype):
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            (rng.standard_normal(256) * 1e-40).astype(np.float32),  # float32 subnormals
            (rng.standard_normal(256) * 1e-6).astype(np.float32),  # near fp16's subnormals
        ]
    ).reshape(1, -1)
    b = quantize_blocks(x, qtype)
    y = dequantize_blocks(b, qtype)
    assert np.array_equal(bits(y), bits(gguf_deq(b, qtype)))
    assert np.all(np.isfinite(y))
    for i in range(0, 512, 256):  # never worse than storing zeros
        assert ((y[i : i + 256] - x[0, i : i + 256].astype(np.float64)) ** 2).sum() <= (
            x[0, i : i + 256].astype(np.float64) ** 2
        ).sum()


@pytest.mark.parametrize("qtype", QTYPES)
def test_one_huge_outlier(qtype):
    x = rows("normal", 1, 512, seed=11)
    x[0, 300] = 50.0
    y = dequantize_blocks(quantize_blocks(x, qtype), qtype)
    assert abs(y[300] - 50.0) < 50.0 * 0.1
    err = (y.astype(np.float64) - x[0]) ** 2
    assert err.sum() <= (x[0].astype(np.float64) ** 2).sum() * 0.01
    assert rel_rms(y[:256], x[0, :256]) < 0.3  # the other super-block is untouched


@pytest.mark.parametrize("qtype", QTYPES)
def test_values_beyond_fp16_scales_are_clipped_not_inf(qtype):
    x = rows("normal", 1, 256, seed=2) * np.float32(1e12)
    y = dequantize_blocks(quantize_blocks(x, qtype), qtype)
    assert np.all(np.isfinite(y))
    assert np.abs(y).max() <= 65504.0 * 128 * 127


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(bad):
    x = rows("normal", 2, 256)
    x[1, 7] = bad
    with pytest.raises(ValueError, match=r"non-finite value .* row 1, column 7"):
        quantize_blocks(x, "q4_k")


def test_shape_and_type_errors():
    with pytest.raises(ValueError, match="multiple of 256"):
        quantize_blocks(np.zeros((1, 100), np.float32), "q4_k")
    with pytest.raises(ValueError, match="2-D"):
        quantize_blocks(np.zeros(256, np.float32), "q4_k")
    with pytest.raises(ValueError, match="unknown block type"):
        quantize_blocks(np.zeros((1, 256), np.float32), "q2_k")
    with pytest.raises(ValueError, match="whole number"):
        dequantize_blocks(np.zeros(100, np.uint8), "q4_k")


def test_uniform_weights_are_the_default_and_threads_do_not_change_bytes():
    x = rows("student_t", 512, 1024, seed=9)  # 2**19 elements: two threads
    a = quantize_blocks(x, "q8_0", threads=1)
    assert np.array_equal(a, quantize_blocks(x, "q8_0", threads=2))
    small = x[:4]
    assert np.array_equal(
        quantize_blocks(small, "q4_k"), quantize_blocks(small, "q4_k", weights=np.ones_like(small))
    )


def test_weights_steer_the_error():
    x = rows("student_t", 8, 256, seed=4)
    w = np.ones_like(x)
    w[:, :32] = 100.0  # the first sub-block matters most
    for qtype in ("q4_k", "q3_k", "iq4_xs"):
        plain = dequantize_blocks(quantize_blocks(x, qtype), qtype).reshape(x.shape)
        weighted = dequantize_blocks(quantize_blocks(x, qtype, weights=w), qtype).reshape(x.shape)
        e_plain = (w * (plain - x) ** 2).sum()
        e_weighted = (w * (weighted - x) ** 2).sum()
        assert e_weighted < e_plain
