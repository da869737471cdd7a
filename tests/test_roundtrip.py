import hashlib
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import edgecases
import zipmodel
from zipmodel.api import compress_bytes, decompress_bytes

EDGE = edgecases.build()


@pytest.mark.parametrize("name", sorted(EDGE))
@pytest.mark.parametrize("level", ["fast", "default", "max"])
def test_edge_cases_roundtrip_bytes(name, level):
    data = EDGE[name]
    blob = compress_bytes(data, level=level, chunk_size=64 << 10, threads=2)
    assert decompress_bytes(blob, threads=2) == data


@pytest.mark.parametrize("name", sorted(EDGE))
def test_edge_cases_roundtrip_files(tmp_path, name):
    src = tmp_path / name
    src.write_bytes(EDGE[name])
    rep = zipmodel.compress_file(src, chunk_size=64 << 10)
    out = tmp_path / "restored"
    zipmodel.decompress_file(rep.output, out, check_sha256=True)
    assert out.read_bytes() == EDGE[name]
    assert src.read_bytes() == EDGE[name], "input must be untouched"
    assert (
        zipmodel.verify_file(rep.output, against=src).sha256
        == hashlib.sha256(EDGE[name]).hexdigest()
    )


def test_invalid_safetensors_fall_back_with_a_note(tmp_path):
    src = tmp_path / "overlapping.safetensors"
    src.write_bytes(EDGE["overlapping.safetensors"])
    rep = zipmodel.compress_file(src)
    assert "not a valid safetensors file" in rep.note and "overlaps" in rep.note
    assert rep.summary.source_format == "raw"


@pytest.mark.parametrize(
    "name", ["model_meta.safetensors", "multi_chunk.safetensors", "random.bin"]
)
def test_output_does_not_depend_on_threads(name):
    data = EDGE[name]
    outs = {compress_bytes(data, chunk_size=16 << 10, threads=t) for t in (1, 2, 3, 8)}
    assert len(outs) == 1


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["BF16", "F16", "F32", "U8", "I64", "F8_E4M3"]), st.integers(0, 3000)
        ),
        max_size=6,
    ),
    st.binary(max_size=40),
    st.sampled_from([4096, 8192, 1 << 20]),
    st.integers(0, 2**32 - 1),
)
def test_generated_layouts_roundtrip(specs, trailing, chunk, seed):
    rng = np.random.default_rng(seed)
    tensors = []
    for i, (dtype, n) in enumerate(specs):
        width = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1, "I64": 8, "F8_E4M3": 1}[dtype]
        if rng.random() < 0.5:
            blob = rng.integers(0, 256, n * width, dtype=np.uint8).tobytes()
        else:  # weight-like values
            w = (rng.standard_normal(n) * 0.05).astype(np.float32)
            blob = {
                2: (w.view(np.uint32) >> 16).astype(np.uint16).tobytes(),
                4: w.tobytes(),
            }.get(width, rng.integers(0, 4, n * width, dtype=np.uint8).tobytes())
        tensors.append((f"t{i}", dtype, [n], blob))
    data = edgecases.safetensors_bytes(tensors, trailing=trailing, pad_to=int(rng.integers(1, 9)))
    blob = compress_bytes(data, chunk_size=chunk, threads=2)
    assert decompress_bytes(blob, threads=2) == data


def test_decompress_into_reused_buffer():
    data = EDGE["multi_chunk.safetensors"]
    blob = compress_bytes(data, chunk_size=64 << 10)
    out = np.zeros(len(data), np.uint8)
    assert decompress_bytes(blob, out=out) is out
    assert out.tobytes() == data
    with pytest.raises(ValueError):
        decompress_bytes(blob, out=np.zeros(3, np.uint8))


def test_file_objects(tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(EDGE["model_meta.safetensors"])
    buf = io.BytesIO()
    zipmodel.compress_file(src, buf)
    restored = io.BytesIO()
    buf.seek(0)
    zipmodel.decompress_file(buf, restored)
    assert restored.getvalue() == src.read_bytes()
