"""The ECSQ stage (zipmodel.stages.ecsq): codes, dequantized values and escapes against a
per-element reference, the rate/error points the allocator uses against a brute-force count,
and hostile params."""

from __future__ import annotations

import json
import math

import ml_dtypes
import numpy as np
import pytest

from zipmodel.readers.base import TENSOR, Segment
from zipmodel.stages import get_stage
from zipmodel.stages.ecsq import EcsqStage, best_offset, ecsq_codes, rd_points
from zipmodel.stages.tensor import StageContext

CTX = StageContext()
NP = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16}


def naive_codes(x, step, rounding):
    """One element at a time: sign(x) * floor(|x| / step + rounding)."""
    s = float(np.float32(step))
    return [int(math.copysign(math.floor(abs(float(v)) / s + rounding), v)) for v in x]


def naive_dequant(q, step, offset):
    s, o = np.float32(step), np.float32(offset)
    out = []
    for c in q:
        v = np.float32(c) - (np.float32(math.copysign(1, c)) * o if c else np.float32(0))
        out.append(np.float32(v * s))
    return np.array(out, np.float32)


def run(stage, x, dtype="F32"):
    x = np.ascontiguousarray(x, dtype=NP[dtype])
    seg = Segment(TENSOR, 0, x.nbytes, "w", dtype, tuple(x.shape))
    staged = stage.encode(x.reshape(-1).view(np.uint8), seg, CTX)
    assert staged is not None
    assert stage.part_sizes(seg, staged.params) == [p.data.size for p in staged.parts]
    json.dumps(staged.params)
    out = np.full(seg.size, 0xAA, np.uint8)
    get_stage("ecsq")().decode([p.data for p in staged.parts], out, seg, staged.params, CTX)
    assert np.array_equal(out, staged.restored)
    return staged, out.view(NP[dtype]).reshape(x.shape), seg


@pytest.mark.parametrize("rounding", [0.5, 0.4])
def test_codes_and_values_match_the_reference(rounding):
    rng = np.random.default_rng(1)
    x = (rng.laplace(size=(24, 40)) * 0.03).astype(np.float32)
    step = 0.011
    staged, y, _ = run(EcsqStage(step, rounding=rounding), x)
    q = naive_codes(x.ravel(), step, rounding)
    assert staged.parts[0].data.view(np.int8).tolist() == q  # no escapes here
    off = staged.params["offset"]
    nz = [i for i, c in enumerate(q) if c]
    want = np.mean([abs(q[i]) - abs(float(x.ravel()[i])) / np.float32(step) for i in nz])
    assert off == pytest.approx(min(max(want, 0), 0.5), abs=1e-6)
    assert np.array_equal(y.ravel(), naive_dequant(q, step, off))


def test_error_is_bounded_by_the_step():
    x = (np.random.default_rng(2).standard_normal((64, 64)) * 0.02).astype(np.float32)
    step = 0.004
    _staged, y, _ = run(EcsqStage(step, centroid=False), x)
    assert np.abs(y - x).max() <= step / 2 * (1 + 1e-6)
    # about step^2 / 12 per weight
    mse = float(np.square(y.astype(np.float64) - x).mean())
    assert mse == pytest.approx(step**2 / 12, rel=0.05)
    # the centroid offset never makes it worse
    _staged_c, yc, _ = run(EcsqStage(step), x)
    assert np.square(yc.astype(np.float64) - x).sum() <= np.square(y.astype(np.float64) - x).sum()


def test_codes_beyond_int8_go_to_escapes():
    x = np.linspace(-1, 1, 4096, dtype=np.float32).reshape(64, 64)
    x[3, 5], x[40, 1] = 9.0, -7.5
    step = 0.01
    staged, y, _seg = run(EcsqStage(step, centroid=False), x)
    assert [p.name for p in staged.parts] == ["codes", "escapes"]
    q = naive_codes(x.ravel(), step, 0.5)
    big = [c for c in q if abs(c) > 127]
    assert staged.params["escapes"] == len(big)
    assert staged.parts[1].data.view("<i4").tolist() == big
    assert np.array_equal(y.ravel(), naive_dequant(q, step, 0.0))
    assert EcsqStage.describe(staged.params).endswith(f"{len(big)} escapes")


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_half_dtypes_round_trip_dequantized(dtype):
    x = (np.random.default_rng(3).standard_normal((32, 48)) * 0.05).astype(NP[dtype])
    staged, y, _ = run(EcsqStage(0.01), x, dtype)
    assert y.dtype == NP[dtype]
    assert staged.quality["rel_rms"] < 0.1


def test_nonfinite_tensors_are_left_alone():
    x = np.ones((8, 8), np.float32)
    x[1, 1] = np.nan
    seg = Segment(TENSOR, 0, x.nbytes, "w", "F32", (8, 8))
    assert EcsqStage(0.1).encode(x.reshape(-1).view(np.uint8), seg, CTX) is None


@pytest.mark.parametrize(
    "params",
    [
        {"step": -1.0, "offset": 0.0, "escapes": 0},
        {"step": float("nan"), "offset": 0.0, "escapes": 0},
        {"step": 1, "offset": 0.0, "escapes": 0},
        {"step": 0.1, "offset": 1.0, "escapes": 0},
        {"step": 0.1, "offset": 0.0, "escapes": 65},
        {"step": 0.1, "offset": 0.0, "escapes": True},
        {"step": 0.1, "offset": 0.0},
    ],
)
def test_hostile_params_are_refused(params):
    seg = Segment(TENSOR, 0, 256, "w", "F32", (8, 8))
    with pytest.raises(ValueError):
        EcsqStage(1.0).part_sizes(seg, params)


def test_escape_count_must_match_the_codes():
    seg = Segment(TENSOR, 0, 64, "w", "F32", (4, 4))
    codes = np.zeros(16, np.int8)
    codes[3] = -128
    out = np.empty(64, np.uint8)
    with pytest.raises(ValueError, match="escape"):
        EcsqStage(1.0).decode(
            [codes.view(np.uint8)], out, seg, {"step": 0.5, "offset": 0.0, "escapes": 0}, CTX
        )


def test_bad_construction():
    for bad in (0.0, -1.0, float("inf"), 1e-50):
        with pytest.raises(ValueError):
            EcsqStage(bad)
    with pytest.raises(ValueError):
        EcsqStage(0.1, rounding=0.7)


@pytest.mark.parametrize("rounding, centroid", [(0.5, True), (0.5, False), (0.35, True)])
def test_rd_points_match_a_brute_force_count(rounding, centroid):
    rng = np.random.default_rng(4)
    x = (rng.standard_t(3, size=20000) * 0.02).astype(np.float32)
    steps = np.array([0.0005, 0.003, 0.01, 0.05])
    errs, bits = rd_points(x, steps, rounding=rounding, centroid=centroid)
    for step, e, b in zip(steps, errs, bits):
        q = ecsq_codes(x, step, rounding)
        off = best_offset(x, q, step) if centroid else 0.0
        y = (q - np.sign(q) * off) * np.float64(np.float32(step))
        esc = np.abs(q) > 127
        err = float(np.square(y - x)[~esc].sum())
        # escapes are charged step^2 / 12 each (their rounding error, on average)
        assert e == pytest.approx(err + esc.sum() * float(np.float32(step)) ** 2 / 12, rel=1e-3)
        # order-0 entropy of (level, sign) with the sign taken as independent of the level
        m = np.where(esc, -1, np.abs(q))
        _, c = np.unique(m, return_counts=True)
        p = c / c.sum()
        pn = (x < 0).mean()
        hs = -(pn * np.log2(pn) + (1 - pn) * np.log2(1 - pn))
        want = -(p * np.log2(p)).sum() * x.size + hs * (q != 0).sum() + 32 * esc.sum()
        assert b == pytest.approx(want, rel=1e-3)
    assert np.all(np.diff(errs) > 0) and np.all(np.diff(bits) < 0)


def test_compress_file_round_trip(tmp_path):
    from safetensors.numpy import save_file

    import zipmodel
    from zipmodel.stages.rules import stage_chooser

    rng = np.random.default_rng(5)
    w = {"a.weight": (rng.standard_normal((128, 96)) * 0.02).astype(np.float32),
         "a.bias": rng.standard_normal(128).astype(np.float32)}  # fmt: skip
    src = tmp_path / "m.safetensors"
    save_file(w, str(src))
    rep = zipmodel.compress_file(src, tmp_path / "m.zm", stages=stage_chooser(EcsqStage(0.004)))
    (t,) = rep.summary.staged()
    assert t.stage == "ecsq" and t.note.startswith("step 0.004")
    assert 4.5 < t.bits_per_weight < 5.5  # log2(0.02 * sqrt(2 pi e) / 0.004) ~ 4.37 + tables
    got = zipmodel.load(tmp_path / "m.zm")
    assert np.array_equal(got["a.bias"], w["a.bias"])
    with zipmodel.open(tmp_path / "m.zm") as f:
        off = f.index.segments[2].stage.params["offset"]
    # half a step of rounding, plus the centroid offset
    assert np.abs(got["a.weight"] - w["a.weight"]).max() <= 0.004 * (0.5 + off) * (1 + 1e-5)
