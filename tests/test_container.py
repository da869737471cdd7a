import hashlib
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgecases
import zipmodel
from zipmodel.api import compress_bytes, decompress_bytes
from zipmodel.container.format import (
    CHUNK_MAGIC,
    FILE_HEADER,
    FILE_MAGIC,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    FRAME_HEADER,
    TRAILER,
    TRAILER_MAGIC,
)
from zipmodel.container.reader import ContainerReader
from zipmodel.errors import CorruptDataError, FormatError, ZipmodelError

GOLDEN = Path(__file__).parent / "golden"


def small_model() -> bytes:
    return edgecases.safetensors_bytes(
        [
            ("a", "BF16", [8, 8], bytes(range(128))),
            ("b", "F32", [3], struct.pack("<3f", 1.0, -0.0, float("inf"))),
            ("c", "U8", [5], b"\x00\x01\x02\x03\x04"),
        ],
        metadata={"format": "pt"},
    )


# -- golden files: the format is pinned -------------------------------------------------
MANIFEST = json.loads((GOLDEN / "MANIFEST.json").read_text())


@pytest.mark.parametrize("case", MANIFEST, ids=lambda c: c["container"])
def test_golden_containers_decode_forever(case):
    blob = (GOLDEN / case["container"]).read_bytes()
    src = (GOLDEN / case["source"]).read_bytes()
    assert hashlib.sha256(src).hexdigest() == case["sha256"]
    out = decompress_bytes(blob)
    with ContainerReader(io.BytesIO(blob)) as r:
        assert r.index.source["sha256"] == case["sha256"]
        assert r.index.format_version == tuple(case.get("format", (1, 0)))
        assert r.index.lossy == bool(case.get("lossy"))
    if case.get("lossy"):  # the dequantized bytes are pinned too
        assert hashlib.sha256(out).hexdigest() == case["restored_sha256"]
        assert len(out) == len(src) and out != src
    else:
        assert out == src


def test_container_layout_bytes():
    """Exact bytes of the file header, the first frame and the trailer of a tiny container."""
    data = small_model()
    blob = compress_bytes(data, level="fast")
    assert (
        blob[:16]
        == FILE_MAGIC + struct.pack("<HHI", 1, 0, 0)
        == b"\x89ZMODEL\n\x01\x00\x00\x00\x00\x00\x00\x00"
    )
    magic, transform, n, flags, src_off, raw, _body, _check = FRAME_HEADER.unpack_from(blob, 16)
    assert (magic, transform, n, flags, src_off) == (CHUNK_MAGIC, 0, 1, 0, 0)
    assert raw == 8 + struct.unpack("<Q", data[:8])[0]  # the verbatim header segment
    idx_off, idx_size, tmagic = TRAILER.unpack(blob[-16:])
    assert tmagic == TRAILER_MAGIC == b"ZMTR"
    assert idx_off + idx_size + 16 == len(blob)
    assert blob[idx_off : idx_off + 4] == b"ZMIX"
    assert (FORMAT_MAJOR, FORMAT_MINOR) == (1, 2)  # newest minor read; 1.0 written unless needed
    assert FILE_HEADER.size == 16 and FRAME_HEADER.size == 32 and TRAILER.size == 16


def test_index_contents():
    blob = compress_bytes(small_model(), name="m.safetensors")
    with ContainerReader(io.BytesIO(blob)) as r:
        idx = r.index
    assert idx.source["name"] == "m.safetensors" and idx.source["format"] == "safetensors"
    assert idx.source["sha256"] == hashlib.sha256(small_model()).hexdigest()
    assert [e.segment.kind for e in idx.segments] == ["verbatim", "tensor", "tensor", "tensor"]
    assert [e.segment.name for e in idx.segments[1:]] == ["a", "b", "c"]
    assert idx.metadata["__metadata__"] == {"format": "pt"}
    assert idx.options == {"level": "default", "chunk_size": 1 << 20}


def test_every_single_byte_flip_is_detected():
    """Flip each byte of a small container: reading it must fail, never give wrong data."""
    blob = compress_bytes(small_model(), chunk_size=4096)
    for i in range(len(blob)):
        for mask in (0x01, 0x80):
            b = bytearray(blob)
            b[i] ^= mask
            with pytest.raises(ZipmodelError):
                decompress_bytes(bytes(b))


@settings(max_examples=200)
@given(st.data())
def test_random_damage_never_crashes(data):
    blob = bytearray(compress_bytes(edgecases.build()["model_meta.safetensors"], chunk_size=4096))
    n = data.draw(st.integers(1, 8))
    for _ in range(n):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(blob))))
    damaged = bytes(blob[:cut] if cut is not None else blob)
    try:
        out = decompress_bytes(damaged)
    except ZipmodelError:
        return
    # the only way to succeed is to be unchanged (e.g. a byte set to its own value)
    assert out == edgecases.build()["model_meta.safetensors"]


def test_truncation_at_every_frame_boundary_fails():
    blob = compress_bytes(small_model(), chunk_size=4096)
    with ContainerReader(io.BytesIO(blob)) as r:
        cuts = [int(o) for o in r.index.chunks["frame_offset"]] + [r.index_offset, len(blob) - 1]
    for c in cuts:
        with pytest.raises(FormatError):
            decompress_bytes(blob[:c])


def test_checksum_errors_are_corrupt_data(tmp_path):
    blob = bytearray(compress_bytes(small_model()))
    with ContainerReader(io.BytesIO(bytes(blob))) as r:
        off = int(r.index.chunks["frame_offset"][1]) + FRAME_HEADER.size + 30
    blob[off] ^= 1
    p = tmp_path / "x.zm"
    p.write_bytes(bytes(blob))
    with pytest.raises(CorruptDataError, match="checksum") as e:
        zipmodel.verify_file(p)
    assert str(p) in str(e.value)


def test_random_access_reads_only_what_it_needs(tmp_path):
    rng = np.random.default_rng(0)
    tensors = [
        (f"t{i}", "BF16", [256, 256], rng.integers(0, 256, 256 * 256 * 2, dtype=np.uint8).tobytes())
        for i in range(20)
    ]
    tensors.append(("small", "F32", [4], struct.pack("<4f", 1, 2, 3, 4)))
    src = tmp_path / "m.safetensors"
    src.write_bytes(edgecases.safetensors_bytes(tensors))
    rep = zipmodel.compress_file(src)
    with zipmodel.open(rep.output) as f:
        before = f.bytes_read
        assert f.get_tensor("small").tolist() == [1, 2, 3, 4]
        assert f.bytes_read - before < 200
        assert before < 4000  # header, trailer and index only
