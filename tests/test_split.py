import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from zipmodel.stages import TRANSFORMS, get_transform, transform_for
from zipmodel.stages.split import Identity, SplitBF16, SplitF16, SplitF32

REFERENCE = {SplitBF16: naive.split_bf16, SplitF32: naive.split_f32, SplitF16: naive.split_f16}


def words(itemsize):
    return st.binary(max_size=4096).map(lambda b: b[: len(b) - len(b) % itemsize])


@pytest.mark.parametrize("cls", [SplitBF16, SplitF16, SplitF32, Identity], ids=lambda c: c.name)
@given(data=st.data())
def test_roundtrip_any_bit_pattern(cls, data):
    t = cls()
    raw_bytes = data.draw(words(t.itemsize))
    raw = np.frombuffer(raw_bytes, np.uint8)
    before = raw.copy()
    streams = t.forward(raw)
    assert np.array_equal(raw, before), "forward must not modify its input"
    assert [s.size for s in streams] == list(t.stream_sizes(raw.size))
    assert all(s.dtype == np.uint8 and s.flags.c_contiguous for s in streams)
    out = np.empty(raw.size, np.uint8)
    t.inverse(streams, out)
    assert out.tobytes() == raw_bytes
    if cls in REFERENCE:
        assert [s.tobytes() for s in streams] == REFERENCE[cls](raw_bytes)


@pytest.mark.parametrize("cls", [SplitBF16, SplitF16, SplitF32], ids=lambda c: c.name)
def test_unaligned_views(cls):
    """Tensor data may start at any byte offset of the file."""
    t = cls()
    buf = np.random.default_rng(1).integers(0, 256, 4097, dtype=np.uint8)
    raw = buf[1 : 1 + 4096 - 4096 % t.itemsize]
    out_buf = np.zeros(raw.size + 1, np.uint8)
    out = out_buf[1:]
    t.inverse(t.forward(raw), out)
    assert np.array_equal(out, raw)


@pytest.mark.parametrize("cls", [SplitBF16, SplitF16, SplitF32], ids=lambda c: c.name)
@pytest.mark.parametrize("src_shift", [0, 1, 2, 3])
@pytest.mark.parametrize("out_shift", [0, 1, 2, 3])
def test_word_and_byte_kernels_agree(cls, src_shift, out_shift):
    """Aligned data takes the word kernels, unaligned the byte kernels: same streams, same bytes."""
    t = cls()
    n = 4096
    buf = np.random.default_rng(2).integers(0, 256, n + 4, dtype=np.uint8)
    raw = buf[src_shift : src_shift + n]
    streams = t.forward(raw)
    if cls in REFERENCE:
        assert [s.tobytes() for s in streams] == REFERENCE[cls](raw.tobytes())
    out = np.zeros(n + 4, np.uint8)[out_shift : out_shift + n]
    t.inverse(streams, out)
    assert np.array_equal(out, raw)


def test_bf16_exponent_is_exact():
    # 1.0 in bf16 is 0x3F80: exponent 127, sign 0, mantissa 0; -2.0 is 0xC000: exponent 128, sign 1
    raw = np.array([0x3F80, 0xC000], np.uint16).view(np.uint8)
    exp, sm = SplitBF16().forward(raw)
    assert exp.tolist() == [127, 128]
    assert sm.tolist() == [0, 1]


def test_registry():
    assert sorted(TRANSFORMS) == [0, 1, 2, 3]
    for tid, t in TRANSFORMS.items():
        assert t.transform_id == tid and get_transform(tid) is t
        assert len(t.stream_kinds) == t.n_streams
    assert get_transform(200) is None
    assert transform_for("BF16").name == "split-bf16"
    assert transform_for("F32").name == "split-f32"
    assert transform_for("F16").name == "split-f16"
    for d in ("F8_E4M3", "F8_E5M2", "I64", "U8", None, "X99"):
        assert transform_for(d).name == "identity"


def test_stream_sizes_rejects_partial_elements():
    with pytest.raises(ValueError):
        SplitF32().stream_sizes(6)
    arr = SplitF32().stream_sizes_array(np.array([4, 8, 1024]))
    assert arr.tolist() == [[1] * 4, [2] * 4, [256] * 4]
