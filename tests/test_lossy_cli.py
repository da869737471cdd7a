"""Lossy compression through the API and the CLI: presets end to end, selection rules, options."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgecases
import zipmodel
from zipmodel.cli import cli
from zipmodel.cli._options import LOSSY_PRESETS
from zipmodel.readers.base import TENSOR, VERBATIM, Segment
from zipmodel.stages.rules import TensorRules

RNG = np.random.default_rng(5)
W = RNG.standard_normal((128, 256)).astype(np.float32)  # a weight matrix
EMB = (RNG.standard_normal((300, 64)) * 0.05).astype(np.float32)  # an embedding table
NORM = (1 + 0.1 * RNG.standard_normal(256)).astype(np.float32)
BIAS = (0.1 * RNG.standard_normal(128)).astype(np.float32)
SMALL = RNG.standard_normal((8, 16)).astype(np.float32)
BF = RNG.standard_normal((64, 128)).astype(np.float32)
TENSORS = {
    "embeddings.word_embeddings.weight": EMB,
    "layer.0.dense.weight": W,
    "layer.0.dense.bias": BIAS,
    "layer.0.LayerNorm.weight": NORM,
    "pooler.small.weight": SMALL,
}


def model_bytes(tensors=TENSORS, bf16=None):
    items = [(n, "F32", list(t.shape), t.tobytes()) for n, t in tensors.items()]
    if bf16 is not None:
        import ml_dtypes

        items.append(
            (
                "layer.1.bf16.weight",
                "BF16",
                list(bf16.shape),
                bf16.astype(ml_dtypes.bfloat16).tobytes(),
            )
        )
    items.append(("position_ids", "I64", [1, 512], np.arange(512, dtype=np.int64).tobytes()))
    return edgecases.safetensors_bytes(items, metadata={"format": "pt"})


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(model_bytes(bf16=BF))
    return p


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def rel_rms(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.sqrt(((got - want) ** 2).sum() / (want**2).sum()))


# -- presets end to end --------------------------------------------------------------------
BOUNDS = {  # relative RMS error bounds on Gaussian data (well above what the stages reach)
    ("bf16", None): 0.005,
    ("fp8", None): 0.05,
    ("int8", None): 0.012,
    ("int4", None): 0.16,
    ("nf4", None): 0.16,
    (None, 4): 0.05,
    ("bf16", 3): 0.1,
}


@pytest.mark.parametrize(("preset", "bits"), list(BOUNDS), ids=lambda v: str(v))
def test_preset_end_to_end(model, tmp_path, preset, bits):
    out = tmp_path / "m.zm"
    rep = zipmodel.compress_file(model, out, lossy=preset, mantissa_bits=bits, chunk_size=16 << 10)
    assert rep.summary.lossy and rep.output_bytes < rep.input_bytes
    staged = {t.name: t for t in rep.summary.tensors if t.stage}
    assert "layer.0.dense.weight" in staged and "embeddings.word_embeddings.weight" in staged
    for kept in (
        "layer.0.dense.bias",
        "layer.0.LayerNorm.weight",
        "pooler.small.weight",
        "position_ids",
    ):
        assert kept not in staged
    sd = zipmodel.load(out)
    for name, t in TENSORS.items():
        assert sd[name].dtype == np.float32 and sd[name].shape == t.shape
    assert np.array_equal(sd["layer.0.dense.bias"], BIAS)
    assert np.array_equal(sd["layer.0.LayerNorm.weight"], NORM)
    assert np.array_equal(sd["position_ids"].reshape(-1), np.arange(512))
    err = rel_rms(sd["layer.0.dense.weight"], W)
    assert 0 < err < BOUNDS[(preset, bits)]
    q = staged["layer.0.dense.weight"].quality
    assert q["rel_rms"] == pytest.approx(err, rel=1e-6), "the recorded error is the real one"
    assert q["max_abs"] == pytest.approx(
        float(np.abs(sd["layer.0.dense.weight"] - W).max()), rel=1e-6
    )
    # a bf16 source tensor keeps its dtype; bf16 from bf16 has nothing to do
    assert str(sd["layer.1.bf16.weight"].dtype) == "bfloat16"
    if preset == "bf16" and bits is None:
        assert "layer.1.bf16.weight" not in staged
    # decompress writes what load gives
    restored = tmp_path / "r.safetensors"
    zipmodel.decompress_file(out, restored)
    from safetensors.numpy import load_file

    back = load_file(str(restored))
    for name in TENSORS:
        assert back[name].tobytes() == sd[name].tobytes()


def test_int8_codes_are_entropy_coded(model, tmp_path):
    rep = zipmodel.compress_file(model, tmp_path / "m.zm", lossy="int8")
    t = next(t for t in rep.summary.tensors if t.name == "layer.0.dense.weight")
    assert t.bits_per_weight < 8.0  # codes (8 bits) plus scales, less after coding


def test_presets_match_the_quantizers():
    from zipmodel.stages.quant import PRESETS

    assert tuple(PRESETS) == LOSSY_PRESETS


# -- rules ---------------------------------------------------------------------------------
def seg(name, shape, dtype="F32"):
    n = int(np.prod(shape)) if shape else 1
    return Segment(TENSOR, 0, 4 * n, name, dtype, tuple(shape))


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "why"),
    [
        ("model.layers.0.mlp.down_proj.weight", [128, 256], "F32", None),
        ("embeddings.word_embeddings.weight", [30522, 384], "F32", None),
        ("lm_head.weight", [128, 256], "BF16", None),
        ("model.layers.0.input_layernorm.weight", [256, 256], "F32", "normalisation"),
        ("encoder.layer.0.attention.output.LayerNorm.weight", [384, 384], "F32", "normalisation"),
        ("h.0.ln_1.weight", [64, 64], "F32", "normalisation"),
        ("model.norm.weight", [4096, 2], "F32", "normalisation"),
        ("blocks.0.norm1.weight", [64, 64], "F16", "normalisation"),
        ("model.layers.0.self_attn.q_proj.bias", [64, 64], "F32", "bias"),
        ("conv.bias", [4096], "F32", "1-D"),
        ("scale", [], "F32", "scalar"),
        ("pooler.dense.weight", [32, 64], "F32", "small"),
        ("position_ids", [1, 512], "I64", "not a float"),
        ("blk.0.attn_q.weight", [4096], "GGUF_Q4_K", "not a float"),
        ("model.layers.0.mlp.up_proj.weight", [128, 256], "F8_E4M3", "not a float"),
    ],
)
def test_default_rules(name, shape, dtype, why):
    r = TensorRules().reason(seg(name, shape, dtype))
    assert (r is None) if why is None else (why in r)


def test_keep_excludes_and_only_restricts():
    w = seg("model.layers.0.mlp.down_proj.weight", [128, 256])
    e = seg("embed_tokens.weight", [1000, 64])
    rules = TensorRules(keep=("embed_*",))
    assert rules.selects(w) and not rules.selects(e)
    assert "--keep embed_*" in rules.reason(e)
    only = TensorRules(only=("*.mlp.*",))
    assert only.selects(w) and not only.selects(e)
    # defaults still apply inside --only
    assert not TensorRules(only=("*",)).selects(seg("a.bias", [64, 64]))
    assert TensorRules().reason(Segment(VERBATIM, 0, 10)) == "not a tensor"


def test_keep_and_only_through_the_api(model, tmp_path):
    rep = zipmodel.compress_file(
        model, tmp_path / "a.zm", lossy="int8", keep=["embeddings.*"], chunk_size=16 << 10
    )
    assert {t.name for t in rep.summary.tensors if t.stage} == {
        "layer.0.dense.weight",
        "layer.1.bf16.weight",
    }
    rep = zipmodel.compress_file(model, tmp_path / "b.zm", lossy="int8", only=["embeddings.*"])
    assert {t.name for t in rep.summary.tensors if t.stage} == {"embeddings.word_embeddings.weight"}
    with pytest.raises(ValueError, match="lossy"):
        zipmodel.compress_file(model, tmp_path / "c.zm", keep=["x"])


# -- CLI -------------------------------------------------------------------------------------
def test_cli_lossy_compress_prints_quality_and_json(model, tmp_path):
    out = tmp_path / "m.zm"
    r = run("compress", model, "-o", out, "--lossy", "int8")
    assert r.exit_code == 0, r.output
    assert "lossy" in r.stderr
    for col in ("rel RMS", "max abs", "SNR dB", "layer.0.dense.weight", "total"):
        assert col in r.stderr
    r = run("compress", model, "-o", out, "-f", "--lossy", "nf4", "--group-size", "32", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    f = doc["results"][0]
    assert f["lossy"] is True
    q = f["summary"]["quality"]
    assert q["tensors"] == 3 and 0 < q["rel_rms"] < 0.2 and q["bits_per_weight"] < 5
    rows = {t["name"]: t for t in f["summary"]["tensors"]}
    w = rows["layer.0.dense.weight"]
    assert w["stage"] == "nf4" and w["lossy"] and w["quality"]["snr_db"] > 10
    assert "stage" not in rows["layer.0.dense.bias"]
    with zipmodel.open(out) as z:
        rec = next(e.stage for e in z.index.segments if e.segment.name == "layer.0.dense.weight")
        assert rec.params.get("group_size") == 32


def test_cli_info_verify_decompress_of_a_lossy_file(model, tmp_path):
    out = tmp_path / "m.zm"
    assert (
        run("compress", model, "-o", out, "--lossy", "fp8", "--keep", "embeddings.*").exit_code == 0
    )
    r = run("info", out, "--tensors")
    assert r.exit_code == 0 and "lossy" in r.stdout and "fp8" in r.stdout and "SNR dB" in r.stdout
    doc = json.loads(run("info", out, "--json").stdout)["results"][0]
    assert doc["lossy"] is True and doc["quality"]["tensors"] == 2
    stages = {t["name"]: t.get("stage") for t in doc["tensors"]}
    assert (
        stages["layer.0.dense.weight"] == "fp8"
        and stages["embeddings.word_embeddings.weight"] is None
    )
    r = run("verify", out, "--json")
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)["results"][0]
    assert v["ok"] and v["lossy"] is True
    r = run("verify", out)
    assert r.exit_code == 0 and "cannot match the original" in r.stdout
    r = run("verify", out, "--against", model)
    assert r.exit_code == 3 and "lossy" in r.stderr
    restored = tmp_path / "r.safetensors"
    r = run("decompress", out, "-o", restored, "--check")
    assert r.exit_code == 0 and "dequantized" in r.stderr
    assert restored.stat().st_size == model.stat().st_size
    assert np.array_equal(_st(restored)["layer.0.dense.bias"], BIAS)


def _st(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_cli_mantissa_bits_alone(model, tmp_path):
    out = tmp_path / "m.zm"
    r = run("compress", model, "-o", out, "--mantissa-bits", "5", "--json")
    assert r.exit_code == 0, r.output
    rows = {t["name"]: t for t in json.loads(r.stdout)["results"][0]["summary"]["tensors"]}
    assert rows["layer.0.dense.weight"]["stage"] == "mantissa"


@pytest.mark.parametrize(
    "args",
    [
        ["--keep", "x"],
        ["--only", "x"],
        ["--per-tensor"],
        ["--group-size", "32"],
        ["--lossy", "int8", "--per-tensor"],
        ["--lossy", "int8", "--asymmetric"],
        ["--lossy", "int8", "--mantissa-bits", "3"],
        ["--lossy", "int4", "--group-size", "16"],
        ["--lossy", "int8", "--rm"],
        ["--lossy", "int9"],
    ],
)
def test_cli_lossy_usage_errors(model, args):
    r = run("compress", model, *args)
    assert r.exit_code == 2, r.output
    assert not model.with_name("model.safetensors.zm").exists()


def test_cli_lossy_pipe(model, tmp_path):
    r = CliRunner().invoke(
        cli, ["compress", "-", "--lossy", "int8"], input=model.read_bytes(), catch_exceptions=False
    )
    assert r.exit_code == 0, r.stderr
    blob = r.stdout_bytes
    sd = zipmodel.load(blob)
    assert rel_rms(sd["layer.0.dense.weight"], W) < 0.012


def test_lossy_folder_round_trip(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    (src / "model.safetensors").write_bytes(model_bytes())
    (src / "config.json").write_text('{"hidden_size": 256}')
    out = tmp_path / "m.zm"
    r = run("compress", src, "-o", out, "--lossy", "int8", "--json")
    assert r.exit_code == 0, r.output
    (d,) = json.loads(r.stdout)["results"]
    assert d["kind"] == "folder"
    assert d["lossy"] is True and d["quality"]["tensors"] == 2
    (info,) = json.loads(run("info", out, "--json").stdout)["results"]
    assert info["kind"] == "folder"
    assert info["lossy_files"] == ["model.safetensors"] and info["quality"]["tensors"] == 2
    r = run("info", out)
    assert "(lossy)" in r.stdout and "model.safetensors:layer.0.dense.weight" in r.stdout
    r = run("verify", out)
    assert r.exit_code == 0, r.output
    back = tmp_path / "back"
    r = run("decompress", out, "-o", back)
    assert r.exit_code == 0, r.output
    assert (back / "config.json").read_text() == '{"hidden_size": 256}'
    sd = _st(back / "model.safetensors")
    assert np.array_equal(sd["layer.0.dense.bias"], BIAS)
    assert 0 < rel_rms(sd["layer.0.dense.weight"], W) < 0.012
    assert np.array_equal(
        zipmodel.load(out / "model.safetensors.zm")["layer.0.dense.weight"],
        sd["layer.0.dense.weight"],
    )


def test_pytorch_checkpoint_storages_are_judged_by_their_tensor(tmp_path):
    torch = pytest.importorskip("torch")
    sd = {
        "encoder.dense.weight": torch.from_numpy(W.copy()),
        "encoder.dense.bias": torch.from_numpy(BIAS.copy()),
        "encoder.LayerNorm.weight": torch.from_numpy(NORM.copy()),
        "emb.weight": torch.from_numpy(EMB.copy()),
    }
    sd["head.weight"] = sd["emb.weight"]  # tied: one storage, two tensors
    p = tmp_path / "pytorch_model.bin"
    torch.save(sd, p)
    rep = zipmodel.compress_file(p, tmp_path / "m.zm", lossy="int8")
    assert len(rep.summary.staged()) == 1  # the dense weight; the tied storage is kept
    got = zipmodel.load(tmp_path / "m.zm")
    assert set(got) == set(sd)
    assert np.array_equal(got["encoder.dense.bias"], BIAS)
    assert np.array_equal(got["encoder.LayerNorm.weight"], NORM)
    assert np.array_equal(got["emb.weight"], EMB) and np.array_equal(got["head.weight"], EMB)
    assert got["encoder.dense.weight"].shape == W.shape
    assert 0 < rel_rms(got["encoder.dense.weight"], W) < 0.02
    restored = tmp_path / "r.bin"
    zipmodel.decompress_file(tmp_path / "m.zm", restored)
    back = torch.load(restored, weights_only=True)
    assert np.array_equal(back["encoder.dense.weight"].numpy(), got["encoder.dense.weight"])


@pytest.mark.corpus
@pytest.mark.parametrize("preset", ["int8", "nf4"])
def test_minilm_lossy_file_loads_with_its_dtypes_and_shapes(corpus, tmp_path, preset):
    from safetensors.numpy import load_file

    src = corpus / "minilm_fp32.safetensors"
    rep = zipmodel.compress_file(src, tmp_path / "m.zm", lossy=preset, threads=2)
    tot = rep.summary.quality_total()
    assert tot["tensors"] >= 36 and rep.ratio < 0.25
    assert tot["rel_rms"] < (0.02 if preset == "int8" else 0.12)
    want = load_file(str(src))
    got = zipmodel.load(tmp_path / "m.zm", threads=2)
    assert set(got) == set(want)
    staged = {t.name for t in rep.summary.staged()}
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape
        if name not in staged:
            assert np.array_equal(got[name], w)
    assert "embeddings.word_embeddings.weight" in staged
    assert not any("LayerNorm" in n or n.endswith(".bias") for n in staged)
    assert zipmodel.verify_file(tmp_path / "m.zm", threads=2).lossy


def test_tied_copies_stay_exact_when_one_of_them_is_kept(tmp_path):
    p = tmp_path / "tied.safetensors"
    items = [
        ("emb.weight", "F32", [300, 64], EMB.tobytes()),
        ("lm_head.weight", "F32", [300, 64], EMB.tobytes()),
    ]
    p.write_bytes(edgecases.safetensors_bytes(items))
    rep = zipmodel.compress_file(p, tmp_path / "a.zm", lossy="int8", keep=["lm_head.*"])
    assert not rep.summary.lossy
    sd = zipmodel.load(tmp_path / "a.zm")
    assert np.array_equal(sd["emb.weight"], EMB) and np.array_equal(sd["lm_head.weight"], EMB)
    rep = zipmodel.compress_file(p, tmp_path / "b.zm", lossy="int8")
    assert [t.name for t in rep.summary.staged()] == ["emb.weight"]
    sd = zipmodel.load(tmp_path / "b.zm")
    assert np.array_equal(sd["emb.weight"], sd["lm_head.weight"]) and not np.array_equal(
        sd["emb.weight"], EMB
    )
