"""The CLI's hardening (issue 16): what goes to stdout, signals, option ranges, stdin, zstd's
conventions and the one --json envelope, checked against the JSON Schema in docs/cli.md."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import edgecases
from zipmodel.cli import cli, main

ROOT = Path(__file__).resolve().parents[1]
EDGE = edgecases.build()
ZIPMODEL = [sys.executable, "-m", "zipmodel"]


def run(*args, input=None, env=None):
    return CliRunner().invoke(
        cli, [str(a) for a in args], input=input, env=env, catch_exceptions=False
    )


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(EDGE["model_meta.safetensors"])
    return p


@pytest.fixture
def zm(model):
    assert run("compress", model, "-q").exit_code == 0
    return Path(str(model) + ".zm")


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    rng = np.random.default_rng(1)
    save_file({"w": (rng.standard_normal((64, 64)) * 0.02).astype(np.float32)}, d / "m.safetensors")
    (d / "config.json").write_text('{"hidden_size": 64}')
    return d


# -- 1. stdout carries either the data or the JSON document, never both ------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["compress", "{model}", "-c", "--json"],
        ["decompress", "{zm}", "-c", "--json"],
        ["compress", "-", "--json"],  # standard input without -o writes standard output
        ["decompress", "-", "--json"],
        ["-dc", "{zm}", "--json"],
    ],
)
def test_json_with_data_on_stdout_is_a_usage_error(argv, model, zm):
    args = [a.format(model=model, zm=zm) for a in argv]
    r = run(*args, input=zm.read_bytes())
    assert r.exit_code == 2, r.output
    assert r.stdout_bytes == b"" and "--json" in r.stderr


def test_json_with_stdin_and_a_named_output(model, tmp_path):
    out = tmp_path / "named.zm"
    r = run("compress", "-", "-o", out, "--json", input=model.read_bytes())
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # nothing but the document on stdout
    assert doc["ok"] and doc["results"][0]["path"] == "-" and out.exists()


# -- 6. signals: 128 + N, a message, and nothing left behind ------------------------------------
def _big_model(path: Path) -> Path:
    """32 MB of random float32: with 4 KiB chunks on one thread, seconds of compressing."""
    w = np.random.default_rng(7).standard_normal(8_000_000).astype(np.float32)
    save_file({"w": w}, path)
    return path


def _wait_for(predicate, proc, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"zipmodel exited ({proc.returncode}) before {what}")
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_while_writing_leaves_no_output(sig, tmp_path):
    src = _big_model(tmp_path / "big.safetensors")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "big.safetensors.zm"
    proc = subprocess.Popen(
        [*ZIPMODEL, "compress", str(src), "-o", str(dest), "-T", "1", "--chunk-size", "4K"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the temporary output (".big.safetensors.zm.<something>") holding some bytes: the
        # process is writing (a signal just as the file is created is another case: the
        # moment between mkstemp and atomic_output's cleanup handler, see the report)
        def writing() -> bool:
            for p in out_dir.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if p.name.startswith(f".{dest.name}.") and p.stat().st_size > 0:
                        return True
            return False

        _wait_for(writing, proc, "a temporary output with bytes in it")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, err
    assert "no partial output was left" in err and "Traceback" not in err
    assert list(out_dir.iterdir()) == [], "neither a temporary nor an output file remains"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_spooling_stdin_removes_the_spool(sig, tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    dest = tmp_path / "out.zm"
    proc = subprocess.Popen(
        [*ZIPMODEL, "compress", "-", "-o", str(dest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(spool)},
    )
    try:
        proc.stdin.write(b"\0" * (1 << 20))  # and the pipe stays open: zipmodel keeps reading
        proc.stdin.flush()
        _wait_for(lambda: any(spool.iterdir()), proc, "a spool file")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = err.decode()
    assert proc.returncode == 128 + sig, err
    assert "no partial output was left" in err
    assert list(spool.iterdir()) == [] and not dest.exists()


def test_ctrl_c_is_130_not_aborted(model, tmp_path, monkeypatch, capsys):
    """click turns KeyboardInterrupt into Abort ("Aborted!", exit 1): main() maps it to 130."""
    from zipmodel import api

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "compress_file", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["compress", str(model), "-o", str(tmp_path / "x.zm")])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "zipmodel: interrupted; no partial output was left" in err and "Aborted" not in err


def test_main_keeps_clicks_usage_errors_and_exit_codes(model, capsys):
    for argv, code, text in [
        (["compress", "--level", "ultra", str(model)], 2, "Invalid value for '--level'"),
        (["frobnicate"], 2, "No such command"),
        (["--version"], 0, "zipmodel"),
        (["info", str(model) + ".missing"], 1, "zipmodel: error:"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        out = capsys.readouterr()
        assert e.value.code == code, argv
        assert text in out.err + out.out, argv


# -- 7. every option value outside its range is a usage error naming the option and range -------
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--chunk-size", "1K"], ["--chunk-size", "4K..64M"]),
        (["--chunk-size", "65M"], ["--chunk-size", "4K..64M"]),
        (["--chunk-size", "0"], ["--chunk-size"]),
        (["-T", "-1"], ["-T", "0<=x<=1024"]),
        (["-T", "100000"], ["-T", "0<=x<=1024"]),
        (["--min-size", "-5"], ["--min-size"]),
        (["--lossy", "int4", "--group-size", "16"], ["--group-size", "32<=x<=128"]),
        (["--mantissa-bits", "23"], ["--mantissa-bits", "0<=x<=22"]),
        (["--lossy", "bf16", "--mantissa-bits", "10"], ["mantissa bits", "7"]),
        (["--level", "9"], ["--level"]),
    ],
)
def test_option_values_out_of_range_are_usage_errors(args, names, model, tmp_path):
    r = run("compress", model, "-o", tmp_path / "x.zm", *args)
    assert r.exit_code == 2, r.output
    assert "bug" not in r.stderr
    for n in names:
        assert n in r.stderr, (n, r.stderr)
    assert not (tmp_path / "x.zm").exists()


def test_chunk_size_limits_are_the_pipelines(model, tmp_path):
    from zipmodel.cli._options import CHUNK_SIZE_RANGE
    from zipmodel.container.format import MAX_CHUNK_RAW
    from zipmodel.pipeline import MIN_CHUNK_SIZE

    assert CHUNK_SIZE_RANGE == (MIN_CHUNK_SIZE, MAX_CHUNK_RAW)
    for size in ("4K", "64M"):  # both ends are valid
        r = run("compress", model, "-o", tmp_path / f"{size}.zm", "--chunk-size", size, "-q")
        assert r.exit_code == 0, r.output


def test_other_commands_check_ranges_too(zm, tmp_path):
    assert run("decompress", zm, "-o", tmp_path / "o", "-T", "-2").exit_code == 2
    assert run("verify", zm, "-T", "5000").exit_code == 2
    r = run("eval", tmp_path, zm, "--batch-size", "0")
    assert r.exit_code == 2 and "--batch-size" in r.stderr


# -- 8. listings on stdout, stdin everywhere, *.zm skipped, -o DIR ---------------------------------
def test_info_and_verify_listings_go_to_stdout(zm):
    r = run("info", zm)
    assert r.exit_code == 0 and "BF16" in r.stdout and "BF16" not in r.stderr
    r = run("verify", zm)
    assert r.exit_code == 0 and "OK" in r.stdout and r.stderr == ""


def test_info_and_verify_read_stdin(zm):
    r = run("info", "-", input=zm.read_bytes())
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("<stdin>: ") and "BF16" in r.stdout
    doc = json.loads(run("info", "-", "--json", input=zm.read_bytes()).stdout)
    assert doc["results"][0]["path"] == "-"
    r = run("verify", "-", input=zm.read_bytes())
    assert r.exit_code == 0 and r.stdout.startswith("<stdin>: OK")


@pytest.mark.parametrize("command", ["info", "verify", "decompress"])
def test_stdin_errors_name_stdin_not_the_spool_file(command):
    r = run(command, "-", *(["-o", "/dev/null", "-f"] if command == "decompress" else []),
            input=b"not a container at all")  # fmt: skip
    assert r.exit_code == 1
    assert "zipmodel: error: <stdin>: not a zipmodel container" in r.stderr
    assert "zipmodel-stdin" not in r.stderr and ".tmp" not in r.stderr


def test_no_path_reads_a_piped_stdin(model, zm):
    dash = run("compress", "-", input=model.read_bytes()).stdout_bytes
    r = run("compress", input=model.read_bytes())
    assert r.exit_code == 0 and r.stdout_bytes == dash  # as "compress -"
    r = run("decompress", input=zm.read_bytes())
    assert r.exit_code == 0 and r.stdout_bytes == model.read_bytes()


def test_compress_skips_inputs_that_already_end_in_zm(model, zm, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(model.read_bytes())
    r = run("compress", zm, other, "--json")
    assert r.exit_code == 0, r.output
    assert f"{zm}: already has .zm suffix -- ignored" in r.stderr
    assert not Path(str(zm) + ".zm").exists() and Path(str(other) + ".zm").exists()
    doc = json.loads(r.stdout)
    assert doc["ok"] and [w["path"] for w in doc["warnings"]] == [str(zm)]
    assert [x["path"] for x in doc["results"]] == [str(other)]
    r = run("compress", zm, "-q")
    assert r.exit_code == 0 and r.stderr == ""  # -q silences the warning too
    assert run("compress", zm, "-f", "-q").exit_code == 0  # -f: compress it anyway (as gzip)
    assert Path(str(zm) + ".zm").exists()


def test_output_into_an_existing_directory(model, zm, tmp_path):
    d = tmp_path / "dir"
    d.mkdir()
    r = run("compress", model, "-o", d, "-q")
    assert r.exit_code == 0, r.output
    assert (d / "model.safetensors.zm").read_bytes() == zm.read_bytes()
    back = tmp_path / "back"
    back.mkdir()
    r = run("decompress", d / "model.safetensors.zm", "-o", back, "-q")
    assert r.exit_code == 0 and (back / "model.safetensors").read_bytes() == model.read_bytes()
    r = run("compress", model, "-o", d)  # now the file inside exists
    assert r.exit_code == 1 and "already exists" in r.stderr
    r = run("compress", "-", "-o", d, input=model.read_bytes())
    assert r.exit_code == 2 and "is a directory" in r.stderr


# -- zstd's conventions ---------------------------------------------------------------------------
def test_zstd_operation_flags(model, zm, tmp_path):
    original = model.read_bytes()
    model.unlink()
    r = run("-d", zm, "-q")
    assert r.exit_code == 0 and model.read_bytes() == original
    r = run("-dc", zm)
    assert r.exit_code == 0 and r.stdout_bytes == original
    r = run("-q", "-d", "-c", zm)
    assert r.exit_code == 0 and r.stdout_bytes == original
    r = run("-t", zm)
    assert r.exit_code == 0 and "OK" in r.stdout
    r = run("-l", zm)
    assert r.exit_code == 0 and "BF16" in r.stdout
    r = run("-z", model, "-o", tmp_path / "z.zm", "-q")
    assert r.exit_code == 0 and (tmp_path / "z.zm").read_bytes() == zm.read_bytes()
    assert run("-dt", zm).exit_code == 2  # one operation at a time
    assert run("-x", zm).exit_code == 2


def test_k_v_and_level_without_l(model, tmp_path):
    r = run("compress", model, "-k", "-o", tmp_path / "k.zm", "-q")
    assert r.exit_code == 0 and model.exists()
    assert run("compress", model, "-k", "--rm").exit_code == 2
    r = run("compress", model, "-v", "-o", tmp_path / "v.zm")
    assert r.exit_code == 0 and "codecs (by stream bytes)" in r.stderr  # off a terminal too
    r = run("compress", model, "-o", tmp_path / "n.zm")
    assert r.exit_code == 0 and "codecs (by stream bytes)" not in r.stderr
    assert run("compress", model, "-l", "fast", "-o", tmp_path / "l.zm").exit_code == 2
    assert run("compress", model, "--level", "fast", "-o", tmp_path / "l.zm").exit_code == 0


# -- 10. one envelope, valid against the schema in docs/cli.md ------------------------------------
def doc_schema() -> dict:
    text = (ROOT / "docs" / "cli.md").read_text()
    m = re.search(r"<!-- json-schema -->\n```json\n(.*?)```\n", text, re.S)
    assert m, "docs/cli.md has no ```json block after <!-- json-schema -->"
    return json.loads(m.group(1))


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_ANNOTATIONS = {"$schema", "title", "description", "$defs"}


def schema_errors(value, schema: dict, root: dict, where: str = "$") -> list[str]:
    """The subset of JSON Schema docs/cli.md uses; an unknown keyword is an error, so the
    schema cannot say more than this checks."""
    errs: list[str] = []
    for key, s in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key == "$ref":
            assert s.startswith("#/$defs/"), s
            errs += schema_errors(value, root["$defs"][s[len("#/$defs/") :]], root, where)
        elif key == "type":
            types = [s] if isinstance(s, str) else s
            if not any(_TYPES[t](value) for t in types):
                errs.append(f"{where}: {value!r:.60} is not {s}")
        elif key == "const":
            if value != s or type(value) is not type(s):
                errs.append(f"{where}: {value!r:.60} is not {s!r}")
        elif key == "enum":
            if value not in s:
                errs.append(f"{where}: {value!r:.60} is not one of {s}")
        elif key == "minimum":
            if _TYPES["number"](value) and value < s:
                errs.append(f"{where}: {value} < {s}")
        elif key == "required":
            if isinstance(value, dict):
                errs += [f"{where}: no {k!r}" for k in s if k not in value]
        elif key == "properties":
            if isinstance(value, dict):
                for k, sub in s.items():
                    if k in value:
                        errs += schema_errors(value[k], sub, root, f"{where}.{k}")
        elif key == "items":
            if isinstance(value, list):
                for i, v in enumerate(value):
                    errs += schema_errors(v, s, root, f"{where}[{i}]")
        elif key == "allOf":
            for sub in s:
                errs += schema_errors(value, sub, root, where)
        elif key == "oneOf":
            ok = [sub for sub in s if not schema_errors(value, sub, root, where)]
            if len(ok) != 1:
                why = [schema_errors(value, sub, root, where) for sub in s]
                errs.append(f"{where}: matches {len(ok)} of oneOf, not 1: {why}")
        else:
            raise AssertionError(f"the test's validator does not know {key!r}")
    return errs


def check_envelope(r, command: str, *, code: int = 0) -> dict:
    doc = json.loads(r.stdout)
    errs = schema_errors(doc, SCHEMA, SCHEMA)
    assert not errs, "\n".join(errs)
    assert doc["command"] == command and doc["exit_code"] == code == r.exit_code
    assert doc["ok"] is (not doc["errors"])
    return doc


SCHEMA = doc_schema()


def test_the_validator_is_not_vacuous(zm):
    doc = json.loads(run("info", zm, "--json").stdout)
    assert not schema_errors(doc, SCHEMA, SCHEMA)
    for broken in (
        {k: v for k, v in doc.items() if k != "ok"},
        {**doc, "version": 1},
        {**doc, "command": "verify"},  # info results are not verify results
        {**doc, "results": [{**doc["results"][0], "kind": "folder"}]},
        {**doc, "errors": [{"path": "x", "message": "m"}]},
    ):
        assert schema_errors(broken, SCHEMA, SCHEMA)


def test_every_command_prints_the_documented_envelope(model, zm, folder, tmp_path):
    # compress: a file, a folder, a failure and a skipped input in one document
    r = run("compress", folder, tmp_path / "missing", zm, "--json")
    doc = check_envelope(r, "compress", code=1)
    assert [x["kind"] for x in doc["results"]] == ["folder"]
    assert doc["errors"][0]["path"] == str(tmp_path / "missing") and not doc["ok"]
    assert doc["warnings"][0]["path"] == str(zm)
    r = run("compress", model, "-o", tmp_path / "a.zm", "--json")
    assert check_envelope(r, "compress")["results"][0]["kind"] == "file"

    folder_zm = Path(str(folder) + ".zm")
    r = run("decompress", zm, "-o", tmp_path / "restored", "--json")
    check_envelope(r, "decompress")
    r = run("decompress", folder_zm, "-o", tmp_path / "restored_dir", "--json")
    assert check_envelope(r, "decompress")["results"][0]["kind"] == "folder"

    r = run("info", zm, folder_zm, "--json")
    assert [x["kind"] for x in check_envelope(r, "info")["results"]] == ["file", "folder"]
    r = run("info", tmp_path / "nope.zm", "--json")
    assert check_envelope(r, "info", code=1)["errors"][0]["exit_code"] == 1

    bad = tmp_path / "bad.zm"
    data = bytearray(zm.read_bytes())
    data[200] ^= 1
    bad.write_bytes(bytes(data))
    r = run("verify", zm, folder_zm, bad, "--json")
    doc = check_envelope(r, "verify", code=3)
    assert [x["kind"] for x in doc["results"]] == ["file", "folder"]
    assert doc["errors"][0]["path"] == str(bad) and doc["errors"][0]["exit_code"] == 3

    (tmp_path / "empty").mkdir()
    r = run("eval", tmp_path / "empty", tmp_path, "--json")  # fails before needing torch
    assert check_envelope(r, "eval", code=1)["errors"][0]["path"] == str(tmp_path)


def test_push_and_pull_print_the_documented_envelope(folder, tmp_path):
    pytest.importorskip("huggingface_hub")
    from hubserver import HubServer

    with HubServer() as server:
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_TOKEN": "hf_write",
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
            "ZIPMODEL_HUB_CACHE": str(tmp_path / "restored"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        env.pop("HF_HUB_OFFLINE", None)
        for argv, command, code in [
            (["push", "alice/tiny", str(folder)], "push", 0),
            (["pull", "alice/tiny"], "pull", 0),
            (["pull", "alice/nope"], "pull", 1),
        ]:
            p = subprocess.run(
                [*ZIPMODEL, *argv, "--json"], env=env, capture_output=True, text=True, timeout=300
            )
            p.exit_code = p.returncode  # (what check_envelope reads)
            doc = check_envelope(p, command, code=code)
            assert len(doc["results"]) + len(doc["errors"]) == 1
