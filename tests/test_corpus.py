"""Real model files (shared/corpus/fetch.sh). Skipped when the corpus is absent."""

import hashlib

import pytest
import zstandard
from click.testing import CliRunner

import zipmodel
from zipmodel.cli import cli

pytestmark = pytest.mark.corpus

SAFETENSORS = [
    "tiny_fp32.safetensors",
    "tiny_int8.safetensors",
    "lora_adapter.safetensors",
    "minilm_bf16.safetensors",
    "minilm_fp32.safetensors",
    "minilm/model.safetensors",
]
OTHER = [
    ("whisper_tiny_ct2.bin", "f16"),
    ("english_g2.pth", None),
    ("craft_mlt_25k.pth", None),
    ("smollm2-135m-q4_1.gguf", None),
]


def sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", SAFETENSORS)
def test_safetensors_roundtrip_api(corpus, tmp_path, name):
    src = corpus / name
    rep = zipmodel.compress_file(src, tmp_path / "x.zm", threads=2)
    assert rep.summary.source_format == "safetensors" and not rep.note
    out = tmp_path / "restored"
    zipmodel.decompress_file(rep.output, out, threads=2, check_sha256=True)
    assert sha(out) == sha(src)


@pytest.mark.parametrize("name", SAFETENSORS)
def test_safetensors_roundtrip_cli(corpus, tmp_path, name):
    src = corpus / name
    r = CliRunner().invoke(cli, ["compress", str(src), "-o", str(tmp_path / "x.zm"), "-q"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        cli, ["decompress", str(tmp_path / "x.zm"), "-o", str(tmp_path / "y"), "--check", "-q"]
    )
    assert r.exit_code == 0, r.output
    assert sha(tmp_path / "y") == sha(src)


@pytest.mark.parametrize("name, dtype", OTHER)
def test_other_files_roundtrip(corpus, tmp_path, name, dtype):
    src = corpus / name
    rep = zipmodel.compress_file(src, tmp_path / "x.zm", dtype=dtype, threads=2)
    zipmodel.verify_file(rep.output, against=src, threads=2)


@pytest.mark.parametrize("name", ["minilm_bf16.safetensors", "minilm_fp32.safetensors"])
def test_smaller_than_zstd3(corpus, tmp_path, name):
    src = corpus / name
    z3 = len(zstandard.ZstdCompressor(level=3).compress(src.read_bytes()))
    rep = zipmodel.compress_file(src, tmp_path / "x.zm", threads=2)
    assert rep.output_bytes < z3


def test_get_tensor_matches_safetensors(corpus):
    from safetensors.numpy import load_file

    src = corpus / "minilm_fp32.safetensors"
    ref = load_file(str(src))
    blob = zipmodel.compress_bytes(src.read_bytes(), threads=2)
    import io

    with zipmodel.open(io.BytesIO(blob)) as f:
        assert sorted(f.keys()) == sorted(ref)
        for k in ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.bias"):
            assert f.get_tensor(k).tobytes() == ref[k].tobytes()
