"""The rans and rans-ctx codecs: kernels against the textbook reference, size, hostile input."""

import json
import math
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive_rans
from zipmodel._kernels import rans as kernels
from zipmodel.codecs.rans import PROB_BITS, RansCodec, RansCtxCodec
from zipmodel.errors import CorruptDataError

RANS, CTX = RansCodec(), RansCtxCodec()
KINDS = ("two", "all256", "skewed", "exponent", "uniform", "geometric")


def enc(codec, *args):
    """The codec's payload as bytes (encode may return a view of its per-thread scratch)."""
    p = codec.encode(*args)
    return None if p is None else bytes(p)


def make(kind: str, n: int, seed: int) -> np.ndarray:
    """A test stream of ``n`` bytes with the named shape."""
    rng = np.random.default_rng(seed)
    if kind == "two":
        d = rng.integers(0, 2, n) * 200 + 7
    elif kind == "all256":
        d = rng.integers(0, 256, n)
        d[: min(n, 256)] = np.arange(min(n, 256))
    elif kind == "skewed":  # p(0) > 0.99
        d = np.where(rng.random(n) < 0.995, 0, rng.integers(1, 256, n))
    elif kind == "exponent":  # the exponent byte of bf16 weights ~ N(0, 0.02)
        w = (rng.normal(0, 0.02, n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        d = ((w << 1) | (w >> 15)) >> 8
    elif kind == "uniform":
        d = rng.integers(0, 256, n)
    else:
        d = np.minimum(rng.geometric(0.2, n), 255)
    return np.ascontiguousarray(d, np.uint8)


streams = st.builds(
    make, st.sampled_from(KINDS), st.integers(1, 3000) | st.integers(1, 200_000), st.integers(0, 99)
)


def roundtrip(data: np.ndarray) -> bytes | None:
    payload = enc(RANS, data)
    if payload is not None:
        out = np.empty_like(data)
        RANS.decode(memoryview(payload), out)
        assert np.array_equal(out, data)
    return payload


def header_size(payload: bytes) -> int:
    """Bytes before the word stream of a rans payload (table + states)."""
    m = 1 << payload[0]
    present = sum(bin(b).count("1") for b in payload[1:33])
    p, total = 33, 0
    for _ in range(present):
        v = 0
        for k in range(3):
            v |= (payload[p] & 127) << (7 * k)
            p += 1
            if payload[p - 1] < 128:
                break
        total += v + 1
    assert total == m
    return p + 32


# ------------------------------------------------------------------------ frequency tables


hists = st.lists(st.integers(0, 10**6) | st.integers(0, 3), min_size=2, max_size=256).filter(
    lambda h: sum(1 for v in h if v) >= 1
)


@given(hist=hists, prob_bits=st.integers(8, 14))
def test_normalize_matches_reference(hist, prob_bits):
    hist = np.array(hist + [0] * (256 - len(hist)), np.int64)
    freq = np.zeros(256, np.int64)
    kernels._normalize(hist, prob_bits, freq)
    assert freq.tolist() == naive_rans.normalize(hist, prob_bits)
    assert freq.sum() == 1 << prob_bits
    assert np.array_equal(freq > 0, hist > 0), "every present symbol gets a frequency"


@given(hist=st.lists(st.integers(0, 1000), min_size=3, max_size=3).filter(lambda h: any(h)))
def test_normalize_is_optimal(hist):
    """Against every table of 3 symbols summing to 16."""
    h = np.array(hist, np.int64)
    freq = np.zeros(3, np.int64)
    kernels._normalize(h, 4, freq)

    def cost(f):
        return sum(c * math.log2(16 / x) for c, x in zip(hist, f) if c)

    best = min(
        cost((a, b, 16 - a - b))
        for a in range(17)
        for b in range(17 - a)
        if all(x > 0 for x, c in zip((a, b, 16 - a - b), hist) if c)
    )
    assert cost(freq) <= best + 1e-9


# ------------------------------------------------------------------------ rans


@settings(max_examples=40)
@given(data=streams)
def test_rans_matches_reference(data):
    payload = roundtrip(data)
    if np.unique(data).size < 2:
        assert payload is None
        return
    if data.size <= 20_000:
        freq = naive_rans.normalize(np.bincount(data, minlength=256), PROB_BITS)
        assert payload == naive_rans.encode(data.tobytes(), freq, PROB_BITS)
        assert naive_rans.decode(payload, data.size) == data.tobytes()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 17, 4095, 200_001])
def test_rans_roundtrip(kind, n):
    data = make(kind, n, n)
    payload = roundtrip(data)
    assert (payload is None) == (np.unique(data).size < 2)


def test_rans_not_applicable():
    assert enc(RANS, np.zeros(0, np.uint8)) is None
    assert enc(RANS, np.full(1000, 3, np.uint8)) is None
    assert RANS.estimate(np.bincount(np.full(10, 3), minlength=256), 10) is None
    with pytest.raises(ValueError, match="256"):
        RANS.estimate(np.ones(300, np.int64), 300)
    with pytest.raises(ValueError, match="uint8"):
        enc(RANS, np.zeros(4, np.uint16))


def test_codec_identity():
    assert (RANS.codec_id, RANS.name, CTX.codec_id, CTX.name) == (4, "rans", 5, "rans-ctx")
    assert CTX.uses_context and not getattr(RANS, "uses_context", False)
    assert CTX.estimate(np.ones(256, np.int64), 256) is None


@pytest.mark.parametrize("prob_bits", [8, 9, 12, 13])
def test_rans_decodes_other_prob_bits(prob_bits):
    """The format allows P = 8..14; this encoder writes 14, the reference the others."""
    data = make("exponent", 5000, prob_bits)
    freq = naive_rans.normalize(np.bincount(data, minlength=256), prob_bits)
    out = np.empty_like(data)
    RANS.decode(memoryview(naive_rans.encode(data.tobytes(), freq, prob_bits)), out)
    assert np.array_equal(out, data)


@pytest.mark.parametrize("kind", ["exponent", "uniform", "skewed", "geometric"])
def test_rans_size_near_entropy(kind):
    """Within 0.01 bit/symbol of the order-0 entropy on a 1 MiB stream (table apart)."""
    data = make(kind, 1 << 20, 1)
    payload = enc(RANS, data)
    hist = np.bincount(data, minlength=256)
    counts = hist[hist > 0]
    entropy = float((counts * np.log2(data.size / counts)).sum())
    coded = (len(payload) - header_size(payload)) * 8
    assert coded / data.size - entropy / data.size < 0.01
    table = header_size(payload) - 32
    assert table < 0.005 * (len(payload) if kind != "skewed" else data.size)
    est = RANS.estimate(hist, data.size)
    assert abs(est - len(payload)) <= 0.001 * len(payload) + 40


@pytest.mark.parametrize("kind", KINDS)
def test_rans_estimate_small_streams(kind):
    data = make(kind, 3000, 2)
    payload = enc(RANS, data)
    if payload is not None:
        est = RANS.estimate(np.bincount(data, minlength=256), data.size)
        assert abs(est - len(payload)) <= 0.001 * len(payload) + 40


def test_decode_writes_exactly_out_and_accepts_any_buffer():
    data = make("exponent", 10_001, 3)
    payload = enc(RANS, data)
    big = np.full(data.size + 64, 0xAB, np.uint8)
    RANS.decode(memoryview(payload), big[32 : 32 + data.size])
    assert np.array_equal(big[32:-32], data)
    assert (big[:32] == 0xAB).all() and (big[-32:] == 0xAB).all()
    shifted = bytearray(b"x" + payload)  # unaligned, writable source
    strided = np.zeros(2 * data.size, np.uint8)[::2]
    RANS.decode(memoryview(shifted)[1:], strided)
    assert np.array_equal(strided, data)


# ------------------------------------------------------------------------ rans-ctx


def ctx_tables(data, ctx, k, own):
    tables = np.zeros((len(own) + 1, 1 << k), np.int64)
    index = {c: r + 1 for r, c in enumerate(own)}
    np.add.at(tables, ([index.get(c, 0) for c in ctx.tolist()], data >> (8 - k)), 1)
    return tables


@st.composite
def ctx_cases(draw):
    n = draw(st.integers(1, 3000))
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    ctx = rng.integers(0, draw(st.sampled_from([1, 3, 40, 256])), n).astype(np.uint8)
    if draw(st.booleans()):  # correlated: top bits follow the context
        data = ((ctx.astype(np.int64) * 37 + rng.integers(0, 64, n)) % 256).astype(np.uint8)
    else:
        data = make(draw(st.sampled_from(KINDS)), n, draw(st.integers(0, 9)))
    k = draw(st.integers(1, 4))
    present = sorted(set(ctx.tolist()))
    own = sorted(draw(st.sets(st.sampled_from(present), max_size=min(len(present), 255))))
    return data, ctx, k, np.array(own, np.uint8)


@settings(max_examples=60)
@given(case=ctx_cases())
def test_ctx_matches_reference(case):
    data, ctx, k, own = case
    tables = ctx_tables(data, ctx, k, own)
    payload = bytes(CTX._encode(data, ctx, k, own, tables))
    freqs = [naive_rans.normalize(t if t.any() else np.ones_like(t), 5 + k) for t in tables]
    assert payload == naive_rans.ctx_encode(data.tobytes(), ctx.tobytes(), k, own.tolist(), freqs)
    assert naive_rans.ctx_decode(payload, ctx.tobytes()) == data.tobytes()
    out = np.empty_like(data)
    CTX.decode(memoryview(payload), out, ctx)
    assert np.array_equal(out, data)


@settings(max_examples=30)
@given(case=ctx_cases())
def test_ctx_codec_roundtrip(case):
    data, ctx, _, _ = case
    payload = enc(CTX, data, ctx)
    if payload is None:  # no better than raw
        assert CTX.estimate_ctx(data, ctx) >= data.size
        return
    assert len(payload) < data.size
    out = np.empty_like(data)
    CTX.decode(memoryview(payload), out, ctx)
    assert np.array_equal(out, data)


def test_ctx_large_correlated_stream():
    rng = np.random.default_rng(7)
    n = 1 << 20
    ctx = make("exponent", n, 7)
    top = (ctx.astype(np.int64) * 3 + (rng.random(n) < 0.3)) % 8  # 3 bits, ~0.9 bit each
    data = ((top << 5) | rng.integers(0, 32, n)).astype(np.uint8)
    payload = enc(CTX, data, ctx)
    assert payload[0] == 3  # K
    out = np.empty_like(data)
    CTX.decode(memoryview(payload), out, ctx)
    assert np.array_equal(out, data)
    assert abs(CTX.estimate_ctx(data, ctx) - len(payload)) < 0.001 * len(payload)


def test_ctx_rejects_mismatched_context():
    with pytest.raises(ValueError, match="context"):
        enc(CTX, np.zeros(10, np.uint8), np.zeros(9, np.uint8))
    with pytest.raises(ValueError, match="context"):
        CTX.decode(memoryview(b"\x01\x00"), np.zeros(10, np.uint8), np.zeros(9, np.uint8))


def bf16_streams(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(exponent, sign|mantissa) streams of every BF16 tensor, as split-bf16 makes them."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    spans = [
        v["data_offsets"]
        for k, v in json.loads(raw[8 : 8 + n]).items()
        if k != "__metadata__" and v["dtype"] == "BF16"
    ]
    w = np.concatenate([np.frombuffer(raw[8 + n + a : 8 + n + b], "<u2") for a, b in spans])
    r = (w << 1) | (w >> 15)
    return (r >> 8).astype(np.uint8), (r & 0xFF).astype(np.uint8)


@pytest.mark.corpus
def test_rans_on_real_exponents(corpus):
    """Real bf16 exponents, 1 MiB chunks: within 0.01 bit/symbol of entropy, table included."""
    exp, _ = bf16_streams(corpus / "minilm_bf16.safetensors")
    for i in range(0, 4 << 20, 1 << 20):
        e = exp[i : i + (1 << 20)]
        payload = roundtrip(e)
        counts = np.bincount(e)[np.bincount(e) > 0]
        entropy = float((counts * np.log2(e.size / counts)).sum())
        assert len(payload) * 8 / e.size - entropy / e.size < 0.01


@pytest.mark.corpus
def test_ctx_gain_on_real_bf16(corpus):
    """sign|mantissa given the exponent: >= 80 % of the conditional-entropy gain, tables paid."""
    exp, sm = bf16_streams(corpus / "minilm_bf16.safetensors")
    exp, sm = exp[: 4 << 19], sm[: 4 << 19]
    saved = ideal = 0.0
    for i in range(0, exp.size, 1 << 19):
        e, m = exp[i : i + (1 << 19)], sm[i : i + (1 << 19)]
        payload = enc(CTX, m, e)
        out = np.empty_like(m)
        CTX.decode(memoryview(payload), out, e)
        assert np.array_equal(out, m)
        saved += m.size - len(payload)
        joint = np.bincount(e.astype(np.int64) * 16 + (m >> 4), minlength=4096).reshape(256, 16)
        rows = joint[joint.sum(1) > 0]
        nz = np.where(rows > 0, rows, 1)
        cond = (rows * np.log2(rows.sum(1, keepdims=True) / nz)).sum() + 4 * m.size
        ideal += m.size - cond / 8  # K = 4, no table cost
    assert saved >= 0.8 * ideal


# ------------------------------------------------------------------------ hostile payloads


def truncations(payload: bytes, seed: int):
    rng = np.random.default_rng(seed)
    for cut in sorted({*range(min(len(payload), 80)), *rng.integers(0, len(payload), 40)}):
        yield payload[:cut]


def mutations(payload: bytes, seed: int):
    """Extra bytes, random payloads, byte and bit flips of ``payload``."""
    rng = np.random.default_rng(seed)
    yield payload + b"\x00\x00"
    for size in (2, 33, 40, 100, len(payload)):
        yield rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    for _ in range(150):
        b = bytearray(payload)
        i = int(rng.integers(0, len(b)))
        b[i] ^= 1 << int(rng.integers(0, 8)) if rng.random() < 0.5 else int(rng.integers(1, 256))
        yield bytes(b)


def fails_cleanly(decode, payload, n) -> bool:
    """Decode a damaged payload: CorruptDataError (True) or a normal return (False), nothing
    else. A damaged table can still be a valid one, and rans-ctx's raw low bits carry no
    redundancy at all: the container's checksum catches what decoding cannot."""
    try:
        decode(memoryview(payload), np.zeros(n, np.uint8))
    except CorruptDataError:
        return True
    return False


@pytest.mark.parametrize("n", [2, 9, 5000])
def test_rans_hostile_payloads(n):
    data = make("exponent", n, n)
    data[:2] = (0, 255)
    payload = enc(RANS, data)
    assert all(fails_cleanly(RANS.decode, bad, n) for bad in truncations(payload, n))
    results = [fails_cleanly(RANS.decode, bad, n) for bad in mutations(payload, n)]
    assert sum(results) >= 0.9 * len(results)
    assert fails_cleanly(RANS.decode, payload, n + 8)


@pytest.mark.parametrize("n", [1, 9, 5000])
def test_ctx_hostile_payloads(n):
    ctx = make("exponent", n, n)
    data = make("uniform", n, n)
    own = np.unique(ctx)[:3]
    payload = bytes(CTX._encode(data, ctx, 3, own, ctx_tables(data, ctx, 3, own)))

    def decode(p, o):
        CTX.decode(p, o, ctx)

    assert all(fails_cleanly(decode, bad, n) for bad in truncations(payload, n))
    for bad in mutations(payload, n):
        fails_cleanly(decode, bad, n)


def test_corrupt_words_are_detected():
    """A damaged word stream ends in a state other than the initial one (almost always)."""
    data = make("exponent", 20_000, 5)
    payload = enc(RANS, data)
    start = header_size(payload)
    detected = 0
    for i in range(start, len(payload), max(1, (len(payload) - start) // 200)):
        b = bytearray(payload)
        b[i] ^= 0x10
        try:
            RANS.decode(memoryview(bytes(b)), np.empty(data.size, np.uint8))
        except CorruptDataError:
            detected += 1
    assert detected >= 195


# ------------------------------------------------------------------------ threads, no-JIT runs


def test_threads_give_identical_results():
    chunks = [make(k, 70_000 + i, i) for i, k in enumerate(KINDS * 3)]
    serial = [enc(RANS, c) for c in chunks]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda c: enc(RANS, c), chunks)) == serial
        outs = [np.empty_like(c) for c in chunks]
        list(pool.map(lambda a: RANS.decode(memoryview(a[0]), a[1]), zip(serial, outs)))
    assert all(np.array_equal(o, c) for o, c in zip(outs, chunks))


SUBPROCESS_CHECK = textwrap.dedent(
    """
    import numpy as np, sys
    sys.path.insert(0, {tests!r})
    import naive_rans
    from test_rans import make, mutations, truncations, ctx_tables
    from zipmodel.codecs.rans import RansCodec, RansCtxCodec
    from zipmodel.errors import CorruptDataError
    r, c = RansCodec(), RansCtxCodec()
    for kind, n in [("exponent", 300), ("two", 17), ("all256", 600)]:
        d = make(kind, n, 1)
        p = bytes(r.encode(d))
        freq = naive_rans.normalize(np.bincount(d, minlength=256), 14)
        assert p == naive_rans.encode(d.tobytes(), freq, 14)
        o = np.empty_like(d); r.decode(memoryview(p), o); assert (o == d).all()
        ctx = (d // 7).astype(np.uint8)
        q = c.encode(d, ctx)
        q = bytes(q) if q is not None else bytes(c._encode(d, ctx, 2, np.unique(ctx)[:2], ctx_tables(d, ctx, 2, np.unique(ctx)[:2])))
        o[:] = 0; c.decode(memoryview(q), o, ctx); assert (o == d).all()
        assert naive_rans.ctx_decode(q, ctx.tobytes()) == d.tobytes()
        if {hostile}:
            for bad in [*truncations(p, n), *mutations(p, n)]:
                try:
                    r.decode(memoryview(bad), np.empty(n, np.uint8))
                except CorruptDataError:
                    pass
            for bad in [*truncations(q, n), *mutations(q, n)]:
                try:
                    c.decode(memoryview(bad), np.empty(n, np.uint8), ctx)
                except CorruptDataError:
                    pass
    print("ok")
    """
)


def run_checks(env: dict, hostile: bool, tmp_path) -> None:
    code = SUBPROCESS_CHECK.format(tests=str(Path(__file__).parent), hostile=hostile)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), **env}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_kernels_as_python(tmp_path):
    """NUMBA_DISABLE_JIT=1: the kernel bodies run as Python (coverage; same results)."""
    run_checks({"NUMBA_DISABLE_JIT": "1"}, False, tmp_path)


@pytest.mark.slow
def test_hostile_payloads_with_bounds_checks(tmp_path):
    """NUMBA_BOUNDSCHECK=1 turns any out-of-bounds access in the kernels into an IndexError."""
    run_checks({"NUMBA_BOUNDSCHECK": "1"}, True, tmp_path)
