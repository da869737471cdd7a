"""zipmodel batch on a real Dask LocalCluster (worker processes): outputs equal compress's,
resume, duplicates, failures, a worker killed mid-task, Ctrl-C.

Small synthetic files only, and assertions on bytes and records, never on seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

pytest.importorskip("distributed")

import zipmodel
from zipmodel import api
from zipmodel.batching import RECORD, batch, load_records
from zipmodel.cli import cli

# distributed's own teardown may warn about closed comms; the suite turns warnings into errors
pytestmark = pytest.mark.filterwarnings("ignore:.*:ResourceWarning", "ignore::DeprecationWarning")


def weights(path: Path, seed: int, rows: int = 96) -> Path:
    rng = np.random.default_rng(seed)
    save_file(
        {
            "w": (rng.standard_normal((rows, 64)) * 0.02).astype(np.float32),
            "norm": np.ones(64, np.float32),
        },
        path,
    )
    return path


@pytest.fixture
def sources(tmp_path) -> list[Path]:
    src = tmp_path / "src"
    src.mkdir()
    files = [weights(src / f"m{i}.safetensors", i, rows=64 + 32 * i) for i in range(3)]
    model = src / "tiny-model"
    model.mkdir()
    weights(model / "model.safetensors", 7)
    (model / "config.json").write_text('{"hidden_size": 64}')
    return [*files, model]


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of two worker processes for the tests that do not start their own."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            memory_limit=0,
        ) as c,
        Client(c) as client,
    ):
        yield client


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / RECORD).read_text().splitlines()]


def reference(src: Path, tmp: Path, **kw) -> Path:
    """What ``zipmodel compress`` writes for ``src``."""
    ref = tmp / "ref" / (src.name + ".zm")
    ref.parent.mkdir(exist_ok=True)
    if src.is_dir():
        zipmodel.compress_dir(src, ref, threads=1, **kw)
    else:
        api.compress_file(src, ref, threads=1, **kw)
    return ref


def same_tree(a: Path, b: Path) -> bool:
    if a.is_file():
        return a.read_bytes() == b.read_bytes()
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all((a / r).read_bytes() == (b / r).read_bytes() for r in fa)


def no_temporaries(out: Path) -> bool:
    return not [p for p in out.rglob(".*") if "zmtmp" in p.name or p.name.endswith(".tmp")]


def test_outputs_are_compress_outputs_and_restore(sources, tmp_path, cluster):
    out = tmp_path / "out"
    rep = batch(sources, out, client=cluster)
    assert rep.ok and [i.status for i in rep.items] == ["ok"] * 4
    for src in sources:
        got = out / (src.name + ".zm")
        assert same_tree(got, reference(src, tmp_path)), src
    restored = tmp_path / "restored.safetensors"
    zipmodel.decompress_file(out / "m1.safetensors.zm", restored)
    assert restored.read_bytes() == sources[1].read_bytes()
    recs = lines(out)
    assert len(recs) == 4 and {r["status"] for r in recs} == {"ok"}
    for r in recs:
        assert r["worker"].startswith("tcp://") and r["threads"] == 1
        assert r["output_size"] == r["output_bytes"] or r["kind"] == "folder"
        if r["kind"] == "file":
            assert r["source_sha256"] == api.open(r["output"]).source["sha256"]
            assert (
                r["output_sha256"]
                == __import__("hashlib").sha256(Path(r["output"]).read_bytes()).hexdigest()
            )
    assert no_temporaries(out)


def test_lossy_and_level_options_reach_the_workers(sources, tmp_path, cluster):
    out = tmp_path / "out"
    rep = batch(sources[:1], out, client=cluster, level="fast", lossy="int8")
    assert rep.ok
    ref = reference(sources[0], tmp_path, level="fast", lossy="int8")
    assert (out / "m0.safetensors.zm").read_bytes() == ref.read_bytes()
    assert lines(out)[0]["options"]["lossy"]["lossy"] == "int8"


def test_resume_skips_what_still_holds(sources, tmp_path, cluster):
    out = tmp_path / "out"
    batch(sources, out, client=cluster)
    n = len(lines(out))
    again = batch(sources, out)  # no client: a cluster would be started if anything ran
    assert [i.status for i in again.items] == ["skipped"] * 4 and again.workers == 0
    assert len(lines(out)) == n  # nothing appended
    # a touched source (same bytes, new mtime): its SHA-256 is recomputed, and still holds
    os.utime(sources[0], ns=(1, 1))
    assert batch(sources, out).workers == 0
    # a changed source is coded again; so is a damaged output
    weights(sources[1], 99)
    dst2 = out / "m2.safetensors.zm"
    dst2.write_bytes(dst2.read_bytes()[:-1] + b"\0")
    os.utime(dst2, ns=(1, 1))
    rep = batch(sources, out, client=cluster)
    assert [i.status for i in rep.items] == ["skipped", "ok", "ok", "skipped"]
    assert (out / "m1.safetensors.zm").read_bytes() == reference(sources[1], tmp_path).read_bytes()
    assert dst2.read_bytes() == reference(sources[2], tmp_path).read_bytes()
    # other options: coded again
    rep = batch(sources[:1], out, client=cluster, level="fast")
    assert rep.items[0].status == "ok"
    assert set(load_records(out)) == {(str(s), str(out / (s.name + ".zm"))) for s in sources}


def test_duplicates_are_coded_once(sources, tmp_path, cluster):
    twin = tmp_path / "twin.safetensors"
    twin.write_bytes(sources[0].read_bytes())
    out = tmp_path / "out"
    rep = batch([sources[0], twin, sources[1]], out, client=cluster)
    assert [i.status for i in rep.items] == ["ok", "duplicate", "ok"]
    assert not (out / "twin.safetensors.zm").exists()
    dup = next(r for r in lines(out) if r["status"] == "duplicate")
    assert dup["output"] == str(out / "m0.safetensors.zm")
    assert dup["duplicate_of"] == str(sources[0])
    assert dup["source_sha256"] == rep.items[0].record["source_sha256"]
    again = batch([sources[0], twin, sources[1]], out)
    assert {i.status for i in again.items} == {"skipped"} and again.workers == 0


def test_manifest_names_outputs_and_bases(sources, tmp_path, cluster):
    base = sources[0]
    ft = tmp_path / "src" / "ft.safetensors"
    weights(ft, 0)  # the base's tensors: stored as nothing against it
    man = tmp_path / "src" / "batch.jsonl"
    man.write_text(
        json.dumps({"source": "ft.safetensors", "base": base.name, "output": "sub/ft.zm"})
        + "\n"
        + json.dumps({"source": "m1.safetensors"})
        + "\n"
    )
    out = tmp_path / "out"
    rep = batch(manifest=man, output_dir=out, client=cluster)
    assert rep.ok
    got = out / "sub" / "ft.zm"
    ref = tmp_path / "ft-ref.zm"
    api.compress_file(ft, ref, threads=1, base=base)
    assert got.read_bytes() == ref.read_bytes()
    assert lines(out)[0]["base"] == str(base) or lines(out)[1]["base"] == str(base)


def test_colliding_outputs_are_refused(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    weights(a / "model.safetensors", 1), weights(b / "model.safetensors", 2)
    with pytest.raises(zipmodel.ZipmodelError, match="both be written"):
        batch([a / "model.safetensors", b / "model.safetensors"], tmp_path / "out")


def test_failures_are_recorded_and_the_others_go_on(sources, tmp_path, cluster):
    linked = tmp_path / "src" / "linked"
    linked.mkdir()
    (linked / "model.safetensors").symlink_to(sources[0])  # outside the folder: refused
    missing = tmp_path / "src" / "missing.safetensors"
    out = tmp_path / "out"
    rep = batch([linked, sources[1], missing], out, client=cluster)
    assert [i.status for i in rep.items] == ["failed", "ok", "failed"]
    recs = {r["source"]: r for r in lines(out)}
    assert "outside the folder" in recs[str(linked)]["message"]
    assert recs[str(linked)]["hint"]
    assert "No such file" in recs[str(missing)]["message"]
    assert not (out / "linked.zm").exists() and no_temporaries(out)


def test_cli_json_envelope_and_exit_code(sources, tmp_path):
    from test_cli_hardening import SCHEMA, schema_errors

    out = tmp_path / "out"
    missing = tmp_path / "nope.safetensors"
    args = ["batch", *map(str, sources[:2]), str(missing), "-o", str(out), "--workers", "2"]
    r = CliRunner().invoke(cli, [*args, "--json"])
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert not schema_errors(doc, SCHEMA, SCHEMA), schema_errors(doc, SCHEMA, SCHEMA)
    assert doc["command"] == "batch" and not doc["ok"] and doc["exit_code"] == 1
    assert [x["status"] for x in doc["results"]] == ["ok", "ok"]
    assert doc["errors"][0]["path"] == str(missing)
    r = CliRunner().invoke(cli, [*args[:3], "-o", str(out), "--json", "-q"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and [x["status"] for x in doc["results"]] == ["skipped"] * 2


def test_cli_usage_errors(tmp_path):
    r = CliRunner().invoke(cli, ["batch", "-o", str(tmp_path)])
    assert r.exit_code == 2 and "SOURCES" in r.output
    r = CliRunner().invoke(
        cli, ["batch", "x", "-o", str(tmp_path), "--workers", "2", "--scheduler", "tcp://h:1"]
    )
    assert r.exit_code == 2 and "--scheduler" in r.output


KILL_ON_FIRST_CALL = """
def kill_on_first_call(marker, name):
    import os, signal
    from zipmodel import files as api  # the module batching calls
    real = api.compress_file
    def compress_file(src, *a, **kw):
        if os.path.basename(src) == name and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # this worker process dies mid-task
        return real(src, *a, **kw)
    api.compress_file = compress_file
"""


def our_cluster(n: int):
    """The LocalCluster that ``batch`` starts when given no client (forked workers)."""
    from zipmodel.batching import _cluster

    return _cluster(n, 1, None, None, "default")


def plain_cluster(n: int):
    """A LocalCluster of spawned workers that a user started, given as ``client=``."""
    import contextlib

    from distributed import Client, LocalCluster

    @contextlib.contextmanager
    def cm():
        with (
            LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                memory_limit=0,
            ) as c,
            Client(c) as client,
        ):  # fmt: skip
            yield client, c

    return cm()


def worker_state():
    import sys

    return (
        os.getppid(),
        sorted(m for m in sys.modules if m.startswith("zipmodel")),
        signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
    )


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this platform: workers are spawned",
)
def test_local_workers_start_forked_with_the_kernels_loaded(sources, tmp_path):
    """batch's own cluster forks its workers from a server that has imported zipmodel and
    loaded the level's compress kernels: no worker loads them on its first task, the
    server's environment does not leak into this process, and the workers leave a
    terminal's Ctrl-C to the client."""
    from zipmodel.batchplan import WARM_ENV

    with our_cluster(2) as (client, _):
        states = client.run(worker_state)
        assert WARM_ENV not in os.environ
        assert len(states) == 2
        for ppid, modules, ignores_sigint in states.values():
            assert ppid != os.getpid()  # the fork server's children, not the nanny's
            assert "zipmodel.files" in modules and "zipmodel._kernels.split" in modules
            assert ignores_sigint  # a terminal's Ctrl-C is the client's to handle
        out = tmp_path / "out"
        rep = batch(sources, out, client=client)
    assert rep.ok
    for src in sources:
        assert same_tree(out / (src.name + ".zm"), reference(src, tmp_path))


def test_sources_go_largest_first_to_whichever_worker_is_free(tmp_path, cluster):
    """Tasks are handed to Dask one per task slot: on one worker they run strictly largest
    first, and on two no more than two are ever placed at once."""
    src = tmp_path / "src"
    src.mkdir()
    files = [weights(src / f"s{i}.safetensors", i, rows=32 * (1 + (i * 7) % 5)) for i in range(5)]
    by_size = sorted(files, key=lambda f: -f.stat().st_size)
    with plain_cluster(1) as (client, _):
        out = tmp_path / "one"
        batch(files, out, client=client)
    assert [Path(r["source"]).name for r in lines(out)] == [f.name for f in by_size]

    placed: list[int] = []
    rep = batch(
        files,
        tmp_path / "two",
        client=cluster,
        on_item=lambda _: placed.append(sum(map(len, cluster.processing().values()))),
    )
    assert rep.ok and max(placed) <= 2


@pytest.mark.slow
@pytest.mark.parametrize("start", [our_cluster, plain_cluster], ids=["forked", "spawned"])
def test_a_killed_worker_task_runs_again(sources, tmp_path, start):
    """The first attempt of one task SIGKILLs its own worker process: the nanny restarts it,
    the scheduler runs the task again, and the batch ends with every output whole."""
    ns: dict = {}
    exec(KILL_ON_FIRST_CALL, ns)
    marker = tmp_path / "killed-once"
    with start(2) as (client, _):
        pids = set(client.run(os.getpid).values())
        client.run(ns["kill_on_first_call"], str(marker), "m1.safetensors")
        out = tmp_path / "out"
        rep = batch(sources, out, client=client)
        assert marker.exists()  # it did kill a worker
        assert rep.ok and [i.status for i in rep.items] == ["ok"] * 4
        client.wait_for_workers(2, timeout=60)
        assert set(client.run(os.getpid).values()) != pids  # a restarted worker
    for src in sources:
        assert same_tree(out / (src.name + ".zm"), reference(src, tmp_path))
    assert len(lines(out)) == 4 and no_temporaries(out)


SLOW_SITE = """
import os
if os.environ.get("ZM_TEST_STALL"):
    import time
    from zipmodel import files as api  # the module batching calls
    real = api.compress_file
    def compress_file(src, dst=None, **kw):
        def stall(done, total):
            open(os.environ["ZM_TEST_STALL"], "w").close()
            time.sleep(300)  # mid-output: the temporary file exists
        kw["progress"] = stall
        return real(src, dst, **kw)
    api.compress_file = compress_file
"""


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(sources, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SLOW_SITE))
    started = tmp_path / "started"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        "ZM_TEST_STALL": str(started),
    }
    out = tmp_path / "out"
    p = subprocess.Popen(
        [sys.executable, "-m", "zipmodel", "batch", str(sources[0]), "-o", str(out), "-q"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # the worker is in the middle of writing the output
            if started.exists() or p.poll() is not None:
                break
            time.sleep(0.1)
        assert started.exists(), p.stderr.read() if p.poll() is not None else "never started"
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=120)[1]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err
    assert sorted(x.name for x in out.iterdir()) == [RECORD] or not any(out.iterdir())
    assert (out / RECORD).read_text() == "" if (out / RECORD).exists() else True


def test_without_dask_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    """A fresh `pip install zipmodel` has no Dask: batch names the extra, never 'a bug'."""
    import sys

    from zipmodel.errors import MissingDependencyError

    src = tmp_path / "m.bin"
    src.write_bytes(b"abcd" * 1000)
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingDependencyError, match="Dask") as e:
        batch([src], tmp_path / "out")
    assert "zipmodel[batch]" in e.value.hint
