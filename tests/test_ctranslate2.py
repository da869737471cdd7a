import numpy as np
import pytest

import edgecases
import zipmodel
from zipmodel.api import compress_bytes, decompress_bytes
from zipmodel.readers import read_layout
from zipmodel.readers.ctranslate2 import CT2Error, read_ctranslate2


def sample() -> bytes:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(48 * 40) * 0.02).astype(np.float16).tobytes()
    return edgecases.ctranslate2_bytes(
        [
            ("enc/w", 4, [48, 40], w),  # F16 at an odd offset (name lengths decide)
            ("enc/b", 0, [40], np.arange(40, dtype=np.float32).tobytes()),
            ("scale", 1, [], b"\x07"),
            ("dec/w", 4, [40, 48], w),
        ],
        tail=b"\x00\x00\x00\x00alias",
    )


def test_layout():
    data = sample()
    layout = read_layout(np.frombuffer(data, np.uint8))
    assert layout.format == "ctranslate2"
    t = layout.tensors()
    assert [(s.name, s.dtype, s.shape) for s in t] == [
        ("enc/w", "F16", (48, 40)),
        ("enc/b", "F32", (40,)),
        ("scale", "I8", ()),
        ("dec/w", "F16", (40, 48)),
    ]
    assert layout.metadata["ctranslate2"]["spec"] == "TestSpec"
    assert layout.segments[-1].kind == "verbatim" and layout.segments[-1].size == 9


@pytest.mark.parametrize("level", ["fast", "default", "max"])
def test_roundtrip(level):
    data = sample()
    assert decompress_bytes(compress_bytes(data, level=level)) == data


def test_get_tensor(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(sample())
    zipmodel.compress_file(p)
    with zipmodel.open(str(p) + ".zm") as f:
        assert f.get_tensor("enc/b").tolist() == list(range(40))
        assert f.get_tensor("enc/w").dtype == np.float16 and f.get_tensor("enc/w").shape == (48, 40)


@pytest.mark.parametrize("cut", [5, 30, 60, 200])
def test_truncated_falls_back_to_bytes(cut):
    data = sample()[:cut]
    layout = read_layout(np.frombuffer(data, np.uint8))
    if len(data) >= 16:
        with pytest.raises(CT2Error):
            read_ctranslate2(np.frombuffer(data, np.uint8))
    assert layout.format == "raw"
    assert decompress_bytes(compress_bytes(data)) == data


def test_size_mismatch_rejected():
    bad = edgecases.ctranslate2_bytes([("x", 0, [3], b"\x00" * 8)])
    with pytest.raises(CT2Error, match="needs 12 bytes"):
        read_ctranslate2(np.frombuffer(bad, np.uint8))


def test_dtype_hint_is_for_unknown_files_only():
    data = sample()
    from zipmodel.dtypes import dtype_from_hint

    assert (
        read_layout(np.frombuffer(data, np.uint8), dtype=dtype_from_hint("f16")).format
        == "ctranslate2"
    )
    forced = read_layout(np.frombuffer(data, np.uint8), format="raw", dtype=dtype_from_hint("f16"))
    assert forced.format == "raw" and forced.tensors()[0].dtype == "F16"
