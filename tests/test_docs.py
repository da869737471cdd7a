import importlib.util
from pathlib import Path

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
