"""Fine-tunes against their base: the delta stages, base models, and ``--base`` end to end."""

from __future__ import annotations

import numpy as np
import pytest

from zipmodel.readers.base import TENSOR, Segment
from zipmodel.stages.delta import (
    DELTA_STAGES,
    SAME,
    choose_delta,
    delta_itemsize,
)
from zipmodel.stages.tensor import StageContext

EDGE_F32 = np.array(
    [
        0x00000000,  # +0
        0x80000000,  # -0
        0x7F800000,  # +inf
        0xFF800000,  # -inf
        0x7FC00000,  # quiet NaN
        0x7FA12345,  # signalling NaN with a payload
        0xFFFFFFFF,  # negative NaN, all payload bits
        0x00000001,  # smallest subnormal
        0x807FFFFF,  # largest negative subnormal
        0x3F800000,  # 1.0
        0x3F7FFFFF,  # just below 1.0 (crosses an exponent against 1.0)
        0x7F7FFFFF,  # max float
    ],
    np.uint32,
)


def _seg(dtype: str, shape: tuple[int, ...], size: int, name: str = "w") -> Segment:
    return Segment(TENSOR, 0, size, name, dtype, shape)


def _ctx(base: np.ndarray) -> StageContext:
    return StageContext(base=lambda seg: base if seg.size == base.size else None)


def _edge_pairs():
    """(dtype, tensor bytes, base bytes): every edge pattern against every other."""
    a = np.repeat(EDGE_F32, EDGE_F32.size)
    b = np.tile(EDGE_F32, EDGE_F32.size)
    yield "F32", a.view(np.uint8), b.view(np.uint8)
    hi_a, hi_b = (a >> 16).astype(np.uint16), (b >> 16).astype(np.uint16)  # the bf16 patterns
    yield "BF16", hi_a.view(np.uint8), hi_b.view(np.uint8)
    f16 = np.array([0, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0xFFFF, 1, 0x83FF, 0x3C00], np.uint16)
    yield "F16", np.repeat(f16, f16.size).view(np.uint8), np.tile(f16, f16.size).view(np.uint8)
    i64 = np.array([0, -1, 2**63 - 1, -(2**63), 5], np.int64)
    yield "I64", np.repeat(i64, 5).view(np.uint8), np.tile(i64, 5).view(np.uint8)
    u8 = np.arange(256, dtype=np.uint8)
    yield "U8", np.repeat(u8, 256), np.tile(u8, 256)


@pytest.mark.parametrize("stage", sorted(DELTA_STAGES))
@pytest.mark.parametrize("case", list(_edge_pairs()), ids=lambda c: c[0])
def test_delta_round_trips_every_bit_pattern(stage, case):
    dtype, tensor, base = case
    seg = _seg(dtype, (tensor.size // delta_itemsize(_seg(dtype, (), tensor.size)),), tensor.size)
    st = DELTA_STAGES[stage]
    staged = st.encode(tensor, seg, _ctx(base))
    assert staged is not None
    (part,) = staged.parts
    assert part.dtype == dtype and part.data.size == tensor.size
    assert st.part_sizes(seg, staged.params) == [tensor.size]
    out = np.empty_like(tensor)
    st.decode([part.data], out, seg, staged.params, _ctx(base))
    assert np.array_equal(out, tensor)
    # elementwise: any whole-element range decodes on its own (as chunks do)
    item = delta_itemsize(seg)
    out2 = np.zeros_like(tensor)
    step = 7 * item
    for a in range(0, tensor.size, step):
        b = min(a + step, tensor.size)
        st.decode([part.data[a:b]], out2[a:b], seg, {}, _ctx(base), offset=a)
    assert np.array_equal(out2, tensor)


def test_sub_is_small_where_xor_crosses_an_exponent():
    # 1.0 against the float just below it: XOR flips 23 bits, the difference is one ulp
    t = np.array([0x3F800000], np.uint32).view(np.uint8)
    b = np.array([0x3F7FFFFF], np.uint32).view(np.uint8)
    seg = _seg("F32", (1,), 4)
    xor = DELTA_STAGES["xor"].encode(t, seg, _ctx(b)).parts[0].data.view(np.uint32)
    sub = DELTA_STAGES["sub"].encode(t, seg, _ctx(b)).parts[0].data.view(np.uint32)
    assert int(xor[0]) == 0x00FFFFFF
    assert int(sub[0]) == 2  # zigzag(+1)
    back = DELTA_STAGES["sub"].encode(b, seg, _ctx(t)).parts[0].data.view(np.uint32)
    assert int(back[0]) == 1  # zigzag(-1)


def test_no_base_tensor_means_no_delta():
    t = np.arange(64, dtype=np.float32).view(np.uint8)
    seg = _seg("F32", (64,), t.size)
    for st in [*DELTA_STAGES.values(), SAME]:
        assert st.encode(t, seg, StageContext()) is None
        assert st.encode(t, seg, StageContext(base=lambda s: None)) is None
        # a base of another size is not a candidate either
        assert st.encode(t, seg, StageContext(base=lambda s: np.zeros(8, np.uint8))) is None
    assert choose_delta(t, seg, StageContext()).stage is None


def test_delta_decode_without_base_fails_clearly():
    seg = _seg("F32", (4,), 16)
    with pytest.raises(ValueError, match="base has no tensor 'w'"):
        DELTA_STAGES["xor"].decode(
            [np.zeros(16, np.uint8)], np.empty(16, np.uint8), seg, {}, StageContext()
        )
    with pytest.raises(ValueError, match="no parameters"):
        DELTA_STAGES["sub"].part_sizes(seg, {"x": 1})


def _finetune_pair(n: int, *, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(n) * 0.05).astype(np.float32)
    ft = (base + rng.standard_normal(n).astype(np.float32) * scale).astype(np.float32)
    return ft, base


def test_choose_delta_picks_a_delta_for_a_light_finetune():
    ft, base = _finetune_pair(100_000, scale=1e-6)
    seg = _seg("F32", (200, 500), ft.nbytes)
    c = choose_delta(ft.view(np.uint8), seg, _ctx(base.view(np.uint8)), chunk_size=64 << 10)
    assert c.stage is not None and c.stage.name in ("xor", "sub")
    assert c.sizes[c.stage.name] < 0.8 * c.sizes["standalone"]
    assert c.sampled == ft.nbytes  # under SAMPLE_BYTES: coded whole, in 7 chunks


def test_choose_delta_keeps_standalone_when_the_base_is_unrelated():
    ft, _ = _finetune_pair(100_000, scale=0.0, seed=1)
    other, _ = _finetune_pair(100_000, scale=0.0, seed=2)  # same statistics, unrelated values
    seg = _seg("F32", (100_000,), ft.nbytes)
    c = choose_delta(ft.view(np.uint8), seg, _ctx(other.view(np.uint8)))
    assert c.stage is None
    assert c.sizes["standalone"] <= min(c.sizes["xor"], c.sizes["sub"])


def test_choose_delta_samples_large_tensors_and_spots_identical_ones():
    ft, base = _finetune_pair(3 * (1 << 18), scale=1e-5)  # 3 MiB of F32
    seg = _seg("F32", (ft.size,), ft.nbytes)
    c = choose_delta(ft.view(np.uint8), seg, _ctx(base.view(np.uint8)), chunk_size=64 << 10)
    assert c.sampled == 4 * (64 << 10)  # 4 pieces of one chunk each, spread over 3 MiB
    same = choose_delta(base.view(np.uint8), seg, _ctx(base.view(np.uint8)))
    assert same.stage is SAME and same.staged.parts == []
    out = np.empty(ft.nbytes, np.uint8)
    SAME.decode([], out, seg, {}, _ctx(base.view(np.uint8)))
    assert np.array_equal(out, base.view(np.uint8))
