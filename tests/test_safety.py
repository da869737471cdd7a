"""Hardening (issue 16): what a user's files keep, what an interrupted run leaves, what ``--rm``
waits for, and what ``load(device=...)`` hands back."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgecases
import zipmodel
from corpusdir import CorpusDir
from zipmodel._io import TEMP_TAG, atomic_output, remove_stale_temporaries
from zipmodel.errors import FormatError, MissingDependencyError
from zipmodel.folder import MANIFEST

MTIME = 1_500_000_000_123_456_789  # 2017, with nanoseconds: no rounding may creep in
OTHER_MTIME = 1_400_000_000_000_000_000


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _model() -> bytes:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(4096) * 0.02).astype(np.float32)
    return edgecases.safetensors_bytes([("w", "F32", [64, 64], w.tobytes())])


def _file(path: Path, data: bytes, mode: int, mtime: int = MTIME) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime, mtime))
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _temps(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if TEMP_TAG in n or n.endswith(".tmp"))


# -- 2. permissions and times are kept, as zstd keeps them -----------------------------------
def test_a_private_file_stays_private_on_both_sides(tmp_path, umask022):
    src = _file(tmp_path / "m.safetensors", _model(), 0o600)
    zipmodel.compress_file(src, threads=1)
    zm = tmp_path / "m.safetensors.zm"
    assert _mode(zm) == 0o600 and zm.stat().st_mtime_ns == MTIME
    out = tmp_path / "restored.safetensors"
    zipmodel.decompress_file(zm, out, threads=1)
    assert out.read_bytes() == src.read_bytes()
    assert _mode(out) == 0o600 and out.stat().st_mtime_ns == MTIME


def test_only_permission_bits_are_kept(tmp_path, umask022):
    """setuid/setgid/sticky never travel (nor does a umask widen what the source had)."""
    src = _file(tmp_path / "tool.bin", b"x" * 5000, 0o4751)
    zipmodel.compress_file(src, threads=1)
    assert _mode(tmp_path / "tool.bin.zm") == 0o751
    zipmodel.decompress_file(tmp_path / "tool.bin.zm", tmp_path / "back.bin", threads=1)
    assert _mode(tmp_path / "back.bin") == 0o751


def test_the_container_records_no_mode_or_time(tmp_path):
    """The format decision: a container's bytes depend on the source's bytes and options
    alone, so the same file with another mode and time gives the same container."""
    data = _model()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _file(tmp_path / "a" / "m.safetensors", data, 0o600, MTIME)
    b = _file(tmp_path / "b" / "m.safetensors", data, 0o644, OTHER_MTIME)
    zipmodel.compress_file(a, threads=1)
    zipmodel.compress_file(b, threads=1)
    za, zb = (Path(str(p) + ".zm").read_bytes() for p in (a, b))
    assert za == zb == zipmodel.compress_bytes(data, name="m.safetensors", threads=1)
    with zipmodel.open(Path(str(a) + ".zm")) as f:
        assert set(f.source) == {"name", "size", "sha256", "format"}


def test_an_old_container_gives_its_own_mode_and_time(tmp_path, umask022):
    """No mode recorded anywhere (every container): the restored file gets the .zm file's."""
    golden = Path(__file__).parent / "golden"
    zm = _file(tmp_path / "noise.bin.zm", (golden / "noise.bin.default.zm").read_bytes(), 0o640)
    zipmodel.decompress_file(zm, threads=1)
    out = tmp_path / "noise.bin"
    assert out.read_bytes() == (golden / "noise.bin").read_bytes()
    assert _mode(out) == 0o640 and out.stat().st_mtime_ns == MTIME


def test_streams_and_meta_false_get_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        src = _file(tmp_path / "m.bin", b"y" * 5000, 0o600)
        zipmodel.compress_file(src, tmp_path / "plain.zm", threads=1, meta=False)
        assert _mode(tmp_path / "plain.zm") == 0o640  # 0o666 less the umask
        assert (tmp_path / "plain.zm").stat().st_mtime_ns != MTIME
        with open(tmp_path / "plain.zm", "rb") as f:  # a stream has no mode to give
            zipmodel.decompress_file(f, tmp_path / "from-stream.bin", threads=1)
        assert _mode(tmp_path / "from-stream.bin") == 0o640
    finally:
        os.umask(old)


def _folder(tmp_path: Path) -> Path:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    _file(src / "model.safetensors", _model(), 0o600)  # stored as a .zm
    _file(src / "config.json", b"{}", 0o640, OTHER_MTIME)  # stored as a copy
    _file(src / "sub" / "tokenizer.json", b'{"a": 1}', 0o644)
    return src


def _modes(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (_mode(p), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def test_a_folder_keeps_each_files_mode_and_time(tmp_path, umask022):
    src = _folder(tmp_path)
    want = _modes(src)
    res = zipmodel.compress_dir(src, threads=1)
    stored = _modes(Path(res.output))
    assert stored == {
        "model.safetensors.zm": want["model.safetensors"],
        "config.json": want["config.json"],
        "sub/tokenizer.json": want["sub/tokenizer.json"],
    }
    doc = json.loads((Path(res.output) / MANIFEST).read_text())
    assert {f["path"]: (f["mode"], f["mtime_ns"]) for f in doc["files"]} == want
    zipmodel.decompress_dir(res.output, tmp_path / "restored", threads=1)
    assert _modes(tmp_path / "restored") == want


def test_a_manifest_mode_cannot_widen_past_the_umask(tmp_path, umask022):
    """A folder from anyone (a Hub repository) must not make restored files world-writable;
    the recorded time is given back as it is."""
    res = zipmodel.compress_dir(_folder(tmp_path), threads=1)
    mpath = Path(res.output) / MANIFEST
    doc = json.loads(mpath.read_text())
    for f in doc["files"]:
        f["mode"] = 0o777
    mpath.write_text(json.dumps(doc))
    zipmodel.decompress_dir(res.output, tmp_path / "restored", threads=1)
    got = _modes(tmp_path / "restored")
    assert {m for m, _ in got.values()} == {0o755}
    assert got["config.json"][1] == OTHER_MTIME


def test_an_old_manifest_falls_back_to_the_stored_files(tmp_path, umask022):
    res = zipmodel.compress_dir(_folder(tmp_path), threads=1)
    mpath = Path(res.output) / MANIFEST
    doc = json.loads(mpath.read_text())
    for f in doc["files"]:
        del f["mode"], f["mtime_ns"]
    mpath.write_text(json.dumps(doc))
    os.chmod(Path(res.output) / "config.json", 0o604)
    zipmodel.decompress_dir(res.output, tmp_path / "restored", threads=1)
    got = _modes(tmp_path / "restored")
    assert got["config.json"] == (0o604, OTHER_MTIME)
    assert got["model.safetensors"] == (0o600, MTIME)  # the .zm's own


@pytest.mark.parametrize(
    "bad", [{"mode": 0o1777}, {"mode": -1}, {"mode": "0644"}, {"mode": True}, {"mtime_ns": 1.5}]
)
def test_malformed_modes_and_times_are_format_errors(tmp_path, bad):
    res = zipmodel.compress_dir(_folder(tmp_path), threads=1)
    mpath = Path(res.output) / MANIFEST
    doc = json.loads(mpath.read_text())
    doc["files"][0].update(bad)
    mpath.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="mode|mtime_ns"):
        zipmodel.decompress_dir(res.output, tmp_path / "restored", threads=1)
    assert not (tmp_path / "restored").exists()


# -- 3. --rm deletes an input only once its output is on the disk -----------------------------
@pytest.fixture
def syscalls(monkeypatch):
    """Records fsync (of a file or a folder), replace and unlink, in order."""
    calls: list[tuple[str, str]] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

    def fsync(fd):
        kind = "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file"
        calls.append((kind, os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b, **kw):
        calls.append(("replace", os.fspath(b)))
        return real_replace(a, b, **kw)

    def unlink(p, **kw):
        calls.append(("unlink", os.fspath(p)))
        return real_unlink(p, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    return calls


pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")


def _cli(*args):
    from zipmodel.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytestmark_linux
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_rm_deletes_the_input_after_the_output_is_synced(tmp_path, syscalls, command):
    src = tmp_path / "m.safetensors"
    src.write_bytes(_model())
    if command == "decompress":
        zipmodel.compress_file(src, threads=1)
        src.unlink()
        src = tmp_path / "m.safetensors.zm"
    out = src.with_name("m.safetensors.zm" if command == "compress" else "m.safetensors")
    syscalls.clear()
    r = _cli(command, src, "--rm", "-T", "1")
    assert r.exit_code == 0, r.output
    assert not src.exists() and out.exists()
    steps = [
        c
        for c in syscalls
        if c[1] in (str(out), str(tmp_path), str(src)) or c[0] == "fsync-file"
    ]
    order = [c[0] for c in steps]
    assert order == ["fsync-file", "replace", "fsync-dir", "unlink"], steps
    assert steps[1][1] == str(out) and steps[2][1] == str(tmp_path) and steps[3][1] == str(src)
    assert TEMP_TAG in steps[0][1]  # the temporary was synced, before it took the name


@pytestmark_linux
def test_rm_of_a_folder_deletes_after_the_whole_tree_is_synced(tmp_path, syscalls):
    src = _folder(tmp_path)
    syscalls.clear()
    r = _cli("compress", src, "--rm", "-T", "1")
    assert r.exit_code == 0, r.output
    assert not src.exists()
    out = tmp_path / "model.zm"
    renamed = next(i for i, c in enumerate(syscalls) if c == ("replace", str(out)))
    before, after = syscalls[:renamed], syscalls[renamed + 1 :]
    synced = {Path(p).name for k, p in before if k == "fsync-file"}
    assert {"config.json", "tokenizer.json", MANIFEST} <= synced  # the copies, the manifest
    zm = next(i for i, (k, p) in enumerate(before) if k == "replace" and p.endswith(".zm"))
    assert before[zm - 1][0] == "fsync-file" and TEMP_TAG in before[zm - 1][1]  # the .zm
    dirs = [Path(p).name for k, p in before if k == "fsync-dir"]
    assert dirs[-1].startswith(".model.zm.") and "sub" in dirs  # the tree, its root last
    first_unlink = next(i for i, c in enumerate(after) if c[0] == "unlink")
    assert ("fsync-dir", str(tmp_path)) in after[:first_unlink]
    assert {Path(p).name for k, p in after if k == "unlink"} >= {"config.json", "tokenizer.json"}


# -- 6. an interrupted run leaves no temporary; a killed one's is removed next time ------------
class Hangup(BaseException):
    """Stands for the CLI's signal exception (SIGTERM/SIGHUP), not an ``Exception``."""


@pytest.mark.parametrize("exc", [KeyboardInterrupt, Hangup, SystemExit, ValueError])
def test_atomic_output_removes_its_temporary_on_any_exception(tmp_path, exc):
    dest = tmp_path / "out.zm"
    with pytest.raises(exc):
        with atomic_output(dest) as (fd, tmp):
            os.write(fd, b"x" * 100_000)
            assert tmp.exists()
            raise exc()
    assert os.listdir(tmp_path) == []


def test_compress_interrupted_midway_leaves_nothing(tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(np.random.default_rng(1).integers(0, 4, 1 << 20, np.uint8).tobytes())
    seen: list[list[str]] = []

    def progress(done, total):
        seen.append(_temps(tmp_path))
        if done >= total // 2:
            raise Hangup()

    with pytest.raises(Hangup):
        zipmodel.compress_file(src, threads=1, chunk_size=64 << 10, progress=progress)
    assert os.listdir(tmp_path) == ["big.bin"]
    name = seen[0][0]  # the temporary's name says whose it is and which process wrote it
    assert name.startswith(f".big.bin.zm{TEMP_TAG}{os.getpid()}-") and len(name) == len(
        f".big.bin.zm{TEMP_TAG}{os.getpid()}-"
    ) + 8


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # exited and reaped: no such process any more
    return p.pid


@pytest.mark.skipif(os.name != "posix", reason="process liveness by kill(pid, 0)")
def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f".m.bin.zm{TEMP_TAG}{dead}-abcdefgh",
            "live": f".m.bin.zm{TEMP_TAG}{live.pid}-abcdefgh",
            "mine": f".m.bin.zm{TEMP_TAG}{os.getpid()}-abcdefgh",  # a thread of ours writes it
            "other output": f".n.bin.zm{TEMP_TAG}{dead}-abcdefgh",
            "old naming": ".m.bin.zm.abcdefgh.tmp",
            "longer name": f".m.bin.zm{TEMP_TAG}{dead}-abcdefgh.keep",
            "prefix of a name": f".m.bin.zm{TEMP_TAG}{dead}-abcdefg",
            "pid 0": f".m.bin.zm{TEMP_TAG}0-abcdefgh",
        }
        for n in names.values():
            (tmp_path / n).write_bytes(b"partial")
        link = tmp_path / f".m.bin.zm{TEMP_TAG}{dead}-linklink"
        link.symlink_to(tmp_path / names["live"])
        src = tmp_path / "m.bin"
        src.write_bytes(b"z" * 10_000)
        zipmodel.compress_file(src, threads=1)
        left = set(os.listdir(tmp_path))
        assert names["dead"] not in left
        assert left == (set(names.values()) - {names["dead"]}) | {
            link.name,
            "m.bin",
            "m.bin.zm",
        }
        assert remove_stale_temporaries(tmp_path / "m.bin.zm") == []  # nothing more to take
    finally:
        live.kill()
        live.wait()


# -- 11. asking for a device means torch -----------------------------------------------------
@pytest.fixture(scope="module")
def zm(tmp_path_factory):
    d = tmp_path_factory.mktemp("dev")
    src = d / "m.safetensors"
    src.write_bytes(_model())
    zipmodel.compress_file(src, threads=1)
    return Path(str(src) + ".zm")


def test_no_device_gives_numpy(zm):
    sd = zipmodel.load(zm)
    assert isinstance(sd["w"], np.ndarray) and sd["w"].shape == (64, 64)


def test_a_device_gives_torch_tensors_on_it(zm):
    torch = pytest.importorskip("torch")
    for sd in (zipmodel.load(zm, "cpu"), zipmodel.load(zm, device=torch.device("cpu"))):
        assert isinstance(sd["w"], torch.Tensor) and sd["w"].device.type == "cpu"
        assert np.array_equal(sd["w"].numpy(), zipmodel.load(zm)["w"])
    assert isinstance(zipmodel.load(zm, "cpu", framework="numpy")["w"], np.ndarray)  # asked


def test_a_device_without_torch_says_what_to_install(zm, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    for kw in ({"device": "cpu"}, {"device": "cuda"}):
        with pytest.raises(MissingDependencyError, match="PyTorch") as e:
            zipmodel.load(zm, **kw)
        assert "pip install 'zipmodel[torch]'" in e.value.hint
    assert isinstance(zipmodel.load(zm)["w"], np.ndarray)  # numpy needs no torch


# -- 12. the corpus fixture skips per file ---------------------------------------------------
def test_corpus_skips_each_missing_file_on_its_own(tmp_path):
    (tmp_path / "minilm_fp32.safetensors").write_bytes(b"x")
    corpus = CorpusDir(tmp_path)
    assert corpus / "minilm_fp32.safetensors" == tmp_path / "minilm_fp32.safetensors"
    with pytest.raises(pytest.skip.Exception, match="smollm2-135m-q4_1.gguf"):
        corpus / "smollm2-135m-q4_1.gguf"
    assert os.fspath(corpus) == str(tmp_path)


# -- 12. tests bound work, not seconds: the counter they use --------------------------------
def test_work_budget_counts_zipmodel_calls_and_allocations():
    from workbudget import WorkBudget, WorkLimitExceeded

    from zipmodel.dtypes import get_dtype

    with pytest.raises(WorkLimitExceeded):  # a loop in zipmodel code is stopped, not waited on
        with WorkBudget(calls=100):
            for _ in range(200):
                get_dtype("F32")
    with WorkBudget(calls=100) as w:
        sorted(range(1000), key=lambda x: -x)  # not zipmodel's code: not counted
    assert w.calls == 0
    with pytest.raises(AssertionError, match="allocated"):
        with WorkBudget(calls=100, peak_bytes=1 << 20):
            block = bytearray(8 << 20)
            del block
