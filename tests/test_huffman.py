"""The huffman codec and its kernels against the bit-by-bit reference (tests/naive_huffman.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive_huffman as naive
from subproc import run_python
from zipmodel._kernels import huffman as kern
from zipmodel.codecs.huffman import HuffmanCodec, header_size
from zipmodel.errors import CorruptDataError

HERE = Path(__file__).resolve().parent
KINDS = ("uniform", "two", "few", "skewed", "geometric", "exponent", "all256", "fibonacci", "one")
codec = HuffmanCodec()
WORK = np.zeros(kern.WORK_SIZE, np.int64)


def enc(codec, *args):
    """The codec's payload as bytes (encode may return a view of its per-thread scratch)."""
    p = codec.encode(*args)
    return None if p is None else bytes(p)


def make_data(kind: str, n: int, seed: int) -> np.ndarray:
    """``n`` bytes of a given shape of distribution."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        d = rng.integers(0, 256, n)
    elif kind == "two":
        a, b = rng.choice(256, 2, replace=False)
        d = np.where(rng.random(n) < rng.uniform(0.01, 0.99), a, b)
    elif kind == "few":
        d = rng.choice(rng.choice(256, 5, replace=False), n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    elif kind == "skewed":  # one symbol with p > 0.9: codes of 1 bit
        d = np.where(
            rng.random(n) < rng.uniform(0.9, 0.999), rng.integers(256), rng.integers(0, 256, n)
        )
    elif kind == "geometric":
        d = np.minimum(rng.geometric(rng.uniform(0.05, 0.7), n) - 1 + rng.integers(0, 200), 255)
    elif kind == "exponent":  # like the exponents of trained weights
        d = np.clip(np.round(rng.normal(118, rng.uniform(1, 4), n)), 0, 255)
    elif kind == "all256":
        d = np.concatenate([np.arange(256), rng.integers(0, 256, max(n - 256, 0))])[:n]
        rng.shuffle(d)
    elif kind == "fibonacci":  # counts 1, 1, 2, 3, 5, ...: unlimited Huffman codes reach ~20 bits
        fib = [1, 1]
        while sum(fib) < n:
            fib.append(fib[-1] + fib[-2])
        d = np.repeat(rng.permutation(256)[: len(fib)], fib)[:n]
        rng.shuffle(d)
    else:  # one symbol
        d = np.full(n, rng.integers(256))
    return np.ascontiguousarray(d, np.uint8)


def decode(payload: bytes, n: int, codec: HuffmanCodec = codec) -> bytes:
    out = np.empty(n, np.uint8)
    codec.decode(memoryview(payload), out)
    return out.tobytes()


def outcome(payload: bytes, n: int):
    """What the codec does with a payload: ("ok", bytes) or ("error", None). Any exception
    other than CorruptDataError fails the test."""
    try:
        return "ok", decode(payload, n)
    except CorruptDataError:
        return "error", None


def naive_outcome(payload: bytes, n: int):
    try:
        return "ok", naive.decode(payload, n)
    except ValueError:
        return "error", None


def fuzz_small(seed: int, cases: int) -> None:
    """Round trips and damaged payloads on small inputs, checked against the reference.
    Also run with NUMBA_DISABLE_JIT=1, where numpy's bounds checks catch any stray index."""
    rng = np.random.default_rng(seed)
    for case in range(cases):
        kind = KINDS[case % len(KINDS)]
        n = int(rng.integers(0, 700)) if case % 3 else int(rng.integers(0, 24))
        data = make_data(kind, n, seed * 1000 + case)
        payload = enc(codec, data)
        assert payload == naive.encode(data.tobytes())
        if payload is None:
            continue
        assert decode(payload, n) == data.tobytes()
        for _ in range(8):
            bad = bytearray(payload)
            for _ in range(int(rng.integers(1, 4))):
                bad[int(rng.integers(len(bad)))] ^= 1 << int(rng.integers(8))
            assert outcome(bytes(bad), n) == naive_outcome(bytes(bad), n)
        cut = int(rng.integers(len(payload)))
        assert outcome(payload[:cut], n)[0] == "error"
        wrong_n = n + int(rng.integers(1, 9))
        assert outcome(payload, wrong_n) == naive_outcome(payload, wrong_n)


# -- code lengths -------------------------------------------------------------------------


def kraft_ok(lens: np.ndarray) -> bool:
    used = lens[lens > 0].astype(np.int64)
    return int((1 << (12 - used)).sum()) == 1 << 12


@st.composite
def histograms(draw):
    shape = draw(st.sampled_from(["sparse", "dense", "fibonacci", "huge", "equal"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(2, 256))
    hist = np.zeros(256, np.int64)
    where = rng.choice(256, k, replace=False)
    if shape == "sparse":
        hist[where] = rng.integers(1, 50, k)
    elif shape == "dense":
        hist[where] = rng.geometric(0.01, k)
    elif shape == "fibonacci":
        fib = [1, 1]
        while len(fib) < k:
            fib.append(min(fib[-1] + fib[-2], 1 << 46))
        hist[where] = fib
    elif shape == "huge":
        hist[where] = rng.integers(1, 1 << 46, k)  # the kernel needs a total below 2**55
    else:
        hist[where] = 7
    return hist


@given(hist=histograms(), max_bits=st.sampled_from([8, 11, 12]))
def test_code_lengths_are_optimal_and_limited(hist, max_bits):
    lens = np.zeros(256, np.uint8)
    present = kern._code_lengths(hist, max_bits, lens, WORK)
    assert present == np.count_nonzero(hist)
    assert np.array_equal(lens > 0, hist > 0)
    assert lens.max() <= max_bits and kraft_ok(lens)
    counts = {s: int(c) for s, c in enumerate(hist) if c}
    ref = naive.package_merge(counts, max_bits)
    assert {s: int(lens[s]) for s in ref} == ref  # same lengths, ties included
    cost = int(hist @ lens.astype(np.int64))
    if lens.max() < max_bits:  # the limit did not bind: as good as unlimited Huffman
        assert cost == naive.huffman_cost(counts)
    else:
        assert cost >= naive.huffman_cost(counts)


def test_code_lengths_fewer_than_two_symbols():
    lens = np.full(256, 9, np.uint8)
    assert kern._code_lengths(np.zeros(256, np.int64), 12, lens, WORK) == 0 and not lens.any()
    hist = np.zeros(256, np.int64)
    hist[7] = 100
    assert kern._code_lengths(hist, 12, lens, WORK) == 1 and not lens.any()


# -- round trips ----------------------------------------------------------------------------


@given(kind=st.sampled_from(KINDS), n=st.integers(0, 3000), seed=st.integers(0, 2**32 - 1))
def test_matches_reference_bit_for_bit(kind, n, seed):
    data = make_data(kind, n, seed)
    payload = enc(codec, data)
    assert payload == naive.encode(data.tobytes())
    if payload is not None:
        assert decode(payload, n) == data.tobytes()
        assert naive.decode(payload, n) == data.tobytes()


@given(kind=st.sampled_from(KINDS), n=st.integers(1, 200_000), seed=st.integers(0, 2**32 - 1))
def test_roundtrip(kind, n, seed):
    data = make_data(kind, n, seed)
    payload = enc(codec, data)
    distinct = np.unique(data).size
    if distinct < 2:
        assert payload is None
        return
    assert payload is not None and decode(payload, n) == data.tobytes()
    hist = np.bincount(data, minlength=256)
    est = codec.estimate(hist, n)
    assert abs(est - len(payload)) <= 0.001 * len(payload) + 8 * 4
    # Gallager's bound on Huffman's redundancy (unless the 12-bit limit binds), plus the
    # header and the stream padding
    p = hist[hist > 0] / n
    entropy = float(-(p * np.log2(p)).sum())
    bits_per_symbol = (len(payload) - header_size(distinct) - 32) * 8 / n
    if kind != "fibonacci":
        assert bits_per_symbol <= entropy + p.max() + 0.086


@pytest.mark.corpus
def test_bf16_exponents_within_005_bit_of_entropy(corpus):
    """The target on real data: 1 MiB chunks of BF16 (512 Ki exponents), table included."""
    import json
    import struct

    raw = (corpus / "minilm_bf16.safetensors").read_bytes()
    (hlen,) = struct.unpack_from("<Q", raw)
    spans = [
        t["data_offsets"]
        for k, t in json.loads(raw[8 : 8 + hlen]).items()
        if k != "__metadata__" and t["dtype"] == "BF16"
    ]
    w = np.concatenate(
        [np.frombuffer(raw, np.uint16, (b - a) // 2, 8 + hlen + a) for a, b in spans]
    )
    exp = ((w << 1 | w >> 15) >> 8).astype(np.uint8)
    for i in range(0, exp.size, exp.size // 6):
        chunk = exp[i : i + (1 << 19)]
        payload = enc(codec, chunk)
        hist = np.bincount(chunk, minlength=256)
        p = hist[hist > 0] / chunk.size
        entropy = float(-(p * np.log2(p)).sum())
        assert len(payload) * 8 / chunk.size <= entropy + 0.05
        assert decode(payload, chunk.size) == chunk.tobytes()


def test_empty_and_single_symbol_do_not_apply():
    assert enc(codec, np.zeros(0, np.uint8)) is None
    assert enc(codec, np.full(1000, 3, np.uint8)) is None
    assert codec.estimate(np.bincount(np.full(10, 3, np.uint8), minlength=256), 10) is None


def test_lengths_not_multiple_of_four_and_tiny():
    for n in range(2, 40):
        data = (np.arange(n) % 3).astype(np.uint8)
        payload = enc(codec, data)
        assert payload == naive.encode(data.tobytes())
        assert decode(payload, n) == data.tobytes()


def test_all_256_symbols_and_twelve_bit_codes():
    data = make_data("fibonacci", 100_000, 5)
    payload = enc(codec, data)
    lens = np.zeros(256, np.uint8)
    kern._code_lengths(np.bincount(data, minlength=256), 12, lens, WORK)
    assert lens.max() == 12
    assert decode(payload, data.size) == data.tobytes()
    data = make_data("all256", 5000, 1)
    assert decode(enc(codec, data), 5000) == data.tobytes()


def test_max_code_bits_11():
    c11 = HuffmanCodec(max_code_bits=11)
    data = make_data("fibonacci", 30_000, 2)
    payload = enc(c11, data)
    assert payload == naive.encode(data.tobytes(), max_bits=11)
    assert decode(payload, data.size) == data.tobytes()  # any codec instance decodes it


def test_deterministic_and_input_untouched():
    data = make_data("exponent", 100_001, 3)
    before = data.copy()
    a = enc(codec, data)
    b = enc(HuffmanCodec(), data.copy())
    assert a == b and np.array_equal(data, before)
    ro = data.copy()
    ro.flags.writeable = False
    assert enc(codec, ro) == a


def test_unaligned_and_writable_payload_buffers():
    data = make_data("geometric", 50_001, 4)
    payload = enc(codec, data)
    for offset in range(9):
        buf = bytearray(offset) + bytearray(payload)
        out = np.empty(data.size, np.uint8)
        codec.decode(memoryview(buf)[offset:], out)
        assert out.tobytes() == data.tobytes()


def test_threads_share_the_codec():
    datas = [
        make_data(k, 300_000, i) for i, k in enumerate(["exponent", "geometric", "uniform"] * 2)
    ]
    expected = [enc(codec, d) for d in datas]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                p = enc(codec, datas[i])
                assert p == expected[i]
                results[i] = decode(p, datas[i].size) == datas[i].tobytes()
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(datas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(results.values()) and len(results) == len(datas)


# -- hostile payloads -----------------------------------------------------------------------


@given(
    kind=st.sampled_from(KINDS[:-1]),
    n=st.integers(2, 400),
    seed=st.integers(0, 2**32 - 1),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4),
)
def test_damaged_payload_agrees_with_reference(kind, n, seed, flips):
    data = make_data(kind, n, seed)
    payload = enc(codec, data)
    if payload is None:
        return
    bad = bytearray(payload)
    for pos, bit in flips:
        bad[pos % len(bad)] ^= 1 << bit
    assert outcome(bytes(bad), n) == naive_outcome(bytes(bad), n)


def test_every_truncation_and_extension_fails():
    data = make_data("exponent", 777, 6)
    payload = enc(codec, data)
    for cut in range(len(payload)):
        assert outcome(payload[:cut], data.size)[0] == "error"
    for extra in (b"\0", b"\0" * 8, b"\xff" * 8):
        assert outcome(payload + extra, data.size)[0] == "error"


def test_wrong_sizes_fail():
    data = make_data("exponent", 100_000, 7)
    payload = enc(codec, data)
    for n in (0, 1, 50_000, 99_000, 101_000, 200_000, 10**7):
        assert outcome(payload, n)[0] == "error"
    # Off by a few symbols can be a valid reading (the last code all zero bits, like the
    # padding): the container's size and checksums catch that; here, agree with the reference.
    for n in (99_996, 99_999, 100_001, 100_004):
        assert outcome(payload, n) == naive_outcome(payload, n)


def test_random_bytes_fail():
    rng = np.random.default_rng(8)
    for size in (0, 1, 51, 52, 60, 200, 5000):
        for _ in range(20):
            junk = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            assert outcome(junk, 1000) == naive_outcome(junk, 1000)
            junk = b"\x01\0\0\0" + junk[4:]  # a valid version, the rest junk
            assert outcome(junk, 1000) == naive_outcome(junk, 1000)


def test_corrupted_tables_fail():
    data = make_data("few", 10_000, 9)  # 5 symbols: nibbles at bytes 52..54
    payload = bytearray(enc(codec, data))
    for nibble_byte, value in [(52, 0x00), (52, 0xDD), (52, 0xFF), (52, 0x11), (54, 0x13)]:
        bad = bytearray(payload)
        bad[nibble_byte] = value
        assert outcome(bytes(bad), data.size)[0] == "error", (nibble_byte, value)
    for bitmap in (bytes(32), bytes([1]) + bytes(31), b"\xff" * 32):
        bad = payload[:20] + bitmap + payload[52:]
        assert outcome(bytes(bad), data.size)[0] == "error"
    for head in (b"\x02\0\0\0", b"\x01\0\1\0", b"\x01\x80\0\0"):
        assert outcome(bytes(head + payload[4:]), data.size)[0] == "error"


def test_huge_stream_lengths_fail_without_allocating():
    data = make_data("exponent", 1000, 10)
    payload = bytearray(enc(codec, data))
    for s in range(4):
        bad = bytearray(payload)
        bad[4 + 4 * s : 8 + 4 * s] = b"\xff\xff\xff\xff"
        assert outcome(bytes(bad), data.size)[0] == "error"
    assert outcome(bytes(payload), 2**32)[0] == "error"


def test_fuzz_small_compiled():
    fuzz_small(seed=11, cases=60)


def test_kernel_bodies_without_jit():
    """The kernels as plain Python (NUMBA_DISABLE_JIT=1): coverage sees their bodies, and
    numpy's bounds checks would turn any out-of-bounds index into an IndexError."""
    run_python(
        "import test_huffman as t; t.fuzz_small(seed=12, cases=27); t.test_code_lengths_fewer_than_two_symbols()",
        NUMBA_DISABLE_JIT="1",
    )


@pytest.mark.slow
def test_compiled_kernels_with_bounds_checks(tmp_path):
    """The compiled kernels with Numba's bounds checks on, on damaged payloads."""
    run_python(
        "import test_huffman as t; t.fuzz_small(seed=13, cases=200); "
        "t.test_every_truncation_and_extension_fails(); t.test_corrupted_tables_fail()",
        NUMBA_BOUNDSCHECK="1",
        NUMBA_CACHE_DIR=str(tmp_path),
    )


def test_header_only_payload_is_the_empty_stream():
    payload = naive.header({3: 1, 200: 1}, [0, 0, 0, 0])
    assert outcome(payload, 0) == ("ok", b"") == naive_outcome(payload, 0)
    assert outcome(payload, 1)[0] == "error"
