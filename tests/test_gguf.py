"""GGUF reader and block-field transforms: byte-identical round trips, hostile headers.

The GGUF files here are built by hand (no ``gguf`` package): versions 2 and 3, plain and
block-quantized tensors, custom alignment, non-zero padding and trailing bytes.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from workbudget import WorkBudget

from zipmodel.api import compress_bytes, decompress_bytes
from zipmodel.dtypes import get_dtype
from zipmodel.readers import read_layout
from zipmodel.readers.base import TENSOR, VERBATIM, check_tiling
from zipmodel.readers.gguf import GGML_TYPES, GGUFError, looks_like_gguf, read_gguf
from zipmodel.stages import get_transform, transform_for
from zipmodel.stages.gguf import BLOCK_SPLITS

U32, I32, F32V, STRING, ARRAY, U64 = 4, 5, 6, 8, 9, 10
T = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8, "Q4_K": 12}
T |= {"Q5_K": 13, "Q6_K": 14, "IQ2_XS": 17, "BF16": 30}


def s(b: str | bytes) -> bytes:
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def kv_u32(key: str, v: int) -> bytes:
    return s(key) + struct.pack("<II", U32, v)


def kv_str(key: str, v: str) -> bytes:
    return s(key) + struct.pack("<I", STRING) + s(v)


def kv_strings(key: str, items: list[str]) -> bytes:
    return s(key) + struct.pack("<IIQ", ARRAY, STRING, len(items)) + b"".join(map(s, items))


def nbytes(gtype: int, dims: list[int]) -> int:
    _, block, size = GGML_TYPES[gtype]
    return int(np.prod(dims)) // block * size


def build(
    tensors: list[tuple[str, list[int], int]],
    *,
    version: int = 3,
    kvs: tuple[bytes, ...] = (),
    alignment: int = 32,
    pad: int = 0,
    tail: bytes = b"",
    seed: int = 0,
    sizes: dict[str, int] | None = None,
) -> bytes:
    """A GGUF file; tensor data is random, padding bytes are ``pad``."""
    rng = np.random.default_rng(seed)
    kvs = (kv_str("general.architecture", "test"), *kvs)
    if alignment != 32:
        kvs = (*kvs, kv_u32("general.alignment", alignment))
    infos, blobs, off = b"", [], 0
    for name, dims, gtype in tensors:
        n = (sizes or {}).get(name, nbytes(gtype, dims) if gtype in GGML_TYPES else 64)
        infos += s(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        infos += struct.pack("<IQ", gtype, off)
        blob = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        blob += bytes([pad]) * (-n % alignment)
        blobs.append(blob)
        off += len(blob)
    head = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)) + b"".join(kvs) + infos
    head += bytes([pad]) * (-len(head) % alignment)
    return head + b"".join(blobs) + tail


MIXED = [
    ("token_embd.weight", [256, 8], T["Q8_0"]),
    ("norm.weight", [96], T["F32"]),
    ("a.weight", [64, 3], T["F16"]),
    ("b.weight", [32, 5], T["BF16"]),
    ("q40", [64, 7], T["Q4_0"]),
    ("q41", [32, 9], T["Q4_1"]),
    ("q50", [32, 3], T["Q5_0"]),
    ("q51", [32, 3], T["Q5_1"]),
    ("q4k", [256, 40], T["Q4_K"]),  # 5760 bytes: several 4 KiB chunks
    ("q5k", [512, 2], T["Q5_K"]),
    ("q6k", [256, 3], T["Q6_K"]),
    ("iq2", [256, 2], T["IQ2_XS"]),  # a known type without a split: coded whole
    ("mystery", [64], 200),  # unknown type: its bytes stay verbatim
]


def arr(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("alignment,pad,tail", [(32, 0, b""), (64, 0xAB, b"\x01\x02\x03")])
def test_roundtrip_mixed_types(version, alignment, pad, tail):
    data = build(MIXED, version=version, alignment=alignment, pad=pad, tail=tail)
    assert looks_like_gguf(arr(data))
    layout = read_layout(arr(data))
    assert layout.format == "gguf" and not layout.note
    assert layout.metadata["version"] == version
    assert layout.metadata["alignment"] == alignment
    assert layout.metadata["unknown_type_tensors"] == 1
    assert check_tiling(layout.segments, len(data)) is None
    got = {t.name: t for t in layout.tensors()}
    assert set(got) == {name for name, _, gtype in MIXED if gtype != 200}
    assert got["q4k"].dtype == "GGUF_Q4_K" and got["q4k"].shape == (40, 256)
    assert got["norm.weight"].dtype == "F32" and got["b.weight"].dtype == "BF16"
    for t in layout.tensors():
        assert get_dtype(t.dtype).nbytes(t.shape) == t.size
    assert transform_for("GGUF_Q4_K").name == "gguf-q4_k"
    assert transform_for("GGUF_IQ2_XS").name == "identity"
    for level in ("fast", "default", "max"):
        blob = compress_bytes(data, level=level, chunk_size=4096)
        assert decompress_bytes(blob) == data


def test_layout_matches_the_file():
    data = build(MIXED[:5])
    layout = read_gguf(arr(data))
    first = layout.segments[0]
    assert first.kind == VERBATIM and first.offset == 0
    assert first.size == layout.metadata["data_offset"] and first.size % 32 == 0
    rng = np.random.default_rng(0)  # build() draws tensor bytes in this order
    for t, (name, dims, gtype) in zip(layout.tensors(), MIXED[:5]):
        want = rng.integers(0, 256, nbytes(gtype, dims), dtype=np.uint8).tobytes()
        assert t.kind == TENSOR and t.name == name
        assert data[t.offset : t.end] == want


def test_empty_file_and_no_tensors():
    data = build([])
    layout = read_gguf(arr(data))
    assert layout.tensors() == [] and check_tiling(layout.segments, len(data)) is None
    assert decompress_bytes(compress_bytes(data)) == data


# ---------------------------------------------------------------------------------------
# Transforms


@pytest.mark.parametrize("dtype", sorted(BLOCK_SPLITS))
def test_block_split_registry(dtype):
    t = BLOCK_SPLITS[dtype]
    assert t.transform_id >= 32 and get_transform(t.transform_id) is t
    assert t.itemsize == get_dtype(dtype).block_bytes
    assert transform_for(dtype) is t
    assert len({x.transform_id for x in BLOCK_SPLITS.values()}) == len(BLOCK_SPLITS)


@given(st.sampled_from(sorted(BLOCK_SPLITS)), st.integers(0, 40), st.randoms())
def test_block_split_inverts(dtype, n_blocks, rnd):
    t = BLOCK_SPLITS[dtype]
    raw = arr(rnd.randbytes(n_blocks * t.itemsize))
    keep = raw.copy()
    streams = t.forward(raw)
    assert [x.size for x in streams] == list(t.stream_sizes(raw.size))
    assert t.stream_sizes_array(np.array([raw.size])).tolist() == [list(t.stream_sizes(raw.size))]
    out = np.empty_like(raw)
    t.inverse(streams, out)
    assert np.array_equal(out, raw) and np.array_equal(raw, keep)
    scratch = [np.empty(n, np.uint8) for n in t.stream_sizes(raw.size)]
    again = t.forward(raw, scratch)
    assert all(np.array_equal(a, b) for a, b in zip(again, streams))
    if n_blocks:
        with pytest.raises(ValueError):
            t.stream_sizes(raw.size - 1)


# ---------------------------------------------------------------------------------------
# Hostile headers: GGUFError fast, then compression falls back to opaque bytes


def _head(version=3, n_tensors=0, n_kv=0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _info(name, dims, gtype, off) -> bytes:
    return s(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, gtype, off)


def _hostile() -> dict[str, bytes]:
    z = bytes(4096)
    one = [("w", [32], T["Q8_0"])]
    return {
        "version 1": _head(1) + z,
        "big-endian": b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + z,
        "huge tensor count": _head(n_tensors=1 << 62) + z,
        "huge kv count": _head(n_kv=1 << 60) + z,
        "huge key": _head(n_kv=1) + struct.pack("<Q", 1 << 62) + z,
        "huge string value": _head(n_kv=1) + s("k") + struct.pack("<IQ", STRING, 1 << 40) + z,
        "huge scalar array": _head(n_kv=1) + s("k") + struct.pack("<IIQ", ARRAY, U64, 1 << 59),
        "huge string array": _head(n_kv=1) + s("k") + struct.pack("<IIQ", ARRAY, STRING, 1 << 40),
        "zero strings": _head(n_kv=1) + s("k") + struct.pack("<IIQ", ARRAY, STRING, 10**7) + z,
        "nested arrays": _head(n_kv=1)
        + s("k")
        + struct.pack("<I", ARRAY)
        + struct.pack("<IQ", ARRAY, 1) * 40
        + z,
        "unknown value type": _head(n_kv=1) + s("k") + struct.pack("<I", 77) + z,
        "bad alignment": _head(n_kv=1) + s("general.alignment") + struct.pack("<II", U32, 12) + z,
        "string alignment": _head(n_kv=1) + s("general.alignment") + struct.pack("<I", STRING) + z,
        "too many dims": _head(n_tensors=1) + _info("w", [1] * 9, 0, 0) + z,
        "huge dims": _head(n_tensors=1) + _info("w", [1 << 40, 1 << 40], 0, 0) + z,
        "offset past EOF": _head(n_tensors=1) + _info("w", [32], 0, 1 << 50) + z,
        "misaligned": _head(n_tensors=1) + _info("w", [4], 0, 8) + z,
        "overlap": _head(n_tensors=2) + _info("a", [64], 0, 0) + _info("b", [64], 0, 128) + z,
        "duplicate names": _head(n_tensors=2) + _info("a", [8], 0, 0) + _info("a", [8], 0, 32) + z,
        "partial block": _head(n_tensors=1) + _info("w", [33], T["Q8_0"], 0) + z,
        "truncated data": build(one)[:-40],  # 34 data bytes + 30 of padding
        "header cut": build(one)[:40],
    }


HOSTILE = _hostile()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header_fails_fast(case):
    data = HOSTILE[case]
    # fails fast: at most ~110 calls in zipmodel code and 8 KB (measured), whatever the
    # counts and lengths the header claims; no loop over them, no allocation of their size
    with WorkBudget(calls=2_000, peak_bytes=1 << 20):
        with pytest.raises(GGUFError):
            read_gguf(arr(data))
    layout = read_layout(arr(data))  # auto: falls back to opaque bytes, says why
    assert layout.format == "raw" and "gguf" in layout.note
    assert decompress_bytes(compress_bytes(data)) == data


def test_every_truncation_parses_or_fails_cleanly():
    data = build(MIXED[:6], kvs=(kv_strings("tokenizer.tokens", ["a", "bb", "ccc"]),))
    for n in range(24, len(data), 7):
        try:
            layout = read_gguf(arr(data[:n]))
        except GGUFError:
            continue
        assert check_tiling(layout.segments, n) is None


# ---------------------------------------------------------------------------------------
# Real model


@pytest.mark.corpus
def test_corpus_gguf_roundtrip_beats_zstd(corpus):
    zstandard = pytest.importorskip("zstandard")
    path = corpus / "smollm2-135m-q4_1.gguf"
    if not path.exists():
        pytest.skip(f"{path} not found")
    data = path.read_bytes()
    layout = read_layout(arr(data))
    assert layout.format == "gguf" and not layout.note
    assert {t.dtype for t in layout.tensors()} >= {"GGUF_Q4_1", "F32"}
    blob = compress_bytes(data)
    back = decompress_bytes(blob)
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    zstd3 = len(zstandard.ZstdCompressor(level=3).compress(data))
    assert len(blob) < zstd3
