"""zipmodel push/pull and zipmodel.hub against a Hub-compatible server on 127.0.0.1.

huggingface_hub talks HTTP to tests/hubserver.py exactly as it would to the Hub (no mocks); the
server's request log shows what went up and what came down.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("huggingface_hub")

from safetensors.numpy import save_file

from hubserver import HubServer
from zipmodel import hub
from zipmodel.errors import HubError, OutputExistsError, ZipmodelError
from zipmodel.folder import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
CARD = "---\nlicense: apache-2.0\ntags:\n- sentence-similarity\n---\n\n# Tiny model\n\nHello.\n"


@pytest.fixture
def server():
    with HubServer() as srv:
        yield srv


@pytest.fixture
def env(tmp_path, monkeypatch, server):
    """Keyword arguments for pull: the server's endpoint and a Hugging Face cache in tmp."""
    monkeypatch.setenv("ZIPMODEL_HUB_CACHE", str(tmp_path / "restored"))
    return {"endpoint": server.url, "cache_dir": str(tmp_path / "hf-cache")}


def make_model(root: Path, *, big: bool = False) -> Path:
    """A small Hugging Face-style folder: weights, config, tokenizer, a card, a subfolder."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    n = 512 if big else 128
    save_file(
        {
            "embed.weight": rng.standard_normal((n, 256)).astype(np.float32),
            "layer.0.weight": (rng.standard_normal((256, 256)) * 0.02).astype(np.float32),
        },
        root / "model.safetensors",
    )
    (root / "config.json").write_text('{"model_type": "tiny", "hidden_size": 256}\n')
    (root / "tokenizer.json").write_text(json.dumps({"vocab": list("abcdefgh")}))
    (root / "README.md").write_text(CARD)
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    return root


def tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def push(server, src, repo="alice/tiny", **kw):
    return hub.upload(repo, src, token="hf_write", endpoint=server.url, **kw)


# -- push ----------------------------------------------------------------------------------------
def test_push_uploads_compressed_weights_manifest_and_card(tmp_path, server):
    src = make_model(tmp_path / "tiny")
    res = push(server, src)
    assert res.repo_id == "alice/tiny" and res.revision == "main"
    up = server.uploaded("alice/tiny")
    # no uncompressed weight file went up: the weights only as .zm
    assert "model.safetensors" not in up and "model.safetensors.zm" in up
    assert not [p for p in up if p.endswith(".safetensors")]
    assert {MANIFEST, "config.json", "tokenizer.json", "1_Pooling/config.json"} <= set(up)
    files = server.files("alice/tiny")
    weights = (src / "model.safetensors").stat().st_size
    assert len(files["model.safetensors.zm"]) < weights
    assert res.uploaded_bytes == sum(len(b) for b in files.values())
    # the card: original metadata plus the zipmodel tag, the restore command, the original text
    card = files["README.md"].decode()
    assert card.startswith("---\n") and "- zipmodel" in card and "license: apache-2.0" in card
    assert "pip install zipmodel" in card and "zipmodel pull alice/tiny" in card
    assert "# Tiny model" in card
    # the source's README is kept byte for byte, and the manifest points to it
    assert files[hub.ORIGINAL_README] == CARD.encode()
    doc = json.loads(files[MANIFEST])
    readme = next(f for f in doc["files"] if f["path"] == "README.md")
    assert readme["stored_path"] == hub.ORIGINAL_README
    assert readme["sha256"] == hashlib.sha256(CARD.encode()).hexdigest()


def test_push_to_a_branch_and_pull_it(tmp_path, server, env):
    src = make_model(tmp_path / "tiny")
    res = push(server, src, revision="zipmodel")
    assert set(server.repos["alice/tiny"].branches) == {"main", "zipmodel"}
    assert (
        "zipmodel pull alice/tiny --revision zipmodel"
        in server.files("alice/tiny", "zipmodel")["README.md"].decode()
    )
    assert MANIFEST not in server.files("alice/tiny", "main")
    out = hub.pull("alice/tiny", revision="zipmodel", token="hf_read", **env)
    assert out.commit == res.commit and tree(out.path) == tree(src)
    with pytest.raises(HubError, match=r"no zipmodel\.json") as e:
        hub.pull("alice/tiny", token="hf_read", **env)  # main holds only the empty first commit
    assert "hf download alice/tiny" in e.value.hint


def test_push_a_single_file(tmp_path, server, env):
    src = make_model(tmp_path / "tiny") / "model.safetensors"
    push(server, src, repo="alice/one")
    assert set(server.uploaded("alice/one")) == {"model.safetensors.zm", MANIFEST, "README.md"}
    out = hub.download("alice/one", token="hf_read", **env)
    assert tree(out) == {"model.safetensors": hashlib.sha256(src.read_bytes()).hexdigest()}


def test_push_leaves_out_git_and_uploads_a_compressed_folder_as_is(tmp_path, server, env):
    import zipmodel

    src = make_model(tmp_path / "tiny")
    (src / ".git" / "objects").mkdir(parents=True)
    (src / ".git" / "objects" / "big").write_bytes(os.urandom(5000))
    push(server, src)
    assert not [p for p in server.uploaded("alice/tiny") if p.startswith(".git")]
    out = hub.download("alice/tiny", token="hf_read", **env)
    assert not (out / ".git").exists()
    assert tree(out) == {k: v for k, v in tree(src).items() if not k.startswith(".git/")}

    plain = make_model(tmp_path / "plain")
    zipmodel.compress_dir(plain, tmp_path / "plain.zm")
    push(server, tmp_path / "plain.zm", repo="alice/plain")
    assert "model.safetensors.zm" in server.uploaded("alice/plain")
    assert tree(hub.download("alice/plain", token="hf_read", **env)) == tree(plain)


def test_push_lossy_says_so_and_pulls_the_dequantized_weights(tmp_path, server, env):
    from safetensors.numpy import load_file

    src = make_model(tmp_path / "tiny")
    lossless = push(server, src, repo="alice/exact")
    res = push(server, src, repo="alice/int8", lossy="int8")
    assert res.lossy and not lossless.lossy
    assert res.uploaded_bytes < lossless.uploaded_bytes * 0.6
    card = server.files("alice/int8")["README.md"].decode()
    assert "lossily" in card and "--lossy int8" in card
    assert "losslessly" in server.files("alice/exact")["README.md"].decode()
    out = hub.download("alice/int8", token="hf_read", **env)
    a, b = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype
        assert np.abs(a[k] - b[k]).max() <= np.abs(a[k]).max() / 100  # int8: within a step
    assert (out / "config.json").read_bytes() == (src / "config.json").read_bytes()
    import zipmodel

    zipmodel.compress_dir(src, tmp_path / "tiny.zm")
    with pytest.raises(ZipmodelError, match="compressed already"):
        push(server, tmp_path / "tiny.zm", lossy="int8")


def test_push_needs_a_write_token(tmp_path, server):
    src = make_model(tmp_path / "tiny")
    with pytest.raises(HubError, match="may not write") as e:
        hub.upload("alice/tiny", src, token="hf_read", endpoint=server.url)
    assert "hf auth login" in e.value.hint
    with pytest.raises(HubError, match="refused the token"):
        hub.upload("alice/tiny", src, token="hf_wrong", endpoint=server.url)
    assert "alice/tiny" not in server.repos


def test_push_without_namespace_uses_the_token_owner(tmp_path, server):
    res = push(server, make_model(tmp_path / "tiny"), repo="tiny")
    assert res.repo_id == "alice/tiny" and "alice/tiny" in server.repos


def test_private_repo_is_private(tmp_path, server, env):
    push(server, make_model(tmp_path / "tiny"), private=True)
    assert server.repos["alice/tiny"].private
    with pytest.raises(HubError, match="not found") as e:
        hub.pull("alice/tiny", token=False, **env)
    assert "hf auth login" in e.value.hint
    assert hub.download("alice/tiny", token="hf_write", **env).is_dir()


# -- pull ----------------------------------------------------------------------------------------
def test_pull_restores_identical_folder_and_a_second_pull_downloads_nothing(tmp_path, server, env):
    src = make_model(tmp_path / "tiny")
    pushed = push(server, src)
    res = hub.pull("alice/tiny", token="hf_read", **env)
    assert not res.reused and res.commit == pushed.commit
    assert res.path == tmp_path / "restored" / "models--alice--tiny" / pushed.commit
    assert tree(res.path) == tree(src)  # README.md included, byte for byte
    assert not (res.path / MANIFEST).exists()
    assert res.downloaded_bytes == res.folder.stored_bytes
    got = {r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in server.downloads()}
    assert "README.md" not in got  # the card is not needed to restore
    assert all(p.endswith(".zm") or not p.endswith(".safetensors") for p in got)

    before = len(server.log)
    again = hub.pull("alice/tiny", token="hf_read", **env)
    assert again.reused and again.path == res.path
    warm = server.log[before:]
    assert [(r.method, r.path) for r in warm] == [
        ("GET", "/api/models/alice/tiny/revision/main")
    ], "a warm pull only resolves the revision"
    # by commit hash: no request at all
    before = len(server.log)
    assert hub.pull("alice/tiny", revision=pushed.commit, token="hf_read", **env).reused
    assert len(server.log) == before


def test_load_decodes_the_weights_without_restoring_the_folder(tmp_path, server, env):
    """hub.load: the state dict straight from the downloaded .zm; only the manifest and the
    weight file come down (not the config, the tokenizer or the card), nothing is restored."""
    from safetensors.numpy import load_file

    src = make_model(tmp_path / "tiny")
    push(server, src)
    sd = hub.load("alice/tiny", token="hf_read", threads=2, **env)
    want = load_file(str(src / "model.safetensors"))
    assert list(sd) == list(want)
    assert all(sd[k].dtype == v.dtype and sd[k].tobytes() == v.tobytes() for k, v in want.items())
    got = {r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in server.downloads()}
    assert got == {MANIFEST, "model.safetensors.zm"}
    assert not (tmp_path / "restored").exists()
    before = len(server.downloads())
    again = hub.load("alice/tiny", token="hf_read", **env)  # cached: no file comes down again
    assert len(server.downloads()) == before and list(again) == list(want)
    torch = pytest.importorskip("torch")
    t = hub.load("alice/tiny", framework="torch", token="hf_read", **env)
    assert t["embed.weight"].dtype == torch.float32


def test_pull_into_a_folder(tmp_path, server, env):
    src = make_model(tmp_path / "tiny")
    push(server, src)
    dest = tmp_path / "out"
    assert hub.download("alice/tiny", local_dir=dest, token="hf_read", **env) == dest
    assert tree(dest) == tree(src)
    n = len(server.downloads())
    assert hub.pull("alice/tiny", local_dir=dest, token="hf_read", **env).reused
    assert len(server.downloads()) == n
    (dest / "config.json").write_text("{}")  # no longer this revision
    with pytest.raises(OutputExistsError, match="does not hold"):
        hub.pull("alice/tiny", local_dir=dest, token="hf_read", **env)
    res = hub.pull("alice/tiny", local_dir=dest, force=True, token="hf_read", **env)
    assert not res.reused and tree(dest) == tree(src)


def test_pull_checks_every_sha256(tmp_path, server, env):
    src = make_model(tmp_path / "tiny")
    push(server, src)
    repo = server.repos["alice/tiny"]
    files = repo.commits[repo.branches["main"]]
    files["config.json"] = b'{"model_type": "evil"}\n'  # the Hub serves a changed copy
    from zipmodel.errors import VerifyMismatchError

    with pytest.raises(VerifyMismatchError, match=r"config\.json"):
        hub.pull("alice/tiny", token="hf_read", **env)
    assert not (tmp_path / "restored" / "models--alice--tiny" / repo.branches["main"]).exists()
    r = zipmodel_cli("pull", "alice/tiny", env=cli_env(tmp_path, server, "hf_read"), check=False)
    assert r.returncode == 3 and "config.json" in r.stderr and r.stdout == ""


def test_missing_repo_and_revision_say_what_to_try(tmp_path, server, env):
    push(server, make_model(tmp_path / "tiny"))
    with pytest.raises(HubError, match="repository alice/nope not found") as e:
        hub.pull("alice/nope", token="hf_read", **env)
    assert "check the repo id" in e.value.hint
    with pytest.raises(HubError, match="no revision 'v9'") as e:
        hub.pull("alice/tiny", revision="v9", token="hf_read", **env)
    assert "--revision" in e.value.hint and "list_repo_refs" in e.value.hint
    with pytest.raises(HubError, match="refused the token") as e:
        hub.pull("alice/tiny", token="hf_wrong", **env)
    assert "hf auth login" in e.value.hint


def test_dropped_connection_is_resumed(tmp_path, server, env):
    src = make_model(tmp_path / "tiny", big=True)
    push(server, src)
    server.drop("*/model.safetensors.zm", after=100_000, times=1)
    res = hub.pull("alice/tiny", token="hf_read", **env)
    assert tree(res.path) == tree(src)
    gets = [r for r in server.downloads() if r.path.endswith("model.safetensors.zm")]
    assert len(gets) == 2 and gets[0].sent == 100_000  # dropped once, then fetched again


def test_failed_pull_leaves_no_output_and_resumes(tmp_path, server, env):
    src = make_model(tmp_path / "tiny", big=True)
    push(server, src)
    server.fail("GET", "*/model.safetensors.zm", 500)
    with pytest.raises(HubError, match="500") as e:
        hub.pull("alice/tiny", token="hf_read", **env)
    assert "again" in e.value.hint
    restored = tmp_path / "restored" / "models--alice--tiny"
    assert not restored.exists() or not any(restored.iterdir())
    server.clear_faults()
    n = len(server.downloads())
    res = hub.pull("alice/tiny", token="hf_read", **env)
    assert tree(res.path) == tree(src)
    again = [r.path.rsplit("/", 1)[-1] for r in server.downloads()[n:]]
    assert again == ["model.safetensors.zm"], "files already in the cache are not fetched again"


def closed_port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_no_network_and_bad_ids_say_what_to_try(tmp_path):
    url = closed_port()  # nothing listens there
    with pytest.raises(HubError, match="cannot reach the Hub") as e:
        hub.pull("alice/tiny", token="hf_read", endpoint=url, cache_dir=str(tmp_path / "hf"))
    assert "HF_ENDPOINT" in e.value.hint
    src = make_model(tmp_path / "tiny")
    with pytest.raises(HubError, match="cannot talk to the Hub") as e:
        hub.upload("alice/tiny", src, token="hf_write", endpoint=url)
    assert "HF_ENDPOINT" in e.value.hint
    with pytest.raises(HubError, match="invalid repo id") as e:
        hub.pull("a/b/c", endpoint=url, cache_dir=str(tmp_path / "hf"))
    assert "ORG/NAME" in e.value.hint


def test_import_zipmodel_hub_is_light():
    code = "import sys, zipmodel.hub; print('huggingface_hub' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the command line (subprocesses: HF_ENDPOINT etc. are read when huggingface_hub loads) -------
def cli_env(tmp_path: Path, server: HubServer, token: str = "hf_write") -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        HF_ENDPOINT=server.url,
        HF_TOKEN=token,
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_CACHE=str(tmp_path / "hf-cache"),
        ZIPMODEL_HUB_CACHE=str(tmp_path / "restored"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    e.pop("HF_HUB_OFFLINE", None)
    return e


def zipmodel_cli(*args, env, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zipmodel", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=300,
        **kw,
    )


def test_cli_push_and_pull_json(tmp_path, server):
    src = make_model(tmp_path / "tiny")
    r = zipmodel_cli("push", "alice/tiny", str(src), "--json", env=cli_env(tmp_path, server))
    env_doc = json.loads(r.stdout)
    assert env_doc["command"] == "push" and env_doc["ok"] and env_doc["errors"] == []
    (doc,) = env_doc["results"]
    assert doc["kind"] == "repo" and doc["path"] == str(src) and doc["repo_id"] == "alice/tiny"
    for key in ("commit", "files", "original_bytes", "uploaded_bytes", "ratio", "seconds"):
        assert key in doc
    assert doc["uploaded_bytes"] < doc["original_bytes"]

    env = cli_env(tmp_path, server, "hf_read")
    r = zipmodel_cli("pull", "alice/tiny", env=env)
    path = Path(r.stdout.strip())  # the restored folder is the only thing on stdout
    assert tree(path) == tree(src) and "SHA-256 ok" in r.stderr
    r = zipmodel_cli("pull", "alice/tiny", "--json", env=env)
    env_doc = json.loads(r.stdout)
    assert env_doc["command"] == "pull" and env_doc["ok"] and env_doc["errors"] == []
    (doc,) = env_doc["results"]
    assert doc["kind"] == "repo" and doc["path"] == "alice/tiny" and doc["reused"]
    assert doc["output"] == str(path) and doc["downloaded_bytes"] == 0


def test_cli_errors_exit_1_with_the_next_command(tmp_path, server):
    src = make_model(tmp_path / "tiny")
    zipmodel_cli("push", "alice/tiny", str(src), "-q", env=cli_env(tmp_path, server))
    r = zipmodel_cli("pull", "alice/tiny", env=cli_env(tmp_path, server, "hf_bad"), check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert "refused the token" in r.stderr and "hint: log in again" in r.stderr
    assert "hf auth login" in r.stderr and "Traceback" not in r.stderr
    r = zipmodel_cli("pull", "alice/nope", "--json", env=cli_env(tmp_path, server), check=False)
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc == {
        "command": "pull",
        "version": 2,
        "ok": False,
        "exit_code": 1,
        "results": [],
        "errors": [
            {
                "path": "alice/nope",
                "message": "repository alice/nope not found (or private, and this token "
                "cannot read it)",
                "hint": doc["errors"][0]["hint"],
                "exit_code": 1,
            }
        ],
        "warnings": [],
    }
    assert "check the repo id" in doc["errors"][0]["hint"]
    anonymous = cli_env(tmp_path, server)
    del anonymous["HF_TOKEN"]  # and HF_HOME holds no saved token
    r = zipmodel_cli("push", "alice/tiny", str(src), env=anonymous, check=False)
    assert r.returncode == 1 and "no Hugging Face token" in r.stderr and "hf auth login" in r.stderr
    r = zipmodel_cli("pull", env=cli_env(tmp_path, server), check=False)
    assert r.returncode == 2  # usage


def test_cli_pull_offline_uses_the_cache(tmp_path, server):
    src = make_model(tmp_path / "tiny")
    push(server, src)
    env = cli_env(tmp_path, server, "hf_read")
    first = json.loads(zipmodel_cli("pull", "alice/tiny", "--json", env=env).stdout)
    path = Path(first["results"][0]["output"])
    import shutil

    shutil.rmtree(path)  # the compressed files stay in the Hugging Face cache
    before = len(server.log)
    r = zipmodel_cli("pull", "alice/tiny", env={**env, "HF_HUB_OFFLINE": "1"})
    assert Path(r.stdout.strip()) == path and tree(path) == tree(src)
    assert len(server.log) == before, "offline: no request"
    r = zipmodel_cli("pull", "alice/other", env={**env, "HF_HUB_OFFLINE": "1"}, check=False)
    assert r.returncode == 1 and "not in the local cache" in r.stderr


def test_cli_push_lossy_options(tmp_path, server):
    src = make_model(tmp_path / "tiny")
    env = cli_env(tmp_path, server)
    r = zipmodel_cli("push", "alice/tiny", str(src), "--keep", "embed.*", env=env, check=False)
    assert r.returncode == 2 and "--lossy" in r.stderr  # --keep without a lossy stage
    r = zipmodel_cli(
        "push", "alice/tiny", str(src), "--lossy", "nf4", "--keep", "embed.*", "--json", env=env
    )
    doc = json.loads(r.stdout)
    assert doc["ok"]
    doc = doc["results"][0]
    assert (
        doc["lossy"]
        and "--lossy nf4" in server.files("alice/tiny")["README.md"].decode()
    )


def test_killed_pull_leaves_no_complete_looking_folder(tmp_path, server):
    src = make_model(tmp_path / "tiny", big=True)
    push(server, src)
    server.throttle("*/model.safetensors.zm", 100_000)  # ~5 s for the weights
    env = cli_env(tmp_path, server, "hf_read")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zipmodel", "pull", "alice/tiny", "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not any(r.path.endswith(".zm") and r.sent for r in server.log):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    restored = tmp_path / "restored" / "models--alice--tiny"
    assert not restored.exists() or not [p for p in restored.iterdir() if p.is_dir()]
    server.clear_faults()
    r = zipmodel_cli("pull", "alice/tiny", env=env)
    assert tree(Path(r.stdout.strip())) == tree(src)


# -- the real model ------------------------------------------------------------------------------
@pytest.mark.corpus
@pytest.mark.slow
def test_minilm_push_pull_loads_with_transformers(corpus, tmp_path, server, env):
    """The issue's figure: minilm through the loopback Hub, identical bytes, identical outputs."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    src = corpus / "minilm"
    res = push(server, src, repo="alice/minilm")
    assert not [p for p in server.uploaded("alice/minilm") if p.endswith(".safetensors")]
    assert res.uploaded_bytes < res.folder.original_bytes
    out = hub.download("alice/minilm", token="hf_read", **env)
    assert tree(out) == tree(src)
    sentences = ["zipmodel restores every byte.", "A cat sat on the mat.", "Hub round trip"]
    tok = transformers.AutoTokenizer.from_pretrained(src)
    batch = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = transformers.AutoModel.from_pretrained(src)(**batch).last_hidden_state
        b = transformers.AutoModel.from_pretrained(out)(**batch).last_hidden_state
    assert torch.equal(a, b)
