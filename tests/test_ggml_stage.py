"""ggml block formats as lossy stages (issue 18, zipmodel/stages/ggml.py): each preset stores
valid ggml blocks, decompress gives exactly their dequantized values in the tensor's dtype,
rows that fit no block fall back as documented, and the container does not depend on threads."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

import zipmodel
from zipmodel.cli import cli
from zipmodel.options import GGML_PRESETS, LossyOptions
from zipmodel.stages import BLOCK_SPLITS, get_stage
from zipmodel.stages.ggml import choose_qtype, ggml_candidates
from zipmodel.stages.kquant_blocks import BLOCK, dequantize_blocks

RNG = np.random.default_rng(18)


def _w(shape, dtype=np.float32, scale=0.02):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


NONFINITE = _w((8, 256))
NONFINITE[3, 7] = np.inf
TENSORS = {
    "blk.0.ffn.weight": _w((16, 512)),  # rows of 512: every type
    "blk.0.attn.weight": _w((32, 256), np.float16),
    "blk.1.attn.weight": _w((24, 256), ml_dtypes.bfloat16),
    "blk.0.small_rows.weight": _w((64, 96)),  # 96 = 3 x 32: q8_0 for the K-types
    "blk.0.odd_rows.weight": _w((50, 100)),  # fits no block: stays lossless
    "blk.0.nonfinite.weight": NONFINITE,  # NaN/inf: stays lossless
    "blk.0.ffn.bias": _w((512,)),  # a bias: kept by the rules
    "ids": np.arange(300, dtype=np.int64),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("ggml") / "m.safetensors"
    save_file(TENSORS, str(p))
    return p


def _expected_type(preset, name):
    if name in ("blk.0.odd_rows.weight", "blk.0.nonfinite.weight", "blk.0.ffn.bias", "ids"):
        return None
    return choose_qtype(preset, TENSORS[name].shape)[0]


@pytest.mark.parametrize("preset", GGML_PRESETS)
def test_preset_round_trip(model, tmp_path, preset):
    out = tmp_path / "m.zm"
    rep = zipmodel.compress_file(model, out, lossy=preset, threads=1, chunk_size=16 << 10)
    assert rep.summary.lossy
    staged = {t.name: t for t in rep.summary.tensors}
    restored = tmp_path / "r.safetensors"
    zipmodel.decompress_file(out, restored)
    back = load_file(str(restored))
    with zipmodel.open(out) as f:
        for name, orig in TENSORS.items():
            t = staged[name]
            want = _expected_type(preset, name)
            assert back[name].dtype == orig.dtype and back[name].shape == orig.shape
            if want is None:
                assert t.stage is None, name
                assert back[name].tobytes() == orig.tobytes(), "kept exact"
                continue
            assert t.stage == f"ggml-{want}", name
            blocks = f.get_part(name, "blocks")
            nblock, nbytes = BLOCK[want]
            assert blocks.size == orig.size // nblock * nbytes
            deq = dequantize_blocks(blocks, want).astype(orig.dtype).reshape(orig.shape)
            assert back[name].tobytes() == deq.tobytes(), "decompress = the blocks, dequantized"
            # the recorded error is the real one
            x = orig.astype(np.float64)
            err = np.sqrt(((back[name].astype(np.float64) - x) ** 2).sum() / (x**2).sum())
            assert t.quality["rel_rms"] == pytest.approx(err, rel=1e-5)
            assert 0 < err < 0.2
            if want != preset:
                assert t.note == f"for {preset}: rows of {orig.shape[-1]} are not a multiple of 256"
            else:
                assert t.note is None


def test_blocks_match_gguf_dequantize(model, tmp_path):
    gq = pytest.importorskip("gguf.quants")
    from gguf.constants import GGMLQuantizationType as T

    out = tmp_path / "m.zm"
    zipmodel.compress_file(model, out, lossy="q4_k", threads=1)
    with zipmodel.open(out) as f:
        got = f.get_tensor("blk.0.ffn.weight")
        blocks = f.get_part("blk.0.ffn.weight", "blocks").reshape(16, -1)
    assert np.array_equal(gq.dequantize(blocks, T.Q4_K).astype(np.float32), got)


def test_fallback_rules():
    assert choose_qtype("q4_k", (4, 512)) == ("q4_k", None)
    assert choose_qtype("q6_k", (4, 96)) == ("q8_0", "rows of 96 are not a multiple of 256")
    assert choose_qtype("q8_0", (4, 96)) == ("q8_0", None)
    assert choose_qtype("q8_0", (4, 100))[0] is None
    assert choose_qtype("iq4_xs", (512, 100))[0] is None  # the innermost axis is the row


def test_candidates_in_order_of_bits():
    names = [s.name for s in ggml_candidates(_w((4, 512)), "w")]
    assert names == [f"ggml-{q}" for q in ("q3_k", "iq4_xs", "q4_k", "q5_k", "q6_k", "q8_0")]
    assert [s.name for s in ggml_candidates(_w((4, 96), np.float16), "w")] == ["ggml-q8_0"]
    assert ggml_candidates(_w((4, 100)), "w") == []
    assert ggml_candidates(NONFINITE, "w") == []
    assert ggml_candidates(np.ones((4, 256), np.int32), "w") == []


def test_options_and_registry():
    for p in GGML_PRESETS:
        assert LossyOptions(preset=p).enabled
        cls = get_stage(f"ggml-{p}")
        assert cls is not None and cls.lossy and cls.qtype == p
    with pytest.raises(ValueError, match="bf16 only"):
        LossyOptions(preset="q4_k", mantissa_bits=4)
    # every block type a ggml stage stores has its field split
    for p in GGML_PRESETS:
        assert f"GGUF_{p.upper()}" in BLOCK_SPLITS


@pytest.mark.parametrize("dtype", ["GGUF_Q3_K", "GGUF_IQ4_XS"])
def test_new_block_splits_round_trip(dtype):
    t = BLOCK_SPLITS[dtype]
    raw = RNG.integers(0, 256, t.itemsize * 5, dtype=np.uint8)
    streams = t.forward(raw)
    assert [s.size for s in streams] == list(t.stream_sizes(raw.size))
    out = np.empty_like(raw)
    t.inverse(streams, out)
    assert np.array_equal(out, raw)


def test_info_names_the_type_and_the_fallback(model, tmp_path):
    out = tmp_path / "m.zm"
    r = CliRunner().invoke(
        cli, ["compress", str(model), "-o", str(out), "--lossy", "q5_k", "-q"],
        catch_exceptions=False,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["info", str(out), "--tensors"], catch_exceptions=False)
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "ggml-q5_k" in text and "ggml-q8_0" in text
    assert "for q5_k: rows of 96 are not a multiple of 256" in " ".join(
        r.output.replace("│", " ").split()
    )
    r = CliRunner().invoke(cli, ["info", str(out), "--json"], catch_exceptions=False)
    (res,) = json.loads(r.output)["results"]
    by = {t["name"]: t for t in res["tensors"]}
    assert by["blk.0.small_rows.weight"]["stage"] == "ggml-q8_0"
    assert by["blk.0.small_rows.weight"]["note"].startswith("for q5_k:")
    assert by["blk.0.ffn.weight"]["stage"] == "ggml-q5_k" and "note" not in by["blk.0.ffn.weight"]


def test_same_bytes_for_any_thread_count(model, tmp_path):
    blobs = [
        zipmodel.compress_bytes(model.read_bytes(), lossy="q4_k", threads=t, chunk_size=16 << 10)
        for t in (1, 2)
    ]
    assert blobs[0] == blobs[1]
