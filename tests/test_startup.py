"""First run on a fresh machine: commands compile only the kernels they use (``info`` and
plain files none, so they never import Numba), say on stderr what they compile, and two
processes compiling into one empty cache at once both succeed with identical output.

Bounded work, not seconds: what is compiled and imported is asserted, never how long it took
(benches/startup.py measures that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import zipmodel

CHILD = r"""
import json, sys
import zipmodel
from zipmodel import _jit
cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "info":
    zipmodel.open(args[0]).summary()
elif cmd == "decompress":
    zipmodel.decompress_file(args[0], args[1], force=True)
elif cmd == "compress":
    zipmodel.compress_file(args[0], args[1], force=True)
print(json.dumps({"numba": "numba" in sys.modules,
                  "compiled": sorted({k for k, _ in _jit.compiled_here()})}))
"""


def child(cache, *args, quiet=True):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("ZIPMODEL_QUIET_JIT", None)
    if quiet:
        env["ZIPMODEL_QUIET_JIT"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def result(p) -> tuple[dict, str]:
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1]), err


def bf16_file(path, n=300_000):
    w = (np.random.default_rng(0).standard_normal(n) * 0.02).astype(np.float32)
    bf = (w.view(np.uint32) >> 16).astype(np.uint16)
    header = json.dumps({"w": {"dtype": "BF16", "shape": [n], "data_offsets": [0, 2 * n]}})
    h = header.encode() + b" " * (-len(header) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + bf.tobytes())
    return path


def test_info_and_a_small_file_import_no_numba(tmp_path):
    """``info`` decodes nothing and a small opaque file is zstd/raw frames: neither needs a
    kernel, so neither imports Numba (its import alone costs a quarter of a second)."""
    src = bf16_file(tmp_path / "m.safetensors")
    zm = zipmodel.compress_file(src, tmp_path / "m.zm").output
    small = tmp_path / "notes.txt"
    small.write_bytes(b"abcd" * 100)
    small_zm = zipmodel.compress_file(small, tmp_path / "notes.zm").output
    cache = tmp_path / "cache"
    info, _ = result(child(cache, "info", zm))
    assert info == {"numba": False, "compiled": []}
    dec, _ = result(child(cache, "decompress", small_zm, tmp_path / "back.txt"))
    assert dec == {"numba": False, "compiled": []}
    assert (tmp_path / "back.txt").read_bytes() == small.read_bytes()


@pytest.mark.slow
def test_first_decompress_compiles_decoders_only_in_two_processes_at_once(tmp_path):
    """An empty Numba cache, two decompressions racing to fill it (two CI jobs on one cache):
    both succeed byte for byte, compile the frame decoder, never an encoder, and say so."""
    src = bf16_file(tmp_path / "m.safetensors")
    zm = zipmodel.compress_file(src, tmp_path / "m.zm").output
    cache = tmp_path / "cache"
    procs = [
        child(cache, "decompress", zm, tmp_path / f"out{i}", quiet=False) for i in range(2)
    ]
    results = [result(p) for p in procs]
    for i, (r, err) in enumerate(results):
        assert (tmp_path / f"out{i}").read_bytes() == src.read_bytes()
        assert "decode_frame" in r["compiled"]
        assert not any("encode" in k or "choose" in k for k in r["compiled"]), r["compiled"]
        assert "compiling Numba kernels" in err and "decode_frame" in err
    again, err = result(child(cache, "decompress", zm, tmp_path / "out2", quiet=False))
    assert again["compiled"] == [] and "compiling" not in err  # both left a usable cache
    assert (tmp_path / "out2").read_bytes() == src.read_bytes()


@pytest.mark.slow
@pytest.mark.corpus
def test_after_warmup_real_models_compress_and_decompress_without_compiling(tmp_path, corpus):
    """``zipmodel warmup`` compiles what compress and decompress use on real files of every
    reader (safetensors, torch zip, CTranslate2, GGUF): after it nothing compiles, so a batch
    worker or a CI job never waits on a kernel warmup missed (a transform's writable stream
    once reached a histogram kernel specialised only for read-only ones)."""
    names = [
        "minilm_fp32.safetensors",
        "minilm_bf16.safetensors",
        "craft_mlt_25k.pth",
        "whisper_tiny_ct2.bin",
        "smollm2-135m-q4_1.gguf",
    ]
    sources = [corpus / n for n in names]
    cache = tmp_path / "cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), ZIPMODEL_QUIET_JIT="1")
    subprocess.run(
        [sys.executable, "-m", "zipmodel", "warmup", "-j", "2"], env=env, check=True,
        capture_output=True, timeout=900,
    )  # fmt: skip
    for src in sources:
        zm = tmp_path / (src.name + ".zm")
        back = tmp_path / src.name
        made, _ = result(child(cache, "compress", src, zm))
        assert made["compiled"] == [], (src.name, made["compiled"])
        restored, _ = result(child(cache, "decompress", zm, back))
        assert restored["compiled"] == [], (src.name, restored["compiled"])
        assert back.read_bytes() == src.read_bytes()
        back.unlink()
        zm.unlink()
