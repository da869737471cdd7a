"""The rans-2d codec: kernels against the textbook reference, the search, hostile payloads."""

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

import naive_rans2d
from zipmodel.codecs.rans import RansCodec
from zipmodel.codecs.rans2d import Rans2DCodec
from zipmodel.errors import CorruptDataError

CODEC, RANS = Rans2DCodec(), RansCodec()
KINDS = ("exponent2d", "colsign", "rowconst", "two", "all256", "skewed", "uniform")


def positions(n: int, row_len: int, first_col: int) -> tuple[np.ndarray, np.ndarray]:
    q = first_col + np.arange(n, dtype=np.int64)
    return q // row_len, q % row_len


def make(kind: str, n: int, row_len: int, first_col: int, seed: int) -> np.ndarray:
    """n symbols of a row_len-wide matrix starting at column first_col, of the named shape."""
    rng = np.random.default_rng(seed)
    row, col = positions(n, row_len, first_col)
    if kind in ("exponent2d", "colsign"):  # weights with per-row and per-column scales
        rs = np.exp(rng.normal(0, 1.0, int(row[-1]) + 1))
        cs = np.exp(rng.normal(0, 1.0, row_len if row_len <= 10**6 else 1))
        w = rng.normal(0, 0.02, n) * rs[row] * cs[col % cs.size]
        if kind == "exponent2d":  # the exponent byte of float32 weights
            d = (w.astype(np.float32).view(np.uint32) >> 23) & 0xFF
        else:  # an F16 high byte whose sign depends on the column
            w = np.abs(w) * np.where(rng.random(cs.size) < 0.5, -1, 1)[col % cs.size]
            d = w.astype(np.float16).view(np.uint16) >> 8
    elif kind == "rowconst":  # every row one of 5 symbols
        d = (rng.integers(0, 5, int(row[-1]) + 1) * 41)[row]
    elif kind == "two":
        d = rng.integers(0, 2, n) * 200 + 7
    elif kind == "all256":
        d = rng.integers(0, 256, n)
        d[: min(n, 256)] = np.arange(min(n, 256))
    elif kind == "skewed":
        d = np.where(rng.random(n) < 0.995, 0, rng.integers(1, 256, n))
    else:
        d = rng.integers(0, 256, n)
    return np.ascontiguousarray(d, np.uint8)


def roundtrip(data: np.ndarray, layout) -> bytes | None:
    payload = CODEC.encode(data, layout)
    if payload is not None:
        out = np.empty_like(data)
        CODEC.decode(memoryview(payload), out)
        assert np.array_equal(out, data)
    return payload


def context_counts(data, row_len, first_col, lkr, lkc, rowcls, colcls) -> np.ndarray:
    """int64[contexts, 256]: symbol counts per context."""
    row, col = positions(data.size, row_len, first_col)
    t = (rowcls[row].astype(np.int64) << lkc if lkr else 0) + (colcls[col] if lkc else 0)
    counts = np.zeros((1 << (lkr + lkc), 256), np.int64)
    np.add.at(counts, (t, data), 1)
    return counts


@st.composite
def cases(draw, max_n=3000):
    """(data, row_len, first_col): partial first / last rows, any first column."""
    row_len = draw(st.integers(2, 40) | st.integers(2, 5000))
    first_col = draw(st.integers(0, row_len - 1))
    n = draw(st.integers(2, max_n))
    data = make(draw(st.sampled_from(KINDS)), n, row_len, first_col, draw(st.integers(0, 99)))
    return data, row_len, first_col


@st.composite
def coded_cases(draw):
    """A case plus random class maps, Kr, Kc and P, for the kernels against the reference."""
    data, row_len, first_col = draw(cases())
    if np.unique(data).size < 2:
        data[0] ^= 1
    n = data.size
    lkr = draw(st.integers(0, 3))
    lkc = draw(st.integers(0, 6 - lkr)) if row_len <= n else 0
    if lkr + lkc == 0:
        lkr = 1
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    nrows = -(-(first_col + n) // row_len)
    rowcls = rng.integers(0, 1 << lkr, nrows if lkr else 0).astype(np.uint8)
    colcls = rng.integers(0, 1 << lkc, row_len if lkc else 0).astype(np.uint8)
    prob_bits = draw(st.integers(9, 12))
    return data, row_len, first_col, lkr, lkc, rowcls, colcls, prob_bits


def encode_with(data, row_len, first_col, lkr, lkc, rowcls, colcls, prob_bits):
    """Kernel payload and reference payload for the given classes."""
    counts = context_counts(data, row_len, first_col, lkr, lkc, rowcls, colcls)
    present = np.flatnonzero(counts.sum(0)).astype(np.uint8)
    payload = CODEC._encode(
        data, row_len, first_col, lkr, lkc, rowcls, colcls, present,
        counts[:, present].reshape(-1).copy(), prob_bits=prob_bits,
    )  # fmt: skip
    freqs = naive_rans2d.tables(counts.tolist(), prob_bits)
    ref = naive_rans2d.encode(
        data.tobytes(), row_len, first_col, prob_bits, lkr, lkc, rowcls.tolist(),
        colcls.tolist(), freqs,
    )  # fmt: skip
    return payload, ref


# ------------------------------------------------------------------------ against the reference


@settings(max_examples=50)
@given(case=coded_cases())
def test_kernels_match_reference(case):
    data = case[0]
    payload, ref = encode_with(*case)
    assert payload == ref
    assert naive_rans2d.decode(payload, data.size) == data.tobytes()
    out = np.empty_like(data)
    CODEC.decode(memoryview(payload), out)
    assert np.array_equal(out, data)


@settings(max_examples=40)
@given(case=cases())
def test_codec_roundtrip(case):
    data, row_len, first_col = case
    payload = roundtrip(data, (row_len, first_col))
    if payload is not None:
        assert naive_rans2d.decode(payload, data.size) == data.tobytes()
        lkr, lkc = payload[1] >> 4, payload[1] & 15
        assert lkr + lkc > 0 and 10 <= payload[0] <= 12
        assert 1 << (lkr + lkc + payload[0]) <= 1 << 16  # decode tables of <= 256 KiB


def test_chosen_prob_bits_is_the_cheaper():
    data = make("colsign", 60_000, 300, 7, 1)
    lkr, lkc, _, _, present, counts, _, _ = CODEC.plan(data, (300, 7))
    full = np.zeros((1 << (lkr + lkc), 256), np.int64)
    full[:, present] = counts.reshape(full.shape[0], present.size)
    cost = {}
    for p in (10, 11, 12):
        if full.shape[0] << p > 1 << 16:
            continue  # decode tables stay within 256 KiB
        freqs = naive_rans2d.tables(full.tolist(), p)
        cost[p] = naive_rans2d.cost_bits(full.tolist(), freqs, p)
    ranked = sorted(cost.values())
    assert ranked[1] - ranked[0] > 1e-6 * ranked[0]  # not a near tie
    assert CODEC.encode(data, (300, 7))[0] == min(cost, key=cost.get)


@pytest.mark.parametrize("prob_bits", [8, 10, 12])
def test_decodes_any_prob_bits(prob_bits):
    """The format allows P = 8..12; the reference writes what this encoder does not."""
    data = make("exponent2d", 5000, 100, 30, prob_bits)
    row, _ = positions(data.size, 100, 30)
    rowcls = (np.arange(row[-1] + 1) % 2).astype(np.uint8)
    colcls = (np.arange(100) % 4).astype(np.uint8)
    counts = context_counts(data, 100, 30, 1, 2, rowcls, colcls)
    freqs = naive_rans2d.tables(counts.tolist(), prob_bits)
    payload = naive_rans2d.encode(
        data.tobytes(), 100, 30, prob_bits, 1, 2, rowcls.tolist(), colcls.tolist(), freqs
    )
    out = np.empty_like(data)
    CODEC.decode(memoryview(payload), out)
    assert np.array_equal(out, data)


# ------------------------------------------------------------------------ the search


@pytest.mark.parametrize(
    "n,row_len,first_col", [(300_000, 384, 0), (200_001, 1536, 1000), (50_000, 97, 96)]
)
def test_structured_matrix_gains(n, row_len, first_col):
    """Row/column scales: 2-D contexts beat order-0, and the payload meets the estimate."""
    data = make("exponent2d", n, row_len, first_col, 3)
    layout = (row_len, first_col)
    payload = roundtrip(data, layout)
    plain = RANS.encode(data)
    assert payload is not None and len(payload) < 0.9 * len(plain)
    lkr, lkc, *_, est, est0 = CODEC.plan(data, layout)
    assert lkr > 0 and lkc > 0
    assert abs(len(payload) * 8 - est) / n < 0.01  # bits per symbol
    assert abs(est0 - len(plain) * 8) / n < 0.01


def test_column_sign_needs_column_classes():
    """F16-like high bytes whose sign follows the column: Kc > 1 pays most."""
    data = make("colsign", 200_000, 384, 5, 4)
    payload = roundtrip(data, (384, 5))
    assert payload[1] & 15 >= 1
    assert len(payload) < 0.9 * len(RANS.encode(data))


def test_constant_rows_use_single_symbol_tables():
    data = make("rowconst", 40_000, 500, 123, 5)
    data[: 500 - 123] = 9  # the partial first row too
    payload = roundtrip(data, (500, 123))
    assert payload is not None and len(payload) < 0.1 * len(RANS.encode(data))


def test_not_applicable():
    data = make("exponent2d", 10_000, 100, 0, 0)
    assert CODEC.encode(data) is None  # no layout
    assert CODEC.encode(data, None) is None
    assert CODEC.encode(data, (1, 0)) is None  # rows of one element
    assert CODEC.encode(np.zeros(0, np.uint8), (10, 0)) is None
    assert CODEC.encode(np.full(5000, 3, np.uint8), (10, 0)) is None  # one symbol
    uniform = make("uniform", 100_000, 300, 0, 0)  # no gain but the tables' coding
    payload = CODEC.encode(uniform, (300, 0))
    assert payload is None or len(RANS.encode(uniform)) - 64 < len(payload) < uniform.size * 1.01
    # rows under 32 elements get no row classes, columns under 32 samples no column classes
    assert CODEC.encode(make("exponent2d", 600, 20, 0, 0), (20, 0)) is None
    assert CODEC.plan(data, (8, 0))[0] == 0 and CODEC.plan(data, (400, 0))[1] == 0
    assert CODEC.estimate(np.ones(256, np.int64), 256) is None
    with pytest.raises(ValueError, match="first_col"):
        CODEC.encode(data, (100, 100))
    with pytest.raises(ValueError, match="uint8"):
        CODEC.encode(np.zeros(4, np.uint16), (2, 0))


def test_codec_identity():
    assert (CODEC.codec_id, CODEC.name, CODEC.uses_layout) == (6, "rans-2d", True)


def test_output_is_deterministic_across_threads():
    cases_ = [(make(k, 70_000 + i, 200 + i, i, i), (200 + i, i)) for i, k in enumerate(KINDS * 2)]
    serial = [CODEC.encode(d, lay) for d, lay in cases_]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda a: CODEC.encode(*a), cases_)) == serial
        done = [(p, np.empty_like(d)) for p, (d, _) in zip(serial, cases_) if p is not None]
        list(pool.map(lambda a: CODEC.decode(memoryview(a[0]), a[1]), done))
    assert len(done) >= 6
    expected = [d for p, (d, _) in zip(serial, cases_) if p is not None]
    assert all(np.array_equal(o, d) for (_, o), d in zip(done, expected))


def test_decode_writes_exactly_out_and_accepts_any_buffer():
    data = make("exponent2d", 10_001, 64, 10, 3)
    payload = CODEC.encode(data, (64, 10))
    big = np.full(data.size + 64, 0xAB, np.uint8)
    CODEC.decode(memoryview(payload), big[32 : 32 + data.size])
    assert np.array_equal(big[32:-32], data)
    assert (big[:32] == 0xAB).all() and (big[-32:] == 0xAB).all()
    shifted = bytearray(b"x" + payload)
    strided = np.zeros(2 * data.size, np.uint8)[::2]
    CODEC.decode(memoryview(shifted)[1:], strided)
    assert np.array_equal(strided, data)


# ------------------------------------------------------------------------ hostile payloads


def truncations(payload: bytes, seed: int):
    rng = np.random.default_rng(seed)
    for cut in sorted({*range(min(len(payload), 120)), *rng.integers(0, len(payload), 40)}):
        yield payload[:cut]


def mutations(payload: bytes, seed: int, count: int = 150):
    rng = np.random.default_rng(seed)
    yield payload + b"\x00\x00"
    for size in (2, 33, 40, 100, len(payload)):
        yield rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    for _ in range(count):
        b = bytearray(payload)
        i = (
            int(rng.integers(0, min(len(b), 200)))
            if rng.random() < 0.5
            else int(rng.integers(0, len(b)))
        )
        b[i] ^= 1 << int(rng.integers(0, 8)) if rng.random() < 0.5 else int(rng.integers(1, 256))
        yield bytes(b)


def fails_cleanly(payload: bytes, n: int) -> bool:
    """CorruptDataError (True) or a normal return (False), nothing else."""
    try:
        CODEC.decode(memoryview(payload), np.zeros(n, np.uint8))
    except CorruptDataError:
        return True
    return False


@pytest.mark.parametrize("n,row_len,first_col", [(9, 3, 2), (5000, 50, 17), (30_000, 300, 0)])
def test_hostile_payloads(n, row_len, first_col):
    data = make("exponent2d", n, row_len, first_col, n)
    data[:2] = (0, 255)
    lkr, lkc = (1, 1) if n < 100 else (2, 3)
    rng = np.random.default_rng(n)
    nrows = -(-(first_col + n) // row_len)
    rowcls = rng.integers(0, 1 << lkr, nrows).astype(np.uint8)
    colcls = rng.integers(0, 1 << lkc, row_len).astype(np.uint8)
    payload, _ = encode_with(data, row_len, first_col, lkr, lkc, rowcls, colcls, 12)
    assert all(fails_cleanly(bad, n) for bad in truncations(payload, n))
    results = [fails_cleanly(bad, n) for bad in mutations(payload, n)]
    assert sum(results) >= 0.8 * len(results)
    assert fails_cleanly(payload, n + 8) and fails_cleanly(payload, n - 1)


def header(prob_bits=12, lkr=1, lkc=1, row_len=4, first_col=0, present=(0, 1)) -> bytearray:
    b = bytearray([prob_bits, lkr << 4 | lkc])
    b += naive_rans2d._varint(row_len) + naive_rans2d._varint(first_col)
    b += bytes(sum(1 << k for k in range(8) if 8 * j + k in present) for j in range(32))
    return b


def valid_payload():
    data = make("two", 64, 4, 0, 0) // 207  # symbols 0, 1
    rowcls = (np.arange(16) % 2).astype(np.uint8)
    colcls = np.array([0, 1, 1, 0], np.uint8)
    return data, encode_with(data, 4, 0, 1, 1, rowcls, colcls, 12)[0]


def test_valid_payload_of_hostile_tests():
    data, payload = valid_payload()
    assert payload[: len(header())] == header()
    out = np.empty_like(data)
    CODEC.decode(memoryview(payload), out)
    assert np.array_equal(out, data)


@pytest.mark.parametrize(
    "fields,why",
    [
        ({"prob_bits": 7}, "header"),
        ({"prob_bits": 13}, "header"),
        ({"lkr": 0, "lkc": 0}, "header"),
        ({"lkr": 4, "lkc": 0}, "header"),
        ({"lkr": 0, "lkc": 7}, "header"),
        ({"lkr": 3, "lkc": 4}, "header"),
        ({"row_len": 0}, "row length"),
        ({"row_len": 1}, "row length"),
        ({"row_len": 65}, "row length"),  # column classes need row_len <= n = 64
        ({"row_len": 1 << 55}, "row length"),
        ({"first_col": 4}, "row length"),
        ({"present": (0,)}, "table"),
    ],
)
def test_bad_header_fields(fields, why):
    _, payload = valid_payload()
    bad = header(**fields) + payload[len(header()) :]
    with pytest.raises(CorruptDataError, match=why):
        CODEC.decode(memoryview(bytes(bad)), np.zeros(64, np.uint8))


def test_huge_row_len_allocates_nothing_big():
    """Row classes only, a row_len of 2**55: one row, a one-entry map; then a normal error."""
    bad = header(lkr=1, lkc=0, row_len=(1 << 55) + 1) + b"\x01" + b"\x00" * 40
    with pytest.raises(CorruptDataError):
        CODEC.decode(memoryview(bytes(bad)), np.zeros(1000, np.uint8))
    bad = bytes([12, 0x10]) + b"\xff" * 9  # a varint of more than 8 bytes
    with pytest.raises(CorruptDataError, match="header"):
        CODEC.decode(memoryview(bad), np.zeros(10, np.uint8))


def bad_table_payload(write) -> bytes:
    w = naive_rans2d.BitWriter()
    w.put(0, 16 * 1 + 4 * 1)  # 16 row classes, 4 column classes of 1 bit
    write(w)
    return bytes(header() + w.tobytes() + b"\x00" * 64)


@pytest.mark.parametrize(
    "write",
    [
        lambda w: w.gamma(naive_rans2d._zigzag(13) + 1),  # f of 13 bits: not < 2**12
        lambda w: w.gamma(naive_rans2d._zigzag(-1) + 1),  # a bit length of -1
        lambda w: w.put(1 << 5, 6),  # a gamma code with 5 zeros
        lambda w: [w.table([2000, 2000]) for _ in range(4)],  # 4000 in all: not 4096
        lambda w: [w.table([4095, 1]), w.table([1, 4096])],  # a table over 2**P
        lambda w: [w.table([4096, 0])],  # 2**P: one symbol alone
    ],
)
def test_bad_tables(write):
    with pytest.raises(CorruptDataError, match="table"):
        CODEC.decode(memoryview(bad_table_payload(write)), np.zeros(64, np.uint8))


def test_good_table_payload_of_bad_table_tests():
    payload = bad_table_payload(lambda w: [w.table([4095, 1]) for _ in range(4)])
    with pytest.raises(CorruptDataError, match="state"):  # the tables pass, the states not
        CODEC.decode(memoryview(payload), np.zeros(64, np.uint8))


def test_bad_padding_states_and_words():
    for seed in range(20):  # a payload whose bit section ends inside a byte
        data = make("two", 64, 4, 0, seed) // 207
        rowcls = np.random.default_rng(seed).integers(0, 2, 16).astype(np.uint8)
        payload = encode_with(data, 4, 0, 1, 1, rowcls, np.array([0, 1, 1, 0], np.uint8), 12)[0]
        rd = naive_rans2d.BitReader(payload, len(header()))
        rd.get(20)
        for _ in range(4):
            rd.table(2, 12)
        if rd.pos % 8:
            break
    n, bits = data.size, rd.pos
    states = naive_rans2d.read_header(payload, n)[-1]
    assert states == (bits + 7) // 8
    bad = bytearray(payload)
    bad[bits // 8] |= 0x80
    with pytest.raises(CorruptDataError, match="class maps"):
        CODEC.decode(memoryview(bytes(bad)), np.zeros(n, np.uint8))
    bad = bytearray(payload)
    bad[states : states + 4] = (100).to_bytes(4, "little")  # a state below 2**16
    with pytest.raises(CorruptDataError, match="state"):
        CODEC.decode(memoryview(bytes(bad)), np.zeros(n, np.uint8))
    with pytest.raises(CorruptDataError, match="odd"):
        CODEC.decode(memoryview(payload + b"\x00"), np.zeros(n, np.uint8))
    with pytest.raises(CorruptDataError, match="initial state"):
        CODEC.decode(memoryview(payload + b"\x00\x00"), np.zeros(n, np.uint8))
    if len(payload) > states + 32:
        with pytest.raises(CorruptDataError, match=r"ends before|initial state"):
            CODEC.decode(memoryview(payload[:-2]), np.zeros(n, np.uint8))


def test_corrupt_words_are_detected():
    """A damaged word stream ends in a state other than the initial one (almost always)."""
    data = make("exponent2d", 20_000, 100, 3, 5)
    payload = CODEC.encode(data, (100, 3))
    start = naive_rans2d.read_header(payload, data.size)[-1] + 32
    detected = total = 0
    for i in range(start, len(payload), max(1, (len(payload) - start) // 200)):
        b = bytearray(payload)
        b[i] ^= 0x10
        total += 1
        try:
            CODEC.decode(memoryview(bytes(b)), np.empty(data.size, np.uint8))
        except CorruptDataError:
            detected += 1
    assert detected >= 0.97 * total


# ------------------------------------------------------------------------ real data


def exponent_chunks(path: Path, limit: int):
    """(stream 0, layout) of the first 1 MiB chunks of the 2-D float tensors of a file."""
    from zipmodel.readers import read_layout

    raw = np.fromfile(path, np.uint8)
    out = []
    for seg in read_layout(raw).segments:
        if seg.dtype not in ("BF16", "F16", "F32") or not seg.shape or len(seg.shape) < 2:
            continue
        size = 4 if seg.dtype == "F32" else 2
        b = raw[seg.offset : seg.offset + seg.size].copy()
        if size == 4:
            s = (b.view("<u4") >> 23).astype(np.uint8)  # low 8 bits: the exponent
        elif seg.dtype == "BF16":
            s = (b.view("<u2") >> 7).astype(np.uint8)
        else:
            s = (b.view("<u2") >> 8).astype(np.uint8)
        row_len = int(np.prod(seg.shape[1:]))
        step = (1 << 20) // size
        for e in range(0, s.size, step):
            out.append((s[e : e + step], (row_len, e % row_len)))
            if len(out) == limit:
                return out
    return out


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["minilm_bf16.safetensors", "whisper_tiny_ct2.bin"])
def test_real_streams(corpus, name):
    """Never worse than order-0 (None then); smaller in all on real exponents / high bytes."""
    total2 = total0 = 0
    for data, layout in exponent_chunks(corpus / name, 4):
        payload = roundtrip(data, layout)
        plain = len(RANS.encode(data))
        total0 += plain
        total2 += min(plain, len(payload)) if payload is not None else plain
    assert total2 < (0.995 if "bf16" in name else 0.95) * total0


# ------------------------------------------------------------------------ no-JIT, bounds checks


SUBPROCESS_CHECK = textwrap.dedent(
    """
    import numpy as np, sys
    sys.path.insert(0, {tests!r})
    import naive_rans2d
    from test_rans2d import make, mutations, truncations, encode_with, CODEC
    from zipmodel.errors import CorruptDataError
    for kind, n, row_len, first_col in {cases!r}:
        d = make(kind, n, row_len, first_col, 1)
        d[0] = d[1] ^ 1  # two symbols at least
        p = CODEC.encode(d, (row_len, first_col))
        if p is not None:
            assert naive_rans2d.decode(p, n) == d.tobytes()
            o = np.empty_like(d); CODEC.decode(memoryview(p), o); assert (o == d).all()
        rowcls = (np.arange(n // row_len + 2) % 4).astype(np.uint8)
        colcls = (np.arange(row_len) % 2).astype(np.uint8)
        lkc = 1 if row_len <= n else 0
        q, ref = encode_with(d, row_len, first_col, 2, lkc, rowcls, colcls, 11)
        assert q == ref
        o = np.empty_like(d); CODEC.decode(memoryview(q), o); assert (o == d).all()
        p = p or q
        if {hostile}:
            for bad in [*truncations(p, n), *mutations(p, n, 60)]:
                try:
                    CODEC.decode(memoryview(bad), np.empty(n, np.uint8))
                except CorruptDataError:
                    pass
    print("ok")
    """
)


def run_checks(env: dict, cases_, hostile: bool, tmp_path) -> None:
    code = SUBPROCESS_CHECK.format(tests=str(Path(__file__).parent), cases=cases_, hostile=hostile)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), **env}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]


def test_kernels_as_python(tmp_path):
    """NUMBA_DISABLE_JIT=1: the kernel bodies run as Python (coverage; same results)."""
    run_checks({"NUMBA_DISABLE_JIT": "1"}, [("exponent2d", 2000, 40, 7)], False, tmp_path)


@pytest.mark.slow
def test_hostile_payloads_with_bounds_checks(tmp_path):
    """NUMBA_BOUNDSCHECK=1 turns any out-of-bounds access in the kernels into an IndexError."""
    cases_ = [
        ("exponent2d", 5000, 64, 63),
        ("colsign", 3000, 33, 0),
        ("rowconst", 4000, 100, 50),
        ("rowconst", 300, 1000, 990),  # two partial rows, no column classes
    ]
    run_checks({"NUMBA_BOUNDSCHECK": "1"}, cases_, True, tmp_path)
