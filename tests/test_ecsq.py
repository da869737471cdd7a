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
from zipmodel.stages.ecsq import ESCAPE_BITS, EcsqStage, best_offset, ecsq_codes, rd_points
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
        want = -(p * np.log2(p)).sum() * x.size + hs * (q != 0).sum() + ESCAPE_BITS * esc.sum()
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


# -- row groups -------------------------------------------------------------------------


def reference_groups(x2, g):
    """Plain numpy: rows ranked by sum of squares (stable), the k-th in group k * g // rows."""
    ss = np.array([float(np.dot(r.astype(np.float64), r.astype(np.float64))) for r in x2])
    rank = np.empty(len(ss), int)
    rank[np.argsort(ss, kind="stable")] = np.arange(len(ss))
    return rank * g // len(ss)


def spread_rows(rows=48, cols=64, seed=8):
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(rows) % 3 == 0, 0.1, 0.01)[:, None]  # 10x different spreads
    return (rng.laplace(size=(rows, cols)) * scale).astype(np.float32)


@pytest.mark.parametrize("g", [2, 3, 8])
def test_groups_scatter_rows_back_and_codes_match_the_reference(g):
    x = spread_rows()
    x[5, 7] = 40.0  # an escape inside a group
    step = 0.004
    staged, y, _ = run(EcsqStage(step, groups=g), x)
    p = staged.params
    labels = reference_groups(x, g)
    assert p["groups"] == g and p["group_rows"] == np.bincount(labels).tolist()
    names = [q.name for q in staged.parts]
    assert names == [f"codes{k}" for k in range(g)] + ["rowmap", "escapes"]
    assert staged.parts[g].data.tolist() == labels.tolist()
    q = np.array(naive_codes(x.ravel(), step, 0.5)).reshape(x.shape)
    stored = []
    for k in range(g):
        want = q[labels == k]  # the group's rows, in their original order
        got = staged.parts[k].data.view(np.int8).reshape(want.shape).astype(int)
        assert np.array_equal(np.where(np.abs(want) > 127, -128, want), got)
        stored += want.ravel().tolist()
    esc = [c for c in stored if abs(c) > 127]
    assert 40.0 / step in esc and staged.parts[-1].data.view("<i4").tolist() == esc
    assert np.array_equal(y.ravel(), naive_dequant(q.ravel(), step, p["offset"]))
    text = f"step 0.004, offset {p['offset']:.3f}, {g} row groups, {len(esc)} escapes"
    assert EcsqStage.describe(p) == text


def test_one_group_is_the_old_layout_byte_for_byte():
    x = spread_rows()
    a, ya, _ = run(EcsqStage(0.003), x)
    b, _yb, _ = run(EcsqStage(0.003, groups=1), x)
    assert a.params == b.params and "groups" not in a.params
    assert [(p.name, p.dtype, p.data.tobytes()) for p in a.parts] == [
        (p.name, p.dtype, p.data.tobytes()) for p in b.parts
    ]
    # groups change where the codes are stored, never the values
    c, yc, _ = run(EcsqStage(0.003, groups=4), x)
    assert np.array_equal(ya, yc) and c.params["offset"] == a.params["offset"]


@pytest.mark.parametrize(
    "shape, g, want",
    [((1, 64), 4, None), ((64,), 4, None), ((40, 1), 4, 4), ((3, 8), 8, 3)],
)
def test_group_edge_cases(shape, g, want):
    """One row and 1-D tensors: no groups; rows of one element and fewer rows than groups:
    as many groups as asked, at most one per row."""
    x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
    staged, y, _ = run(EcsqStage(0.05, groups=g), x)
    assert staged.params.get("groups") == want
    q = naive_codes(x.ravel(), 0.05, 0.5)
    assert np.array_equal(y.ravel(), naive_dequant(q, 0.05, staged.params["offset"]))


def test_all_zero_rows_in_groups():
    x = spread_rows()
    x[::4] = 0.0
    staged, y, _ = run(EcsqStage(0.002, groups=4), x)
    assert staged.parts[0].data.view(np.int8)[: 12 * 64].tolist() == [0] * (12 * 64)
    assert np.array_equal(y[::4], x[::4])
    assert np.abs(y - x).max() <= 0.002 * (0.5 + staged.params["offset"]) * (1 + 1e-6)


def coded_bytes(tmp_path, x, stage, name):
    from safetensors.numpy import save_file

    import zipmodel

    src = tmp_path / f"{name}.safetensors"
    save_file({"w": x}, str(src))
    rep = zipmodel.compress_file(src, tmp_path / f"{name}.zm", stages=lambda s: stage, threads=1)
    (t,) = rep.summary.staged()
    got = zipmodel.load(tmp_path / f"{name}.zm")["w"]
    return t.compressed_bytes, got


def test_the_most_groups_with_escapes_go_through_a_container(tmp_path):
    x = spread_rows(rows=64)
    x[7, 3] = 50.0
    stage = EcsqStage(0.004, groups=14)  # 14 code parts + row map + escapes: the index's 16
    _, y, _ = run(stage, x)
    _, got = coded_bytes(tmp_path, x, stage, "m")
    assert np.array_equal(got, y)


def test_groups_code_smaller_on_rows_of_different_spreads(tmp_path):
    x = spread_rows(rows=256, cols=512)
    plain, ya = coded_bytes(tmp_path, x, EcsqStage(0.002), "a")
    grouped, yb = coded_bytes(tmp_path, x, EcsqStage(0.002, groups=2), "b")
    assert np.array_equal(ya, yb)
    assert grouped < 0.97 * plain


@pytest.mark.parametrize(
    "extra",
    [
        {"groups": 1, "group_rows": [8]},
        {"groups": 3, "group_rows": [4, 4]},
        {"groups": 2, "group_rows": [4, 3]},
        {"groups": 2, "group_rows": [8, 0]},
        {"groups": 9, "group_rows": [1] * 9},
        {"groups": 15, "group_rows": [1] * 15},
        {"groups": 2, "group_rows": "44"},
        {"groups": True, "group_rows": [4, 4]},
    ],
)
def test_hostile_group_params_are_refused(extra):
    seg = Segment(TENSOR, 0, 256, "w", "F32", (8, 8))
    with pytest.raises(ValueError):
        EcsqStage(1.0).part_sizes(seg, {"step": 0.1, "offset": 0.0, "escapes": 0, **extra})


def test_row_map_must_match_the_group_counts():
    seg = Segment(TENSOR, 0, 64, "w", "F32", (4, 4))
    params = {"step": 0.5, "offset": 0.0, "escapes": 0, "groups": 2, "group_rows": [1, 3]}
    parts = [np.zeros(4, np.uint8), np.zeros(12, np.uint8), np.array([0, 0, 1, 1], np.uint8)]
    with pytest.raises(ValueError, match="row map"):
        EcsqStage().decode(parts, np.empty(64, np.uint8), seg, params, CTX)
    parts[2] = np.array([0, 1, 7, 1], np.uint8)
    with pytest.raises(ValueError, match="row map"):
        EcsqStage().decode(parts, np.empty(64, np.uint8), seg, params, CTX)


def test_bad_groups():
    for bad in (0, 15, 2.0, True):
        with pytest.raises(ValueError, match="groups"):
            EcsqStage(0.1, groups=bad)


# A container the ecsq stage wrote before row groups (16 x 32 fp32 normal * 0.05, seed 18,
# w[2, 3] = 9.0 as an escape; EcsqStage(0.01) through compress_file), zlib + base64.
OLD_CONTAINER = """
eNrrjPL1d3H14WJkYGJgZGBgiPJ19gYzoCAAiFOA2K/p15pe1bkrGP5DxED4/OkFh9eqX5LwgKqtVirXK0/NTM8oUbKq
VkopqSxIVbJScjM2UtJRKs5IBPGiDc10jI1idZRSEksS4/PT0opTS4qBwgY6RgYmFrG1tQpAAHNDAMwRTAwMGUB+l8k8
CTbnLWeY/kPEQoBi1WyLas/tTNiqsVX/bwIDYygXw7H4AIUFqp7sQV47zTOfLF8FBN4gQxIuRt3WUUzJ11w6RdOVwYPB
nWHO3rTsmAOMR7YZfT39Ostf+pKF6XX5vstCufO3rrG6+ZPB4v6dYJY40ybm+7uPady6bu/24f2v3Gz7if++uh42O9N4
UKI7uZ35blvDP6Z1HL3K2jPTTSS0XrxszhVWYrub9OfhpNNmrLvXmBzb1RDNnvmGJ6fkkpTuwgnaTNVO19Lf7K4+v8Js
XvSrUy0fHsq3xnxjOeFiW//oiv6trZcSV36747zJQfql6RZHh6Ym9VORf8wVmOKqdrnydvl1+YkK7NzxqF+5xHE7R/0F
YYfvLo1zEoLuTT115mzr+syzqZsrBXevvKRQKR+T5fIwUWJOm+/nwItHYn1/SbidXV+aq6np8mHjy8b/MyylMgVlmaM3
Vkj0T6sOiNCLOC56Kb3wS9gkLSH3D4wM4dECy9DjgQWIJYDYpDiRdcGXyOmgtMACFX814XbTly6hrhZmUBryjGBgRqQh
W6CCA8D4OiWft0Keqc0QFH87gfKaQDEQOwGoxo4BwlYB0rpAzNbaceeFXoguOF53Mv0VYJj2OFU+IPOzxMpdARkJf9N4
N2aauy2e9UNqk8pE/80PldWMNx+OZogFGrbm4BG+I7YL498V7FL/OsHzSuFJiYlm8tZxp+IPfcrsu/NRW2Ua/+1TEb++
P9987FBffeUUcZn6NdzHPjn26T7SnMy/vbGHLSDOqFspMOH41/wg/h8SfxYwHv+uO3XmHoG3Jmwlu6Kt9+U/T/nxYdId
9tfSG5I9hZniJApy9P+yfpzm/3jNvpr5Fd9Pltc/vKyzLCqrRGFBt8uTw+GRe35OktXO/9C11KdIlGd+G//6Sg33CYot
ci0dXYGKrxUrjlxjOr5wl/CiXYqn9b4uqPHd0flJjDVXztB0+grHZ/0bkpt+zJNZqZYQb7QxkGOWx66EV9pxW84v580/
FR3Vo3jXzTrsz9bTq/0PtnPn1BzZfe3B8ciMB6p/OAJUYmY6qNQnyMyZdou5d2HmLLNZi0smxEuGn7uU5T5NuUzinsz5
9auDzdumLb/Cd2Xrv4UP8p0me0pWvWzqrJmy3iyK6adO/tZdk7Wf9PUoW7Z9Clj5dPGU1Ucjso5N8eKY9MBaYU/r+aC9
TKYaCkxKBmc85QUNJJedavKbzbg64+ECTh/ds/O6lM4/dHZr4rAXqBJ3UeuZJR/FwBcZwbipRqSXrYZZkknQesLrxeuY
9brjm1ZpqXAoBL5pmm9+ZY29TP5CnwltWboHTqlJuT9M9MxZ7si0Um9O49olG8pD2cNYrs8VMV74WkfsgGjDNNVrVY7M
vKCEopCwlpHhAgODQAuohGIMmNLBxCjDZAFOosC0xsC9QGDF9IoDSkfZ3fgM2jezWEd/mrMs8SkPGytYt4oiMLEjlW/I
5QxyWg9hgqTrB0ygtB4SBACVbf+8"""
OLD_SHA256 = "3b3b148c70e39e607d8a9d29b3e717d54c5417581364ca8400113543b0128546"


def test_a_container_written_before_row_groups_decodes(tmp_path):
    import base64
    import hashlib
    import zlib

    import zipmodel

    p = tmp_path / "old.zm"
    p.write_bytes(zlib.decompress(base64.b64decode("".join(OLD_CONTAINER.split()))))
    got = zipmodel.load(p)["w.weight"]
    assert hashlib.sha256(got.tobytes()).hexdigest() == OLD_SHA256
    with zipmodel.open(p) as f:
        (rec,) = [s.stage for s in f.index.segments if s.stage]
    assert rec.name == "ecsq" and "groups" not in rec.params and rec.params["escapes"] == 1
    # and today's stage, asked for no groups, writes the same values
    rng = np.random.default_rng(18)
    w = (rng.standard_normal((16, 32)) * 0.05).astype(np.float32)
    w[2, 3] = 9.0
    _staged, y, _ = run(EcsqStage(0.01), w)
    assert np.array_equal(y, got)
