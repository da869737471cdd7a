"""The lossy quantizers (zipmodel.stages.quant) and their error metrics (zipmodel.quality).

Each stage is checked against the slow references in tests/naive_quant.py, for its error bound
on generated data, for decode(encode(x)) dtypes and shapes, and for its edge cases.
"""

from __future__ import annotations

import json
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive_quant as ref
from zipmodel.dtypes import numpy_dtype
from zipmodel.options import GGML_PRESETS
from zipmodel.quality import ErrorStats, measure, total
from zipmodel.readers.base import TENSOR, Segment
from zipmodel.stages.quant import (
    CLIP_FACTORS,
    INT4_LEVELS,
    NF4_LEVELS,
    PRESETS,
    STAGES,
    Bf16Stage,
    Int4Stage,
    Int8Stage,
    MantissaStage,
    Nf4Stage,
    make_stage,
)
from zipmodel.stages.tensor import StageContext, TensorStage

CTX = StageContext()
NP = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}
ALL = [
    ("bf16", {}),
    ("fp8", {}),
    ("fp8", {"per_tensor": True}),
    ("int8", {}),
    ("int4", {}),
    ("int4", {"asymmetric": True}),
    ("int4", {"group_size": 32}),
    ("nf4", {}),
    ("nf4", {"group_size": 128}),
    (None, {"mantissa_bits": 3}),
]


def seg_of(x: np.ndarray, dtype: str, name: str = "w") -> Segment:
    return Segment(TENSOR, 0, x.nbytes, name, dtype, tuple(x.shape))


def run(stage: TensorStage, x: np.ndarray, dtype: str = "F32"):
    """encode, then decode with a fresh stage from the registry (params alone)."""
    x = np.array(x, dtype=NP[dtype])  # C-contiguous, keeps 0-d
    seg = seg_of(x, dtype)
    staged = stage.encode(x.reshape(-1).view(np.uint8), seg, CTX)
    if staged is None:
        return None, None, seg
    assert stage.part_sizes(seg, staged.params) == [p.data.size for p in staged.parts]
    for p in staged.parts:
        assert p.data.dtype == np.uint8 and p.data.flags.c_contiguous
        assert p.data.size % numpy_dtype(p.dtype).itemsize == 0
    json.dumps(staged.params)
    json.dumps(staged.quality, allow_nan=False)
    out = np.full(seg.size, 0xAA, np.uint8)
    STAGES[stage.name]().decode([p.data for p in staged.parts], out, seg, staged.params, CTX)
    y = out.view(NP[dtype]).reshape(x.shape)
    return staged, y, seg


def gaussian(shape, seed=0, sigma=0.02):
    return (np.random.default_rng(seed).standard_normal(shape) * sigma).astype(np.float32)


def rel_rms(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    return math.sqrt(((y - x) ** 2).sum() / (x**2).sum())


# -- registry and presets -----------------------------------------------------------------


def test_registry_names_and_presets():
    assert PRESETS[:5] == ("bf16", "fp8", "int8", "int4", "nf4")
    assert set(GGML_PRESETS) <= set(PRESETS)  # ggml's block types (stages/ggml.py)
    assert set(STAGES) == {"bf16", "mantissa", "fp8", "int8", "int4", "nf4"}
    for name, cls in STAGES.items():
        assert cls.name == name and cls.lossy and issubclass(cls, TensorStage)
    assert STAGES["mantissa"].elementwise and not STAGES["int4"].elementwise
    for p in PRESETS:
        assert make_stage(p).name == (f"ggml-{p}" if p in GGML_PRESETS else p)
    assert isinstance(make_stage(None, mantissa_bits=5), MantissaStage)
    assert make_stage("bf16", mantissa_bits=4).mantissa_bits == 4


@pytest.mark.parametrize(
    "args, kw, msg",
    [
        (("int5",), {}, "unknown lossy preset"),
        ((None,), {}, "preset or mantissa bits"),
        (("int8",), {"mantissa_bits": 4}, "bf16 only"),
        (("int8",), {"per_tensor": True}, "fp8 option"),
        (("nf4",), {"asymmetric": True}, "int4 option"),
        (("int4",), {"group_size": 16}, "group size"),
        (("nf4",), {"group_size": 256}, "group size"),
        (("bf16",), {"mantissa_bits": 8}, "at most 7"),
        ((None,), {"mantissa_bits": 30}, "mantissa bits"),
    ],
)
def test_make_stage_rejects(args, kw, msg):
    with pytest.raises(ValueError, match=msg):
        make_stage(*args, **kw)


# -- shapes, dtypes, determinism ------------------------------------------------------------


@pytest.mark.parametrize("preset, kw", ALL)
@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
@pytest.mark.parametrize("shape", [(48, 70), (3, 5, 7), (101,), ()])
def test_roundtrip_dtype_shape_deterministic(preset, kw, dtype, shape):
    x = gaussian(shape, seed=len(shape)) + np.float32(0.001)
    stage = make_stage(preset, **kw)
    staged, y, seg = run(stage, x, dtype)
    if preset == "bf16" and dtype != "F32":
        assert staged is None  # nothing to gain on 16-bit input
        return
    assert staged is not None
    assert y.dtype == NP[dtype] and y.shape == x.shape
    again = stage.encode(x.astype(NP[dtype]).reshape(-1).view(np.uint8), seg, CTX)
    assert [p.data.tobytes() for p in again.parts] == [p.data.tobytes() for p in staged.parts]
    assert again.params == staged.params and again.quality == staged.quality
    # the quality recorded is the error of exactly what decoding gives
    q = measure(x.astype(NP[dtype]), y).to_json()
    assert q["sq_err"] == pytest.approx(staged.quality["sq_err"], rel=1e-12, abs=0)
    assert q["max_abs"] == staged.quality["max_abs"]


@pytest.mark.parametrize("preset, kw", ALL)
def test_integer_and_empty_tensors_untouched(preset, kw):
    stage = make_stage(preset, **kw)
    for dt, arr in [
        ("I8", np.arange(-50, 50, dtype=np.int8)),
        ("I32", np.arange(100, dtype=np.int32)),
    ]:
        seg = Segment(TENSOR, 0, arr.nbytes, "i", dt, arr.shape)
        assert stage.encode(arr.view(np.uint8), seg, CTX) is None
    empty = np.zeros((0, 16), np.float32)
    assert run(stage, empty)[0] is None


@pytest.mark.parametrize("preset, kw", ALL)
def test_decode_rejects_wrong_parts(preset, kw):
    stage = make_stage(preset, **kw)
    staged, _, seg = run(stage, gaussian((16, 64)))
    parts = [p.data for p in staged.parts]
    out = np.empty(seg.size, np.uint8)
    with pytest.raises(ValueError):
        STAGES[stage.name]().decode([*parts, parts[0]], out, seg, staged.params, CTX)
    with pytest.raises(ValueError):
        STAGES[stage.name]().decode([parts[0][:-1], *parts[1:]], out, seg, staged.params, CTX)


@pytest.mark.parametrize(
    "name, params",
    [
        ("int4", {"group_size": 0, "scale_dtype": "BF16", "asymmetric": False}),
        ("int4", {"group_size": 64, "scale_dtype": "F64", "asymmetric": False}),
        ("int4", {"group_size": 64, "scale_dtype": "BF16"}),
        ("nf4", {"group_size": "64", "scale_dtype": "BF16"}),
        ("nf4", {"group_size": True, "scale_dtype": "BF16"}),
        ("int8", {"scale_dtype": "F16"}),
        ("fp8", {"per_tensor": 1, "scale_dtype": "F32"}),
        ("bf16", {"mantissa_bits": 9}),
        ("mantissa", {"bits": 23}),
        ("mantissa", {}),
    ],
)
def test_hostile_params_rejected_before_decoding(name, params):
    seg = Segment(TENSOR, 0, 4 * 64, "w", "F32", (4, 16))
    with pytest.raises(ValueError):
        STAGES[name]().part_sizes(seg, params)


def test_stage_on_non_float_segment_rejected():
    seg = Segment(TENSOR, 0, 64, "w", "I32", (4, 4))
    with pytest.raises(ValueError, match="dtype"):
        STAGES["int8"]().part_sizes(seg, {"scale_dtype": "F32"})


def test_out_of_range_codes_rejected():
    x = gaussian((4, 64))
    staged, _, seg = run(make_stage("nf4"), x)
    codes = staged.parts[0].data.copy()
    codes[3] = 16
    with pytest.raises(ValueError, match="above 15"):
        STAGES["nf4"]().decode(
            [codes, staged.parts[1].data], np.empty(seg.size, np.uint8), seg, staged.params, CTX
        )


# -- bf16 and mantissa rounding against the reference --------------------------------------

SPECIAL = np.array(
    [0.0, -0.0, 1.0, -1.0, 1.00390625, 1.01171875, 1.005859375, 3.4028235e38, -3.4028235e38,
     3.39e38, 1e-40, -1e-45, 1.1754944e-38, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 6e-8],
    dtype=np.float32,
)  # fmt: skip


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    with np.errstate(invalid="ignore"):  # signalling NaNs warn when cast
        a, b = a.astype(np.float64), b.astype(np.float64)
    return bool(np.all((a == b) & (np.signbit(a) == np.signbit(b)) | (np.isnan(a) & np.isnan(b))))


def test_bf16_special_values():
    staged, y, _ = run(Bf16Stage(), SPECIAL)
    assert _same(y, ref.bf16(SPECIAL))
    assert (
        np.isnan(y[np.isnan(SPECIAL)]).all()
        and (y[np.isinf(SPECIAL)] == SPECIAL[np.isinf(SPECIAL)]).all()
    )
    assert np.isfinite(y[np.isfinite(SPECIAL)]).all()  # saturates, never inf
    # same as ml_dtypes / torch RNE wherever that does not overflow
    small = np.isfinite(SPECIAL) & (np.abs(SPECIAL) < 3.3e38)
    assert _same(y[small], SPECIAL[small].astype(ml_dtypes.bfloat16).astype(np.float32))
    assert staged.quality["nonfinite"] == 3 and staged.quality["bits"] == 16


def test_bf16_nan_payload_in_low_bits_stays_nan():
    x = np.array([0x7F800001, 0xFF800100, 0x7FC00000], dtype=np.uint32).view(np.float32)
    _, y, _ = run(Bf16Stage(), x)
    assert np.isnan(y).all()


words32 = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(words32, min_size=1, max_size=64), st.integers(0, 7))
def test_bf16_matches_reference_on_any_bits(words, keep):
    x = np.array(words, dtype=np.uint32).view(np.float32)
    _, y, _ = run(Bf16Stage(keep), x)
    assert _same(y, ref.bf16(x, keep))


@settings(max_examples=80, deadline=None)
@given(
    st.lists(words32, min_size=1, max_size=64), st.sampled_from(["F32", "F16", "BF16"]), st.data()
)
def test_mantissa_matches_reference_on_any_bits(words, dtype, data):
    mant = {"F32": 23, "F16": 10, "BF16": 7}[dtype]
    keep = data.draw(st.integers(0, mant - 1))
    raw = np.array(words, dtype=np.uint32)
    x = raw.view(np.float32) if dtype == "F32" else (raw & 0xFFFF).astype(np.uint16).view(NP[dtype])
    seg = seg_of(x, dtype)
    staged = MantissaStage(keep).encode(x.reshape(-1).view(np.uint8), seg, CTX)
    y = staged.parts[0].data.view(NP[dtype])
    assert staged.parts[0].dtype == dtype
    assert _same(y, ref.mantissa(x, keep))
    # NaN and inf come back bit for bit; the dropped low bits are zero
    words = np.uint32 if dtype == "F32" else np.uint16
    xb, yb = x.view(words), y.view(words)
    with np.errstate(invalid="ignore"):
        nf = ~np.isfinite(x.astype(np.float32))
    assert (yb[nf] == xb[nf]).all()
    assert (yb[~nf] & ((1 << (mant - keep)) - 1) == 0).all()


def test_mantissa_decodes_any_slice_alone():
    x = gaussian((16, 16), seed=11)
    seg = seg_of(x, "F32")
    staged = MantissaStage(5).encode(x.reshape(-1).view(np.uint8), seg, CTX)
    data = staged.parts[0].data
    out = np.empty(400, np.uint8)
    MantissaStage().decode([data[200:600]], out, seg, staged.params, CTX, offset=200)
    assert out.tobytes() == data[200:600].tobytes()


def test_mantissa_without_work_is_skipped():
    x = gaussian((8, 8)).astype(ml_dtypes.bfloat16)
    assert MantissaStage(7).encode(x.reshape(-1).view(np.uint8), seg_of(x, "BF16"), CTX) is None


@pytest.mark.parametrize("bits, bound", [(7, 2.0**-8), (4, 2.0**-5), (1, 2.0**-2)])
def test_mantissa_error_bound(bits, bound):
    x = gaussian((64, 64), seed=3)
    staged, y, _ = run(MantissaStage(bits), x)
    # relative error of each element at most half a unit in the last kept place
    assert np.all(np.abs(y - x) <= np.abs(x) * bound + 1e-45)
    assert staged.quality["bits"] == 1 + 8 + bits


# -- fp8 and int8 ---------------------------------------------------------------------------


@pytest.mark.parametrize("per_tensor", [False, True])
def test_fp8_matches_reference(per_tensor):
    x = gaussian((6, 40), seed=1)
    x[2] *= 100  # channels of very different ranges
    x[4] = 0.0
    staged, y, _ = run(make_stage("fp8", per_tensor=per_tensor), x)
    codes, scales = ref.fp8(x, per_tensor)
    assert staged.parts[0].dtype == "F8_E4M3"
    np.testing.assert_array_equal(staged.parts[0].data.reshape(codes.shape), codes)
    np.testing.assert_array_equal(staged.parts[1].data.view(np.float32), scales)
    assert not y[4].any()


def test_fp8_error_bound_and_saturation():
    x = gaussian((128, 256), seed=2)
    staged, y, _ = run(make_stage("fp8"), x)
    assert rel_rms(x, y) < 0.035  # 3 mantissa bits: ~2.6% RMS on Gaussian data
    assert staged.quality["rel_rms"] == pytest.approx(rel_rms(x, y), rel=1e-9)
    # the row maximum maps to 448 exactly and comes back within its scale's rounding
    row_max = np.abs(x).max(axis=1)
    assert np.allclose(np.abs(y).max(axis=1), row_max, rtol=1e-6)


def test_int8_matches_reference():
    x = gaussian((5, 33), seed=4)
    x[1] = 0.0
    x[3, 7] = 50.0  # one huge outlier: only its own row gets a coarse scale
    staged, y, _ = run(Int8Stage(entropy_cap=None), x)
    codes, scales = ref.int8(x)
    np.testing.assert_array_equal(staged.parts[0].data.view(np.int8).reshape(codes.shape), codes)
    np.testing.assert_array_equal(staged.parts[1].data.view(np.float32), scales)
    assert not y[1].any()
    for r in (0, 2, 4):
        assert np.abs(y[r] - x[r]).max() <= scales[r] / 2 * (1 + 1e-6)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 90),
    st.floats(1e-30, 1e30),
    st.integers(0, 2**32 - 1),
)
def test_int8_error_within_half_step(rows, cols, sigma, seed):
    x = (np.random.default_rng(seed).standard_normal((rows, cols)) * sigma).astype(np.float32)
    staged, y, _ = run(make_stage("int8"), x)
    step = staged.parts[1].data.view(np.float32)[:, None]
    assert np.all(np.abs(y - x) <= step / 2 * (1 + 1e-5) + np.abs(x) * 1e-6)


def test_int8_gaussian_bound():
    x = gaussian((384, 1536), seed=5)
    staged, y, _ = run(Int8Stage(entropy_cap=None), x)
    assert rel_rms(x, y) < 0.01
    assert staged.quality["snr_db"] > 40
    # the preset is plain absmax / 127 (no silent coarsening, issue 18): the same bound
    staged, y, _ = run(make_stage("int8"), x)
    assert rel_rms(x, y) < 0.01
    assert staged.params == {"scale_dtype": "F32"}
    # a row of near-Gaussian data with heavy rows of tiny values (the conv tensor of issue 18
    # had rows whose absmax was ~3 RMS): the error stays within half a step everywhere
    x2 = gaussian((64, 256), seed=6) * np.logspace(-3, 0, 64, dtype=np.float32)[:, None]
    staged, y2, _ = run(make_stage("int8"), x2)
    step = staged.parts[1].data.view(np.float32)[:, None]
    assert np.all(np.abs(y2 - x2) <= step / 2 * (1 + 1e-6))
    assert rel_rms(x2, y2) < 0.01


def test_int8_entropy_cap_scales():
    x = gaussian((6, 512), seed=13)
    x[2, 5] = 1.0  # an outlier row: absmax / 127 is coarser than the cap, and wins
    x[4] = 0.0
    staged, y, _ = run(Int8Stage(entropy_cap=6.9), x)  # opt-in, recorded
    assert staged.params == {"scale_dtype": "F32", "entropy_cap": 6.9}
    s = staged.parts[1].data.view(np.float32)
    rms = np.sqrt((x.astype(np.float64) ** 2).mean(axis=1))
    cap = rms * math.sqrt(2 * math.pi * math.e) / 2**6.9
    np.testing.assert_allclose(s, np.maximum(np.abs(x).max(axis=1) / 127, cap), rtol=1e-6)
    assert s[2] == pytest.approx(1.0 / 127) and s[4] == 0 and not y[4].any()
    codes = staged.parts[0].data.view(np.int8).reshape(x.shape)
    safe = np.where(s > 0, s, 1)[:, None]
    np.testing.assert_array_equal(codes, np.clip(np.rint(x / safe), -127, 127))
    # the entropy of the codes of a Gaussian row is about the cap
    c = codes[0].astype(np.int64)
    p = np.bincount(c - c.min()) / c.size
    assert np.abs(np.abs(c).max()) < 127
    assert -(p[p > 0] * np.log2(p[p > 0])).sum() < 6.9 + 0.2
    with pytest.raises(ValueError, match="entropy cap"):
        Int8Stage(entropy_cap=0.5)


# -- int4 and nf4 ---------------------------------------------------------------------------


def _as_bf16(v) -> float:
    return float(np.float32(v).astype(ml_dtypes.bfloat16))


def _check_groups(x, staged, g, levels):
    """Codes are the nearest levels for the stored scale; that scale is the grid's best."""
    scales = staged.parts[1].data.view(ml_dtypes.bfloat16).astype(np.float32)
    codes = staged.parts[0].data
    for k, xg in enumerate(ref.groups_of(x, g)):
        s = scales[k]
        want, deq = ref.sym_group(xg, levels, s)
        got = codes[k * g : k * g + xg.size]
        for c, w, v in zip(got, want, xg):
            y = float(np.float32(v) / np.float32(s)) if s else 0.0
            assert abs(levels[c] - y) <= abs(levels[w] - y) + 1e-6  # nearest (ties either way)
        # no clipping factor of the grid would have done better
        m = xg[np.abs(xg).argmax()]
        base = np.float32(m) / np.float32(-8) if levels is INT4_LEVELS else np.float32(abs(m))
        err = ref.group_error(xg, deq)
        for f in CLIP_FACTORS:
            _, other = ref.sym_group(xg, levels, _as_bf16(np.float32(base) * np.float32(f)))
            assert err <= ref.group_error(xg, other) * (1 + 1e-5) + 1e-30


@pytest.mark.parametrize(
    "stage, levels", [(Int4Stage(32), INT4_LEVELS), (Nf4Stage(32), NF4_LEVELS)]
)
def test_group_quantizers_match_reference(stage, levels):
    x = gaussian((7, 19), seed=6)  # 133 elements: four groups of 32 and a tail of 5
    x[0, :5] = 0.0
    x[3, 3] = 2.0
    staged, _, _ = run(stage, x)
    assert staged.params["scale_dtype"] == "BF16"
    assert len(staged.parts[1].data) == 5 * 2
    _check_groups(x, staged, 32, levels)
    assert set(np.unique(staged.parts[0].data)) <= set(range(16))


def test_int4_asymmetric_matches_reference():
    x = gaussian((3, 50), seed=7) + np.float32(0.01)  # shifted: the zero points pay
    staged, y, _ = run(Int4Stage(32, asymmetric=True), x)
    codes, zeros = staged.parts[0].data, staged.parts[2].data
    scales = staged.parts[1].data.view(ml_dtypes.bfloat16).astype(np.float32)
    out = []
    for k, xg in enumerate(ref.groups_of(x, 32)):
        want, deq = ref.asym_group(xg, scales[k], int(zeros[k]))
        got = codes[k * 32 : k * 32 + xg.size]
        assert sum(int(a) != int(b) for a, b in zip(got, want)) <= 1  # a rounding tie at most
        out.append(deq)
    np.testing.assert_allclose(np.concatenate(out), y.reshape(-1), rtol=0, atol=float(scales.max()))


@pytest.mark.parametrize(
    "preset, kw, bound",
    [
        ("int4", {}, 0.10),
        ("int4", {"asymmetric": True}, 0.10),
        ("int4", {"group_size": 32}, 0.09),
        ("nf4", {}, 0.095),
        ("nf4", {"group_size": 128}, 0.10),
    ],
)
def test_four_bit_gaussian_bounds(preset, kw, bound):
    x = gaussian((256, 384), seed=8)
    staged, y, _ = run(make_stage(preset, **kw), x)
    assert rel_rms(x, y) < bound
    assert staged.quality["rel_rms"] == pytest.approx(rel_rms(x, y), rel=1e-9)
    g = kw.get("group_size", 64)
    assert staged.quality["bits"] == pytest.approx(
        4 + 16 / g + (4 / g if kw.get("asymmetric") else 0)
    )


def test_clipping_search_beats_plain_absmax():
    x = gaussian((64, 512), seed=9)
    _, y, _ = run(Int4Stage(64), x)
    plain = []
    for xg in ref.groups_of(x, 64):
        m = xg[np.abs(xg).argmax()]
        plain.append(ref.sym_group(xg, INT4_LEVELS, _as_bf16(np.float32(m) / np.float32(-8)))[1])
    assert rel_rms(x, y) < 0.97 * rel_rms(x, np.concatenate(plain).reshape(x.shape))


def test_outlier_group_does_not_spoil_others():
    x = gaussian((4, 128), seed=10)
    x[0, 0] = 1000.0
    _, y, _ = run(Nf4Stage(64), x)
    assert rel_rms(x[1:], y[1:]) < 0.1
    assert y[0, 0] == pytest.approx(1000.0, rel=0.01)


def test_scales_outside_bf16_range_fall_back_to_f32():
    x = np.full((2, 64), 1e-39, np.float32)  # BF16-subnormal scales
    staged, y, _ = run(Nf4Stage(64), x)
    assert staged.params["scale_dtype"] == "F32"
    assert rel_rms(x, y) < 1e-6


# -- non-finite input ------------------------------------------------------------------------


@pytest.mark.parametrize("preset, kw", [p for p in ALL if p[0] in ("fp8", "int8", "int4", "nf4")])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_scaled_quantizers_leave_nonfinite_tensors_exact(preset, kw, bad):
    x = gaussian((8, 64))
    x[5, 5] = bad
    assert run(make_stage(preset, **kw), x)[0] is None


def test_zero_tensor():
    for preset, kw in ALL:
        staged, y, _ = run(make_stage(preset, **kw), np.zeros((4, 64), np.float32))
        assert not y.any() and staged.quality["rel_rms"] == 0.0 and staged.quality["snr_db"] is None


# -- quality ----------------------------------------------------------------------------------


def test_quality_totals_are_exact():
    xs = [gaussian((10, 30), seed=i, sigma=10.0**-i) for i in range(4)]
    stats, cat_x, cat_y = [], [], []
    for x in xs:
        staged, y, _ = run(make_stage("int8"), x)
        stats.append(staged.quality)
        cat_x.append(x.reshape(-1))
        cat_y.append(y.reshape(-1))
    t = total(stats)
    whole = measure(np.concatenate(cat_x), np.concatenate(cat_y))
    assert t.count == whole.count == 1200
    assert t.rel_rms == pytest.approx(whole.rel_rms, rel=1e-12)
    assert t.max_abs == whole.max_abs
    assert t.snr_db == pytest.approx(-20 * math.log10(t.rel_rms))
    # not the mean of per-tensor ratios (the small tensors would weigh as much as the big)
    assert t.rel_rms != pytest.approx(np.mean([s["rel_rms"] for s in stats]), rel=1e-3)
    assert t.bits == pytest.approx(8 + 32 / 30)


def test_quality_metrics_by_hand():
    x = np.array([3.0, 4.0, np.nan, np.inf], np.float32)
    y = np.array([3.0, 5.0, np.nan, np.inf], np.float32)
    s = measure(x, y, stored_bits=40)
    assert (s.count, s.nonfinite, s.sq_err, s.sq_ref, s.max_abs) == (2, 2, 1.0, 25.0, 1.0)
    assert s.rel_rms == pytest.approx(0.2) and s.snr_db == pytest.approx(10 * math.log10(25))
    assert s.bits == 10
    assert ErrorStats.from_json(s.to_json()) == s
    broken = measure(np.array([1.0], np.float32), np.array([np.inf], np.float32))
    assert broken.rel_rms == math.inf and broken.to_json()["rel_rms"] is None
    json.dumps(broken.to_json(), allow_nan=False)
    with pytest.raises(ValueError, match="elements"):
        measure(x, y[:2])


def test_int8_groups_like_q8_0():
    x = gaussian((50, 128), seed=12)  # 6400 elements: 200 groups of 32
    stage = Int8Stage(32)
    staged, y, seg = run(stage, x)
    assert staged.params == {"scale_dtype": "BF16", "group_size": 32}
    assert stage.part_sizes(seg, staged.params) == [6400, 400]
    s = np.repeat(staged.parts[1].data.view(ml_dtypes.bfloat16).astype(np.float32), 32)
    err = np.abs(y.reshape(-1) - x.reshape(-1))
    amax = np.repeat(np.abs(x.reshape(-1, 32)).max(axis=1), 32)
    # half a step, or the BF16 rounding of the scale at a group's maximum
    assert np.all(err <= np.maximum(s / 2 * (1 + 1e-6), amax * 2.0**-8))
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize, quantize

    q8 = dequantize(quantize(x, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0)
    assert rel_rms(x, y) <= rel_rms(x, q8) * 1.02


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["int4", "int4-asym", "nf4"]),
    st.sampled_from([32, 48, 64, 128]),
    st.integers(1, 700),
    st.sampled_from(["F32", "F16", "BF16"]),
    st.floats(1e-3, 1e3),
    st.integers(0, 2**32 - 1),
)
def test_group_error_bounded_per_element(kind, g, n, dtype, sigma, seed):
    """Every element, tail group included, lands within its own group's reach."""
    x = (
        (np.random.default_rng(seed).standard_normal(n) * sigma)
        .astype(NP[dtype])
        .astype(np.float32)
    )
    stage = Nf4Stage(g) if kind == "nf4" else Int4Stage(g, asymmetric=kind == "int4-asym")
    staged, y, _ = run(stage, x, dtype)
    assert staged.parts[1].data.size == -(-n // g) * 2  # one BF16 scale per group, tail too
    y = y.astype(np.float32)
    amax = np.repeat(np.abs(x).reshape(-1)[: n - n % g].reshape(-1, g).max(axis=1), g)
    if n % g:
        amax = np.concatenate([amax, np.full(n % g, np.abs(x[n - n % g :]).max())])
    # clipping moves the range end by at most 25%, rounding by at most one step (amax / 7.5)
    bound = amax * (0.25 + 1 / 7.5) * 1.01 + np.abs(x) * 2.0**-7  # + the dtype's own rounding
    assert np.all(np.abs(y - x) <= bound)


def test_mantissa_zero_bits_ties_go_to_the_even_pattern():
    # 1.5 * 2^(E-127) with no mantissa bit kept: the tie goes to the even exponent
    x = np.array([0x0140, 0x01C0, 0x8140, 0x3FC0], np.uint16).view(ml_dtypes.bfloat16)
    staged = MantissaStage(0).encode(x.view(np.uint8), seg_of(x, "BF16"), CTX)
    got = staged.parts[0].data.view(np.uint16)
    np.testing.assert_array_equal(got, [0x0100, 0x0200, 0x8100, 0x4000])
    assert _same(got.view(ml_dtypes.bfloat16), ref.mantissa(x, 0))
