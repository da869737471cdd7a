import struct

import numpy as np
import pytest

import edgecases
from zipmodel.readers import check_tiling, read_layout
from zipmodel.readers.safetensors import SafetensorsError, read_safetensors

EDGE = edgecases.build()


def arr(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8)


@pytest.mark.parametrize("name", sorted(EDGE))
def test_segments_always_tile_the_file(name):
    layout = read_layout(arr(EDGE[name]))
    assert check_tiling(layout.segments, len(EDGE[name])) is None


def test_header_and_tensors():
    data = EDGE["trailing_bytes.safetensors"]
    layout = read_safetensors(arr(data))
    kinds = [(s.kind, s.name) for s in layout.segments]
    assert kinds[0] == ("verbatim", None) and kinds[-1] == ("verbatim", None)
    assert layout.segments[-1].size == len(b"TRAILING\x00\x01\x02")
    assert [s.name for s in layout.tensors()] == [
        "embed.weight",
        "layer.0.weight",
        "layer.0.bias",
        "head.weight",
    ]


def test_data_order_not_header_order():
    layout = read_safetensors(arr(EDGE["data_reordered.safetensors"]))
    assert [s.name for s in layout.tensors()] == [
        "head.weight",
        "layer.0.weight",
        "embed.weight",
        "layer.0.bias",
    ]


def test_gaps_become_verbatim():
    layout = read_safetensors(arr(EDGE["gaps_odd_offsets.safetensors"]))
    gaps = [s for s in layout.segments[1:] if s.kind == "verbatim"]
    assert [g.size for g in gaps] == [3, 3, 3, 3]
    assert any(s.offset % 2 for s in layout.tensors())


@pytest.mark.parametrize(
    "name, reason",
    [
        ("truncated.safetensors", "outside"),
        ("bad_json.safetensors", "JSON"),
        ("duplicate_key.safetensors", "duplicate key"),
        ("overlapping.safetensors", "overlaps"),
        ("huge_header_len.safetensors", "exceeds"),
    ],
)
def test_invalid_files_are_rejected_with_a_reason(name, reason):
    with pytest.raises(SafetensorsError, match=reason):
        read_safetensors(arr(EDGE[name]))
    layout = read_layout(arr(EDGE[name]))
    assert layout.format == "raw"


def test_size_mismatch():
    hdr = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}'
    with pytest.raises(SafetensorsError, match="needs 8 bytes"):
        read_safetensors(arr(struct.pack("<Q", len(hdr)) + hdr + b"1234"))


def test_bool_is_not_an_int():
    hdr = b'{"a":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}'
    with pytest.raises(SafetensorsError, match="non-negative integer"):
        read_safetensors(arr(struct.pack("<Q", len(hdr)) + hdr + b"1"))


def test_forced_format_raises():
    from zipmodel.errors import FormatError

    with pytest.raises(FormatError, match="not a valid safetensors file"):
        read_layout(arr(EDGE["overlapping.safetensors"]), format="safetensors", path="x")
