import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import edgecases
from zipmodel.cli import cli

EDGE = edgecases.build()


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(EDGE["model_meta.safetensors"])
    return p


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def test_compress_decompress_roundtrip(model, tmp_path):
    r = run("compress", model)
    assert r.exit_code == 0, r.output
    assert "model.safetensors.zm" in r.stderr and "%" in r.stderr
    zm = tmp_path / "model.safetensors.zm"
    original = model.read_bytes()
    model.unlink()
    r = run("decompress", zm)
    assert r.exit_code == 0, r.output
    assert model.read_bytes() == original
    assert zm.exists(), "inputs are kept unless --rm"


def test_json_outputs(model):
    r = run("compress", model, "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["command"] == "compress" and doc["version"] == 2 and doc["errors"] == []
    assert doc["ok"] is True and doc["exit_code"] == 0
    f = doc["results"][0]
    assert f["kind"] == "file" and f["path"] == str(model)
    assert f["input_bytes"] == model.stat().st_size and 0 < f["ratio"] < 1
    assert {d["dtype"] for d in f["summary"]["dtypes"]} == {"BF16", "F32", "F16", "verbatim"}
    r = run("info", str(model) + ".zm", "--json")
    info = json.loads(r.stdout)
    assert info["command"] == "info" and info["ok"] is True
    t = {x["name"]: x for x in info["results"][0]["tensors"]}
    assert (
        t["embed.weight"]["shape"] == [300, 64] and t["embed.weight"]["transform"] == "split-bf16"
    )
    r = run("verify", str(model) + ".zm", "--json")
    v = json.loads(r.stdout)
    assert v["command"] == "verify" and v["ok"] is True and v["results"][0]["ok"] is True


def test_info_human(model):
    run("compress", model, "-q")
    r = run("info", str(model) + ".zm", "--tensors")
    assert r.exit_code == 0
    # the listing is the command's answer: stdout (as zstd -l), so it can be piped to grep
    assert "embed.weight" in r.stdout and "BF16" in r.stdout and "sha256" in r.stdout


def test_output_and_stdout(model, tmp_path):
    out = tmp_path / "x.zm"
    assert run("compress", model, "-o", out).exit_code == 0
    r = run("compress", model, "-c")
    assert r.exit_code == 0
    assert r.stdout_bytes == out.read_bytes()  # same input and options: same bytes
    r = run("decompress", out, "-c")
    assert r.stdout_bytes == model.read_bytes()


def test_stdin(model):
    r = run("compress", "-", input=model.read_bytes())
    assert r.exit_code == 0
    r2 = run("decompress", "-", input=r.stdout_bytes)
    assert r2.exit_code == 0 and r2.stdout_bytes == model.read_bytes()


def test_rm_deletes_only_after_verifying(model, tmp_path):
    r = run("compress", model, "--rm")
    assert r.exit_code == 0 and not model.exists()
    r = run("decompress", str(model) + ".zm", "--rm")
    assert r.exit_code == 0 and model.exists() and not (tmp_path / "model.safetensors.zm").exists()


def test_exit_codes(model, tmp_path):
    run("compress", model)
    assert run("compress", model).exit_code == 1  # output exists
    r = run("compress", model)
    assert "already exists" in r.stderr and "--force" in r.stderr
    assert run("compress", model, "-f").exit_code == 0
    assert run("compress", tmp_path / "missing").exit_code == 1
    assert run("compress", model, model, "-o", "x").exit_code == 2
    assert run("compress", "--level", "ultra", model).exit_code == 2
    assert run("compress", "--chunk-size", "12X", model).exit_code == 2
    assert run("frobnicate").exit_code == 2
    bad = tmp_path / "bad.zm"
    bad.write_bytes(b"not a container at all")
    r = run("decompress", bad)
    assert r.exit_code == 1 and "not a zipmodel container" in r.stderr
    # verify: a container that does not match --against exits 3
    other = tmp_path / "other.bin"
    other.write_bytes(bytes(model.stat().st_size))
    r = run("verify", str(model) + ".zm", "--against", other)
    assert r.exit_code == 3 and "differs" in r.stderr
    data = bytearray((tmp_path / "model.safetensors.zm").read_bytes())
    data[200] ^= 1
    (tmp_path / "damaged.zm").write_bytes(bytes(data))
    assert run("verify", tmp_path / "damaged.zm").exit_code == 3
    assert run("decompress", tmp_path / "damaged.zm", "-o", tmp_path / "d").exit_code == 1
    assert not (tmp_path / "d").exists()


def test_continues_past_a_bad_input(model, tmp_path):
    r = run("compress", tmp_path / "missing", model, "--json")
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert len(doc["results"]) == 1 and len(doc["errors"]) == 1
    assert doc["ok"] is False and doc["exit_code"] == 1
    assert doc["errors"][0]["path"] == str(tmp_path / "missing")


def test_dtype_hint(tmp_path):
    p = tmp_path / "w.bin"
    p.write_bytes(EDGE["random.bin"][:70000])
    assert run("compress", p, "--dtype", "bf16").exit_code == 0
    r = run("info", str(p) + ".zm", "--json")
    assert json.loads(r.stdout)["results"][0]["dtypes"][0]["dtype"] == "BF16"


def test_every_command_has_help():
    for name, cmd in cli.commands.items():
        r = run(name, "--help")
        assert r.exit_code == 0 and len(cmd.help or "") > 20, name
        for p in cmd.params:
            if (
                isinstance(p, type(cmd.params[0]))
                and getattr(p, "help", None) is None
                and p.param_type_name == "option"
            ):
                pytest.fail(f"{name} {p.name} has no help")


def test_demo():
    r = run("demo")
    assert r.exit_code == 0, r.output
    assert "byte-identical" in r.stderr


def test_real_subprocess(model, tmp_path):
    env_run = [sys.executable, "-m", "zipmodel"]
    r = subprocess.run([*env_run, "compress", str(model), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"][0]["output"].endswith(".zm")
    r = subprocess.run([*env_run, "verify", str(model) + ".zm"], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout
    r = subprocess.run(
        [*env_run, "decompress", str(tmp_path / "nope.zm")], capture_output=True, text=True
    )
    assert r.returncode == 1 and r.stderr.startswith("zipmodel: error:")
    r = subprocess.run([*env_run, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "zipmodel" in r.stdout


def test_pipes_through_real_processes(tmp_path):
    """``cat F | zipmodel compress -c - | zipmodel decompress -c -`` gives F back, byte for byte.

    Both ends are pipes (nothing can seek): each command spools its input to a temporary file
    in $TMPDIR, which is gone afterwards.
    """
    rng = np.random.default_rng(3)
    w = (rng.standard_normal(1_500_000) * 0.02).astype(np.float32)  # 6 MB: several spool blocks
    data = edgecases.safetensors_bytes([("w", "F32", [1500, 1000], w.tobytes())])
    src, out = tmp_path / "m.safetensors", tmp_path / "restored"
    src.write_bytes(data)
    spool = tmp_path / "spool"
    spool.mkdir()
    env = {**os.environ, "TMPDIR": str(spool)}
    cli = f"{shlex.quote(sys.executable)} -m zipmodel"
    q = shlex.quote
    line = f"set -o pipefail; cat {q(str(src))} | {cli} compress -c - -T 2 | {cli} decompress -c - > {q(str(out))}"
    r = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    assert list(spool.iterdir()) == []
    # from a pipe to a named output, and back
    argv = [sys.executable, "-m", "zipmodel"]
    zm = tmp_path / "m.zm"
    r = subprocess.run([*argv, "compress", "-", "-o", zm], input=data, capture_output=True, env=env)
    assert r.returncode == 0, r.stderr
    assert zm.stat().st_size < len(data)
    r = subprocess.run(
        [*argv, "decompress", "-", "-o", out, "-f", "--check"],
        input=zm.read_bytes(),
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == data
    # a damaged container through a pipe: exit code 1 and a message
    bad = bytearray(zm.read_bytes())
    bad[len(bad) // 2] ^= 1
    r = subprocess.run([*argv, "decompress", "-c", "-"], input=bytes(bad), capture_output=True)
    assert r.returncode == 1 and b"zipmodel: error:" in r.stderr
