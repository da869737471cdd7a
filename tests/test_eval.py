"""zipmodel eval: embeddings of a model folder vs its compressed copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from zipmodel.cli import cli
from zipmodel.errors import ZipmodelError
from zipmodel.evaluate import embedding_agreement, load_sentences
from zipmodel.folder import compress_dir

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "fast",
    "slow",
    "red",
    "blue",
    "model",
    "file",
    "small",
    "big",
]


def test_bundled_sentences():
    s = load_sentences()
    assert len(s) >= 100 and len(set(s)) == len(s)
    assert all(len(x.split()) >= 2 for x in s)


def test_sentences_from_file(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("one two\n\n  three four  \n")
    assert load_sentences(p) == ["one two", "three four"]
    p.write_text("\n \n")
    with pytest.raises(ZipmodelError, match="no sentences"):
        load_sentences(p)


def _tiny_bert(folder: Path, seed: int) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    vocab = folder / "vocab.txt"
    folder.mkdir(parents=True)
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    transformers.BertTokenizer(str(vocab)).save_pretrained(folder)
    cfg = transformers.BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(seed)
    transformers.BertModel(cfg).save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    _tiny_bert(root / "model", seed=0)
    return root


def test_eval_lossless_copy_agrees(tiny):
    compress_dir(tiny / "model", tiny / "model.zm")
    rep = embedding_agreement(
        tiny / "model", tiny / "model.zm", sentences=["the cat sat", "a dog ran fast"]
    )
    assert rep.replaced == ["model.safetensors"]
    assert rep.dim == 32 and len(rep.cosines) == 2
    assert rep.mean_cosine == pytest.approx(1.0, abs=1e-12)
    assert rep.min_cosine == pytest.approx(1.0, abs=1e-12)


def test_eval_sees_other_weights(tiny):
    # a compressed folder of different weights under the same layout must not look identical
    _tiny_bert(tiny / "other", seed=1)
    compress_dir(tiny / "other", tiny / "other.zm")
    rep = embedding_agreement(tiny / "model", tiny / "other.zm", sentences=load_sentences()[:20])
    assert rep.min_cosine < 0.99


def test_eval_cli_json_and_single_file(tiny):
    if not (tiny / "model.zm").exists():
        compress_dir(tiny / "model", tiny / "model.zm")
    sents = tiny / "s.txt"
    sents.write_text("the red cat\nthe blue dog\nsmall model file\n")
    r = CliRunner().invoke(
        cli,
        ["eval", str(tiny / "model"), str(tiny / "model.zm" / "model.safetensors.zm"), "--json",
         "--sentences", str(sents)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    env_doc = json.loads(r.stdout)
    assert env_doc["command"] == "eval" and env_doc["ok"] is True
    (doc,) = env_doc["results"]
    assert doc["kind"] == "eval" and doc["sentences"] == 3
    assert doc["replaced"] == ["model.safetensors"]
    assert doc["mean_cosine"] == pytest.approx(1.0, abs=1e-12)


def test_eval_errors(tmp_path, tiny):
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["eval", str(tmp_path / "empty"), str(tmp_path)])
    assert r.exit_code == 1 and "config.json" in r.stderr
    r = CliRunner().invoke(cli, ["eval", str(tiny / "model"), str(tmp_path / "empty")])
    assert r.exit_code == 1 and "zipmodel.json" in r.stderr
    r = CliRunner().invoke(cli, ["eval", str(tiny / "model"), str(tmp_path / "missing")])
    assert r.exit_code == 2


def test_eval_single_zm_of_another_name(tiny, tmp_path):
    import shutil

    import zipmodel

    zm = tmp_path / "renamed.zm"
    zipmodel.compress_file(tiny / "model" / "model.safetensors", zm)
    rep = embedding_agreement(tiny / "model", zm, sentences=["the cat sat"])
    assert rep.replaced == ["model.safetensors"] and rep.min_cosine == pytest.approx(1.0, abs=1e-12)
    two = tmp_path / "two"
    shutil.copytree(tiny / "model", two)
    shutil.copy(two / "model.safetensors", two / "other.safetensors")
    with pytest.raises(ZipmodelError, match="cannot tell which file"):
        embedding_agreement(two, zm, sentences=["the cat sat"])


@pytest.mark.corpus
@pytest.mark.slow
def test_eval_minilm_lossless(corpus, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")  # installed by .ci/run (ZIPMODEL_TEST_TORCH=1)
    compress_dir(corpus / "minilm", tmp_path / "minilm.zm")
    rep = embedding_agreement(corpus / "minilm", tmp_path / "minilm.zm")
    assert len(rep.cosines) >= 100 and rep.dim == 384
    assert rep.mean_cosine == pytest.approx(1.0, abs=1e-12)
    assert rep.min_cosine == pytest.approx(1.0, abs=1e-12)
    assert np.isfinite(rep.cosines).all()


@pytest.mark.corpus
@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, max_bits, min_cos",
    # int8 is plain absmax/127 per row since issue 18 (its error at most half a step, no
    # silent coarsening of the step to save bits): 7.36 bits/weight on MiniLM, was <= 7.0
    [("int8", 7.5, 0.999), ("fp8", 8.0, 0.998), ("int4", 4.6, 0.95), ("nf4", 4.6, 0.95)],
)
def test_minilm_lossy_targets(corpus, tmp_path, preset, max_bits, min_cos):
    """Issue 6's targets on the real model (benches/lossy.py has the full table)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")  # installed by .ci/run (ZIPMODEL_TEST_TORCH=1)
    import zipmodel

    compress_dir(corpus / "minilm", tmp_path / "minilm.zm", lossy=preset)
    with zipmodel.open(tmp_path / "minilm.zm" / "model.safetensors.zm") as f:
        staged = f.summary().staged()
    n = sum(int(np.prod(t.shape)) for t in staged)
    assert len(staged) == 39
    assert 8 * sum(t.compressed_bytes for t in staged) / n <= max_bits
    rep = embedding_agreement(corpus / "minilm", tmp_path / "minilm.zm")
    assert rep.mean_cosine >= min_cos
    assert rep.mean_cosine < 1.0  # it did go through the quantizer
