"""The rate allocator (zipmodel.stages.allocate) and --target-bits / --target-size end to end:
the shared multiplier against an exhaustive search, landing on the budget after entropy
coding, the options' validation and the message for a budget out of reach."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import zipmodel
from zipmodel.errors import ZipmodelError
from zipmodel.options import LossyOptions
from zipmodel.stages.allocate import BudgetError, TensorCurve, allocate, tensor_curve
from zipmodel.stages.ecsq import EcsqStage


def random_curves(seed, tensors=3, points=5):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(tensors):
        bits = np.sort(rng.uniform(0, 100, points))[::-1]  # finer steps cost more ...
        err = np.sort(rng.uniform(0, 50, points))  # ... and err less
        out.append(TensorCurve(f"t{i}", 10, 1.0, np.arange(points) + 1.0, err, bits))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_lagrangian_choice_is_optimal_at_its_own_rate(seed):
    curves = random_curves(seed)
    budget = sum(float(c.bits.mean()) for c in curves)
    k = allocate(curves, budget)
    rate = sum(c.bits[i] for c, i in zip(curves, k))
    err = sum(c.err[i] for c, i in zip(curves, k))
    assert rate <= budget
    # brute force: nothing at no more bits has less error
    for combo in itertools.product(*(range(len(c.bits)) for c in curves)):
        r = sum(c.bits[i] for c, i in zip(curves, combo))
        if r <= rate:
            assert sum(c.err[i] for c, i in zip(curves, combo)) >= err - 1e-9


def test_budget_below_the_coarsest_candidates():
    curves = random_curves(0)
    with pytest.raises(BudgetError):
        allocate(curves, sum(float(c.bits.min()) for c in curves) - 1)
    assert allocate(curves, 1e9) == [int(np.argmin(c.err)) for c in curves]


def test_curve_skips_what_ecsq_leaves_alone():
    assert tensor_curve("z", np.zeros(100, np.float32)) is None
    assert tensor_curve("n", np.array([1.0, np.nan], np.float32)) is None
    c = tensor_curve("g", np.random.default_rng(0).standard_normal(5000).astype(np.float32))
    assert c.err[0] < c.err[len(c.err) // 2] < c.err[-1] and c.bits[0] > c.bits[-1]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(7)
    w = {
        "big.weight": (rng.standard_normal((256, 512)) * 0.02).astype(np.float32),
        "heavy.weight": (rng.standard_t(3, (256, 256)) * 0.05).astype(np.float32),
        "small.weight": (rng.standard_normal((128, 256)) * 0.002).astype(np.float32),
        **{
            f"l{i}.weight": (rng.standard_normal((64, 256)) * 0.01 * (i + 1)).astype(np.float32)
            for i in range(6)
        },
        "big.bias": rng.standard_normal(256).astype(np.float32),
        "ln.weight": np.ones(256, np.float32),
    }
    p = tmp_path_factory.mktemp("m") / "m.safetensors"
    save_file(w, str(p))
    return p, w


@pytest.mark.parametrize("target", [3.0, 4.25, 6.0])
def test_target_bits_lands_on_the_container(model, tmp_path, target):
    src, w = model
    rep = zipmodel.compress_file(src, tmp_path / "o.zm", target_bits=target, threads=1)
    staged = rep.summary.staged()
    assert {t.name for t in staged} == {"big.weight", "heavy.weight", "small.weight"} | {
        f"l{i}.weight" for i in range(6)
    }
    assert {t.stage for t in staged} == {"ecsq"}
    q = rep.summary.quality_total()
    assert abs(q["bits_per_weight"] - target) <= 0.02
    got = zipmodel.load(tmp_path / "o.zm")
    for k in ("big.bias", "ln.weight"):
        assert np.array_equal(got[k], w[k])  # biases and norms stay exact
    # one shared multiplier: the tensors get (near) the same step at high rate, so the
    # tiny-valued tensor gets few bits and the others many
    by = {t.name: t.bits_per_weight for t in staged}
    assert by["small.weight"] < by["big.weight"]


def test_target_size(model, tmp_path):
    src, _ = model
    goal = 120_000
    rep = zipmodel.compress_file(src, tmp_path / "o.zm", target_size=goal, threads=1)
    n = sum(int(np.prod(t.shape)) for t in rep.summary.staged())
    assert abs(rep.output_bytes - goal) * 8 / n <= 0.02


def test_target_out_of_reach_says_so(model, tmp_path):
    src, _ = model
    with pytest.raises(ZipmodelError, match="below what ECSQ reaches"):
        zipmodel.compress_file(src, tmp_path / "o.zm", target_size=2000)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"target_bits": 3.0, "target_size": 10}, "not both"),
        ({"target_bits": 3.0, "preset": "int8"}, "drop the lossy preset"),
        ({"target_bits": 0.0}, "target bits"),
        ({"target_bits": 9.0}, "target bits"),
        ({"target_size": 0}, "target size"),
    ],
)
def test_options_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        LossyOptions(**kw)


def test_options_enable_and_cli_args():
    o = LossyOptions(target_bits=4.25, keep=("x*",))
    assert o.enabled and o.targeted
    assert o.cli_args() == "--target-bits 4.25"


def test_cli(model, tmp_path):
    from zipmodel.cli import cli as main

    src, _ = model
    r = CliRunner().invoke(
        main, ["compress", str(src), "-o", str(tmp_path / "c.zm"), "--target-bits", "4"]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["info", str(tmp_path / "c.zm"), "--tensors", "--json"])
    rows = {t["name"]: t for t in __import__("json").loads(r.output)["results"][0]["tensors"]}
    assert rows["big.weight"]["stage"] == "ecsq" and rows["big.weight"]["note"].startswith("step")
    r = CliRunner().invoke(
        main, ["compress", str(src), "-o", str(tmp_path / "d.zm"), "--target-bits", "4",
               "--lossy", "int8"],
    )  # fmt: skip
    assert r.exit_code == 2 and "drop the lossy preset" in r.output


def spread_matrix(rows=256, cols=512, seed=11, laplace=True):
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(rows) % 4 == 0, 0.1, 0.01)[:, None]  # rows 10x apart in spread
    x = rng.laplace(size=(rows, cols)) if laplace else rng.standard_normal((rows, cols))
    return (x * scale).astype(np.float32)


def test_curve_prices_row_groups_and_the_container_agrees(tmp_path):
    x = spread_matrix()
    grouped, flat = tensor_curve("w", x), tensor_curve("w", x.reshape(-1))
    assert flat.groups is None and np.array_equal(grouped.err, flat.err)
    assert np.all(grouped.bits <= flat.bits)
    k = int(np.argmin(np.abs(grouped.bits / x.size - 3.0)))  # about 3 bits per weight
    g = int(grouped.groups[k])
    assert g > 1 and grouped.bits[k] < 0.95 * flat.bits[k]
    # the estimate is what the container spends on those codes, to a few hundredths of a bit
    save_file({"w": x}, str(tmp_path / "w.safetensors"))
    stage = EcsqStage(float(grouped.steps[k]), groups=g)
    rep = zipmodel.compress_file(tmp_path / "w.safetensors", tmp_path / "w.zm",
                                 stages=lambda s: stage, threads=1)  # fmt: skip
    (t,) = rep.summary.staged()
    assert abs(8 * t.compressed_bytes - grouped.bits[k]) / x.size < 0.03


def test_target_bits_lands_with_row_groups(tmp_path):
    rng = np.random.default_rng(12)
    # Gaussian rows: few escapes (the estimate charges an escape 32 bits, its coded size is
    # nearer 12, which Laplace rows 10x apart at 6 bits have thousands of)
    w = {f"s{i}.weight": spread_matrix(128, 384, i, False) * (i + 1) for i in range(4)}
    w["g.weight"] = (rng.standard_normal((128, 384)) * 0.02).astype(np.float32)
    save_file(w, str(tmp_path / "m.safetensors"))
    for target in (3.0, 6.0):
        rep = zipmodel.compress_file(tmp_path / "m.safetensors", tmp_path / "o.zm",
                                     target_bits=target, threads=1, force=True)  # fmt: skip
        staged = rep.summary.staged()
        assert abs(rep.summary.quality_total()["bits_per_weight"] - target) <= 0.02
        assert any("row groups" in (t.note or "") for t in staged if t.name.startswith("s"))
        got = zipmodel.load(tmp_path / "o.zm")
        assert set(got) == set(w)
