"""docs/ci.md's shell steps run as written, and its workflow runs the same steps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ci.md"


def block(marker: str, lang: str = "bash") -> str:
    m = re.search(rf"<!-- {re.escape(marker)} -->\n```{lang}\n(.*?)```\n", DOC.read_text(), re.S)
    assert m, f"docs/ci.md has no ```{lang} block after <!-- {marker} -->"
    return m.group(1)


def run_step(marker: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CI"] = "true"
    return subprocess.run(
        ["bash", "-c", block(f"ci-step: {marker}")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_shell_steps_compress_verify_and_fail_on_mismatch(tmp_path):
    art = tmp_path / "artifacts"
    art.mkdir()
    rng = np.random.default_rng(0)
    for name in ("model", "ema"):
        save_file(
            {"w": (rng.standard_normal((128, 128)) * 0.02).astype(np.float32)},
            art / f"{name}.safetensors",
        )
    r = run_step("compress", tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "zipmodel-report.json").read_text())
    assert report["command"] == "compress" and len(report["results"]) == 2
    assert not report["errors"] and report["ok"] is True
    r = run_step("verify", tmp_path)
    assert r.returncode == 0, r.stderr

    # an original that no longer matches its container: exit 3 and an error annotation
    original = art / "model.safetensors"
    data = bytearray(original.read_bytes())
    data[-5] ^= 0x40
    original.write_bytes(bytes(data))
    r = run_step("verify", tmp_path)
    assert r.returncode == 3 and "::error::" in r.stderr, r.stderr

    # a later job with only the containers: checked against the recorded SHA-256
    original.unlink()
    (art / "ema.safetensors").unlink()
    assert run_step("verify", tmp_path).returncode == 0
    zm = art / "model.safetensors.zm"
    data = bytearray(zm.read_bytes())
    data[len(data) // 3] ^= 0x01
    zm.write_bytes(bytes(data))
    r = run_step("verify", tmp_path)
    assert r.returncode != 0 and "model.safetensors.zm" in r.stderr

    # nothing to compress is an error, not a silent success
    for p in art.iterdir():
        p.unlink()
    assert run_step("compress", tmp_path).returncode == 1


def test_workflow_runs_the_documented_steps():
    import yaml

    wf = yaml.safe_load(block("ci-workflow", "yaml"))
    steps = {s.get("name"): s for s in wf["jobs"]["build"]["steps"]}
    assert steps["Compress"]["run"] == block("ci-step: compress")
    assert steps["Verify"]["run"] == block("ci-step: verify")
    assert "zipmodel push" in steps["Push to the Hub"]["run"]


def test_every_json_command_documents_its_schema():
    """CI scripts parse --json: each command that has it is in docs/cli.md's JSON Schema (the
    envelope's ``command``, with the shape of its results) and described there."""
    from zipmodel.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text()
    schemas = text.split("## JSON output", 1)[1].split("## Commands", 1)[0]
    m = re.search(r"<!-- json-schema -->\n```json\n(.*?)```\n", schemas, re.S)
    assert m, "docs/cli.md's JSON output section has no JSON Schema block"
    schema = json.loads(m.group(1))
    documented = {b["properties"]["command"]["const"] for b in schema["oneOf"]}
    for name, cmd in sorted(cli.commands.items()):
        if any("--json" in p.opts for p in cmd.params):
            assert name in schema["properties"]["command"]["enum"] and name in documented, (
                f"add `zipmodel {name} --json` to the schema in scripts/gen_cli_docs.py"
            )
            assert f"`{name}`" in schemas, f"describe {name}'s results in docs/cli.md"
