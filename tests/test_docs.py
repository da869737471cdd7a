import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cli_docs_are_current():
    spec = importlib.util.spec_from_file_location(
        "gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "cli.md").read_text() == mod.render(), (
        "run: python scripts/gen_cli_docs.py"
    )


def test_every_command_is_documented():
    from zipmodel.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text()
    for name in cli.commands:
        assert f"### `zipmodel {name}`" in text


def python_blocks(markdown: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.M | re.S)


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```bash\nno\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = x\n"]


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    """Every Python snippet of the README runs as written, in order, in one namespace, in a
    folder holding the files it names (``model.safetensors`` with the tensor it reads, a
    compressed folder ``my-model.zm``) and with ``model`` a torch module those weights fit."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    import zipmodel

    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2
    g = torch.Generator().manual_seed(0)
    weights = {"embeddings.word_embeddings.weight": torch.randn(64, 16, generator=g)}
    save_file(weights, tmp_path / "model.safetensors")
    (tmp_path / "my-model").mkdir()
    save_file(weights, tmp_path / "my-model" / "model.safetensors")
    (tmp_path / "my-model" / "config.json").write_text("{}")
    zipmodel.compress_dir(tmp_path / "my-model", tmp_path / "my-model.zm", threads=1)

    model = torch.nn.Module()
    model.embeddings = torch.nn.Module()
    model.embeddings.word_embeddings = torch.nn.Embedding(64, 16)
    monkeypatch.chdir(tmp_path)
    ns = {"model": model}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
    assert (tmp_path / "restored.safetensors").read_bytes() == (
        tmp_path / "model.safetensors"
    ).read_bytes()
    got = model.embeddings.word_embeddings.weight.detach()
    assert torch.equal(got, weights["embeddings.word_embeddings.weight"])  # load_state_dict ran
