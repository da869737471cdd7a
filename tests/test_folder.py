"""Model folders: X/ -> X.zm/ -> X/, byte for byte, and hostile manifests."""

import hashlib
import itertools
import json
import os
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

import zipmodel
from zipmodel import folder
from zipmodel.cli import cli
from zipmodel.errors import (
    FormatError,
    OutputExistsError,
    UnsupportedError,
    VerifyMismatchError,
    ZipmodelError,
)

SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]


def make_hf_folder(root: Path) -> Path:
    """A small Hugging Face style checkpoint: sharded bf16 safetensors, config, tokenizer."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 256}))
    (root / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0, "b": 1}}}))
    (root / "README.md").write_text("# tiny\n")
    (root / ".gitkeep").write_bytes(b"")  # an empty file
    weight_map = {}
    for i, shard in enumerate(SHARDS):
        tensors = {
            f"layers.{i}.mlp.weight": rng.normal(0, 0.02, (256, 384)).astype(ml_dtypes.bfloat16),
            f"layers.{i}.norm.weight": np.ones(256, np.float32),
        }
        save_file(tensors, str(root / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    (root / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=2)
    )
    sub = root / "1_Pooling" / "deeper"
    sub.mkdir(parents=True)
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    save_file({"w": rng.normal(0, 1, (64, 64)).astype(np.float16)}, str(sub / "head.safetensors"))
    (root / "empty_dir").mkdir()
    # an unknown, compressible file above min_size, and an incompressible one (copied)
    (root / "notes.log").write_bytes(b"step 1 loss 2.5\n" * 20000)
    (root / "blob.dat").write_bytes(rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    try:
        import torch
    except ImportError:
        pass
    else:
        g = torch.Generator().manual_seed(0)
        torch.save({"w": torch.randn(128, 128, generator=g)}, root / "pytorch_model.bin")
    return root


def tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 for files, "dir" for folders (so empty ones count too)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> Path:
    return make_hf_folder(tmp_path_factory.mktemp("src") / "tiny-llama")


@pytest.fixture(scope="module")
def packed(hf, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("packed") / "tiny-llama.zm"
    zipmodel.compress_dir(hf, out, threads=1, min_size=64 << 10)
    return out


def test_roundtrip_is_byte_identical(hf, tmp_path):
    before = tree(hf)
    seen = []
    res = zipmodel.compress_dir(
        hf,
        tmp_path / "x.zm",
        threads=1,
        min_size=64 << 10,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert tree(hf) == before, "the input is never modified"
    stored = {e.path: e.stored for e in res.files}
    for shard in SHARDS:
        assert stored[shard] == "zm" and (tmp_path / "x.zm" / (shard + ".zm")).is_file()
    assert stored["1_Pooling/deeper/head.safetensors"] == "zm"
    assert stored["notes.log"] == "zm"  # unknown but >= min_size and compressible
    assert stored["blob.dat"] == "copy"  # the container would not be smaller
    for small in ("config.json", "tokenizer.json", "model.safetensors.index.json", ".gitkeep"):
        assert stored[small] == "copy"
        assert (tmp_path / "x.zm" / small).read_bytes() == (hf / small).read_bytes()
    if (hf / "pytorch_model.bin").exists():
        assert stored["pytorch_model.bin"] == "zm"
    assert res.ratio < 1 and res.directories == ["empty_dir"]
    assert seen[-1] == (res.original_bytes, res.original_bytes)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(seen)), "progress never goes back"

    back = zipmodel.decompress_dir(tmp_path / "x.zm", tmp_path / "back", threads=1)
    assert tree(tmp_path / "back") == before
    assert back.original_bytes == res.original_bytes
    assert zipmodel.verify_dir(tmp_path / "x.zm", against=hf).files
    assert siblings(tmp_path / "x.zm") == ["back", "x.zm"], "no temporary folders left"


def test_default_names_and_threads(hf, packed, tmp_path):
    assert folder.default_dir_output("a/b", decompress=False) == Path("a/b.zm")
    assert folder.default_dir_output("a/b.zm", decompress=True) == Path("a/b")
    with pytest.raises(ZipmodelError, match=r"does not end in \.zm"):
        folder.default_dir_output("a/b", decompress=True)
    # same bytes whatever the thread count
    zipmodel.compress_dir(hf, tmp_path / "t2.zm", threads=2, min_size=64 << 10)
    assert tree(tmp_path / "t2.zm") == tree(packed)


def test_manifest_fields(hf, packed):
    doc = json.loads((packed / "zipmodel.json").read_text())
    assert doc["format"] == "zipmodel-folder" and doc["version"] == 1
    assert doc["writer"] == f"zipmodel {zipmodel.__version__}"
    paths = [f["path"] for f in doc["files"]]
    assert paths == sorted(paths)
    assert set(paths) == {k for k, v in tree(hf).items() if v != "dir"}
    for f in doc["files"]:
        data = (hf / f["path"]).read_bytes()
        assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
        assert f["stored_path"] == f["path"] + (".zm" if f["stored"] == "zm" else "")
        assert f["stored_size"] == (packed / f["stored_path"]).stat().st_size
    assert doc["directories"] == ["empty_dir"]
    t = doc["totals"]
    assert t["files"] == len(paths) == t["compressed_files"] + t["copied_files"]
    assert t["original_bytes"] == sum(f["size"] for f in doc["files"])
    assert t["stored_bytes"] == sum(f["stored_size"] for f in doc["files"])


def test_existing_output_needs_force(hf, packed, tmp_path):
    out = tmp_path / "o.zm"
    out.mkdir()
    (out / "old").write_text("x")
    with pytest.raises(OutputExistsError):
        zipmodel.compress_dir(hf, out, threads=1)
    assert (out / "old").exists()
    zipmodel.compress_dir(hf, out, threads=1, force=True, min_size=64 << 10)
    assert not (out / "old").exists() and tree(out) == tree(packed)
    assert siblings(out) == ["o.zm"]
    with pytest.raises(ZipmodelError, match="overlap"):
        zipmodel.compress_dir(hf, hf / "inside.zm", threads=1)
    assert not (hf / "inside.zm").exists()


def test_interrupt_leaves_no_output(hf, tmp_path):
    def stop(done, total):
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zipmodel.compress_dir(hf, tmp_path / "x.zm", threads=1, progress=stop)
    assert list(tmp_path.iterdir()) == []
    # and the same when restoring
    zipmodel.compress_dir(hf, tmp_path / "x.zm", threads=1)
    with pytest.raises(KeyboardInterrupt):
        zipmodel.decompress_dir(tmp_path / "x.zm", tmp_path / "back", threads=1, progress=stop)
    assert siblings(tmp_path / "x.zm") == ["x.zm"]


def test_refuses_a_compressed_folder_as_source(packed, tmp_path):
    with pytest.raises(UnsupportedError, match="compressed folder"):
        zipmodel.compress_dir(packed, tmp_path / "again.zm")


def test_name_clash_with_an_existing_zm_file(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    save_file({"w": np.zeros((64, 64), np.float32)}, str(src / "a.bin"))
    (src / "a.bin.zm").write_bytes(b"not ours")
    res = zipmodel.compress_dir(src, threads=1)
    assert {e.path: e.stored for e in res.files} == {"a.bin": "copy", "a.bin.zm": "copy"}
    zipmodel.decompress_dir(tmp_path / "m.zm", tmp_path / "back")
    assert tree(tmp_path / "back") == tree(src)


# -- symlinks -----------------------------------------------------------------------------------
def test_symlinks(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    (src / "real.json").write_text("{}")
    (src / "alias.json").symlink_to("real.json")  # inside the tree: stored as a file
    res = zipmodel.compress_dir(src, threads=1)
    zipmodel.decompress_dir(res.output, tmp_path / "back")
    assert not (tmp_path / "back" / "alias.json").is_symlink()
    assert (tmp_path / "back" / "alias.json").read_text() == "{}"

    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (src / "leak.txt").symlink_to(outside)
    with pytest.raises(UnsupportedError, match="outside the folder") as e:
        zipmodel.compress_dir(src, tmp_path / "m2.zm", threads=1)
    assert e.value.path.endswith("leak.txt") and "follow-symlinks" in e.value.hint
    assert not (tmp_path / "m2.zm").exists()
    res = zipmodel.compress_dir(src, tmp_path / "m3.zm", threads=1, follow_symlinks=True)
    assert (tmp_path / "m3.zm" / "leak.txt").read_text() == "secret"
    (src / "leak.txt").unlink()
    (src / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(UnsupportedError, match="symlink to a folder"):
        zipmodel.compress_dir(src, tmp_path / "m4.zm", threads=1, follow_symlinks=True)


# -- hostile manifests ----------------------------------------------------------------------------
def _entry(path, data=b"{}", **kw):
    d = {
        "path": path,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "stored": "copy",
        "stored_path": path,
        "stored_size": len(data),
    }
    d.update(kw)
    return d


def _hostile(tmp_path, files, *, directories=(), extra=None, **top):
    zm = tmp_path / "evil.zm"
    zm.mkdir()
    (zm / "config.json").write_text("{}")
    doc = {"format": "zipmodel-folder", "version": 1, "writer": "x", "files": files}
    doc["directories"] = list(directories)
    doc.update(top)
    (zm / "zipmodel.json").write_text(json.dumps(doc) if extra is None else extra)
    return zm


HOSTILE = {
    "parent": ([_entry("../escape.json")], {}, FormatError, "unsafe path"),
    "nested-parent": ([_entry("a/../../escape.json")], {}, FormatError, "unsafe path"),
    "absolute": ([_entry("/tmp/escape.json")], {}, FormatError, "unsafe path"),
    "drive": ([_entry("C:/escape.json")], {}, FormatError, "unsafe path"),
    "backslash": ([_entry("..\\escape.json")], {}, FormatError, "unsafe path"),
    "dot": ([_entry("./config.json")], {}, FormatError, "unsafe path"),
    "empty": ([_entry("")], {}, FormatError, "not a relative path"),
    "stored-escape": (
        [_entry("config.json", stored_path="../outside.json")],
        {},
        FormatError,
        "unsafe path",
    ),
    "dir-escape": ([_entry("config.json")], {"directories": ["../d"]}, FormatError, "unsafe"),
    "missing": ([_entry("gone.json")], {}, ZipmodelError, "missing"),
    "wrong-sha": (
        [_entry("config.json", sha256="0" * 64)],
        {},
        VerifyMismatchError,
        "differs from 0000",
    ),
    "wrong-size": ([_entry("config.json", size=3)], {}, VerifyMismatchError, "records 3"),
    "duplicate": ([_entry("config.json")] * 2, {}, FormatError, "listed twice"),
    "file-and-folder": (
        [_entry("config.json"), _entry("config.json/x", stored_path="config.json")],
        {},
        FormatError,
        "both a file and a folder",
    ),
    "bad-sha-field": ([_entry("config.json", sha256="xyz")], {}, FormatError, "64 lowercase"),
    "negative-size": ([_entry("config.json", size=-1)], {}, FormatError, "byte counts"),
    "stored-kind": ([_entry("config.json", stored="tar")], {}, FormatError, "'stored'"),
    "not-json": ([], {"extra": "{nope"}, FormatError, "not valid JSON"),
    "newer": ([], {"version": 99}, UnsupportedError, "newer"),
    "not-ours": ([], {"format": "other"}, FormatError, "format"),
    "files-not-list": ({"a": 1}, {}, FormatError, "must be lists"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_manifest(case, tmp_path):
    files, top, exc, msg = HOSTILE[case]
    zm = _hostile(tmp_path, files, **top)
    before = tree(tmp_path)
    with pytest.raises(exc, match=msg) as e:
        zipmodel.decompress_dir(zm, tmp_path / "out")
    assert e.value.path is not None, "errors name the file"
    assert tree(tmp_path) == before, "nothing is written, inside or outside the target"
    with pytest.raises(ZipmodelError):
        zipmodel.verify_dir(zm)
    r = CliRunner().invoke(cli, ["decompress", str(zm), "-o", str(tmp_path / "out")])
    assert r.exit_code in (1, 3) and "zipmodel: error:" in r.stderr
    assert not (tmp_path / "out").exists()


def test_stored_path_through_a_planted_symlink(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    zm = _hostile(tmp_path, [_entry("x.json", stored_path="link/secret.json")])
    (zm / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(FormatError, match="resolves outside"):
        zipmodel.decompress_dir(zm, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tampered_zm_file(packed, tmp_path):
    import shutil

    zm = tmp_path / "t.zm"
    shutil.copytree(packed, zm)
    # swap two shards' containers: each is valid, but not the file the manifest names
    a, b = zm / (SHARDS[0] + ".zm"), zm / (SHARDS[1] + ".zm")
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    with pytest.raises(VerifyMismatchError, match=SHARDS[0]):
        zipmodel.decompress_dir(zm, tmp_path / "out")
    assert siblings(zm) == ["t.zm"]
    r = CliRunner().invoke(cli, ["verify", str(zm)])
    assert r.exit_code == 3


# -- command line ---------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_roundtrip_and_json(hf, tmp_path):
    import shutil

    src = tmp_path / "tiny"
    shutil.copytree(hf, src)
    before = tree(src)
    r = run("compress", "-r", src, "-T", "1", "--min-size", "64K")
    assert r.exit_code == 0, r.output
    assert "files (" in r.stderr and "tiny.zm/" in r.stderr
    zm = tmp_path / "tiny.zm"
    r = run("compress", src, "-T", "1")
    assert r.exit_code == 1 and "already exists" in r.stderr

    r = run("info", zm, "--json")
    (doc,) = json.loads(r.stdout)["results"]
    assert doc["kind"] == "folder" and doc["path"] == str(zm)
    assert doc["files"] == len([v for v in before.values() if v != "dir"])
    assert {e["path"] for e in doc["entries"]} >= set(SHARDS)
    assert any(d["dtype"] == "BF16" for d in doc["dtypes"])
    r = run("info", zm)
    assert r.exit_code == 0 and SHARDS[0] in r.stdout and "total" in r.stdout

    r = run("verify", zm, "--against", src, "--json")
    v = json.loads(r.stdout)
    assert r.exit_code == 0 and v["ok"] is True and v["results"][0]["ok"] is True
    assert v["results"][0]["kind"] == "folder"

    r = run("decompress", zm, "-o", tmp_path / "back", "--json")
    assert r.exit_code == 0, r.output
    (f,) = json.loads(r.stdout)["results"]
    assert f["kind"] == "folder"
    assert f["original_bytes"] == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert tree(tmp_path / "back") == before

    (tmp_path / "back" / "config.json").write_text('{"changed": 1}')
    r = run("verify", zm, "--against", tmp_path / "back")
    assert r.exit_code == 3 and "config.json" in r.stderr


def test_cli_rm(hf, tmp_path):
    import shutil

    src = tmp_path / "tiny"
    shutil.copytree(hf, src)
    before = tree(src)
    r = run("compress", src, "--rm", "-T", "1")
    assert r.exit_code == 0, r.output
    assert not src.exists() and "input removed" in r.stderr
    r = run("decompress", tmp_path / "tiny.zm", "--rm", "-T", "1")
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "tiny.zm").exists() and tree(src) == before

    # a file the manifest does not list is never deleted
    zipmodel.compress_dir(src, threads=1)
    (tmp_path / "tiny.zm" / "mine.txt").write_text("keep me")
    shutil.rmtree(src)
    r = run("decompress", tmp_path / "tiny.zm", "--rm")
    assert r.exit_code == 0 and "unlisted ones kept" in r.stderr
    assert sorted(p.name for p in (tmp_path / "tiny.zm").iterdir()) == ["mine.txt"]


def test_cli_folder_usage_errors(hf, tmp_path):
    assert run("compress", hf, "-c").exit_code == 2
    assert run("compress", hf, "--dtype", "bf16", "-o", tmp_path / "x.zm").exit_code == 2
    r = run("decompress", hf, "-o", tmp_path / "x")
    assert r.exit_code == 1 and "zipmodel.json" in r.stderr


@pytest.mark.corpus
def test_corpus_minilm_folder(corpus, tmp_path):
    src = corpus / "minilm"
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    res = zipmodel.compress_dir(src, tmp_path / "minilm.zm")
    zipmodel.decompress_dir(tmp_path / "minilm.zm", tmp_path / "minilm")
    assert tree(tmp_path / "minilm") == tree(src)
    zipmodel.verify_dir(tmp_path / "minilm.zm", against=src)
    print(f"minilm folder: {res.original_bytes} -> {res.stored_bytes} bytes ({res.ratio:.4f})")
    assert res.ratio < 0.9
    assert os.path.getsize(tmp_path / "minilm.zm" / "zipmodel.json") < 16 << 10
