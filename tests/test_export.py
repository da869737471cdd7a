"""``zipmodel export X.zm --to gguf`` (issue 18, zipmodel/export.py): the GGUF opens in gguf-py's
reader and every tensor dequantizes (``gguf.quants.dequantize``) to exactly what ``zipmodel
decompress`` restores, for a safetensors source under every ggml preset (rows that fit the
blocks and rows that do not) and for a GGUF source (metadata and tensor order kept)."""

from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

import zipmodel
from zipmodel.cli import cli
from zipmodel.export import export_file
from zipmodel.options import GGML_PRESETS

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize  # noqa: E402

RNG = np.random.default_rng(1818)


def _w(shape, dtype=np.float32):
    return (RNG.standard_normal(shape) * 0.02).astype(dtype)


TENSORS = {
    "blk.0.ffn_up.weight": _w((16, 512)),  # every block type
    "blk.0.attn_q.weight": _w((32, 256), np.float16),
    "blk.0.attn_k.weight": _w((24, 256), ml_dtypes.bfloat16),
    "blk.0.small_rows.weight": _w((64, 96)),  # q8_0 fallback
    "blk.0.odd_rows.weight": _w((50, 100)),  # no block fits: lossless
    "blk.0.ffn_norm.weight": _w((512,)),
    "ids": np.arange(300, dtype=np.int64),
    "mask": (RNG.random((8, 40)) > 0.5),
    "bytes": RNG.integers(0, 256, (4, 64), dtype=np.uint8),
    "scalar": np.array(3.5, np.float32),
}


def _values(t) -> np.ndarray:
    """A GGUF tensor's values in numpy order (float32 for float types)."""
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type.name in ("I8", "I16", "I32", "I64"):
        return np.asarray(t.data).reshape(shape)
    return np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(shape)


def _check(gguf_path, restored: dict[str, np.ndarray]):
    r = gguf.GGUFReader(str(gguf_path))
    got = {t.name: t for t in r.tensors}
    assert set(got) == set(restored)
    for name, want in restored.items():
        v = _values(got[name])
        want_shape = want.shape or (1,)
        assert v.shape == want_shape, name
        cast = v.astype(want.dtype).reshape(want.shape)
        assert cast.tobytes() == want.tobytes(), f"{name}: not what decompress restores"
    return r


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("export") / "m.safetensors"
    save_file(TENSORS, str(p))
    return p


@pytest.mark.parametrize("preset", [None, *GGML_PRESETS, "int8"])
def test_safetensors_source(model, tmp_path, preset):
    zm = tmp_path / "m.zm"
    zipmodel.compress_file(model, zm, lossy=preset, threads=1)
    restored = tmp_path / "r.safetensors"
    zipmodel.decompress_file(zm, restored)
    back = load_file(str(restored))
    rep = export_file(zm, tmp_path / "m.gguf")
    assert rep.metadata == "minimal" and rep.tensors == len(TENSORS)
    r = _check(tmp_path / "m.gguf", back)
    assert "general.architecture" not in r.fields
    assert r.fields["general.name"].contents() == "m"
    types = {t.name: t.tensor_type.name for t in r.tensors}
    if preset in GGML_PRESETS:
        assert types["blk.0.ffn_up.weight"] == preset.upper()
        assert types["blk.0.small_rows.weight"] == "Q8_0"
        assert types["blk.0.odd_rows.weight"] == "F32"
        with zipmodel.open(zm) as f:  # the stored blocks, verbatim
            blocks = f.get_part("blk.0.ffn_up.weight", "blocks")
        t = next(t for t in r.tensors if t.name == "blk.0.ffn_up.weight")
        assert np.asarray(t.data).reshape(-1).view(np.uint8).tobytes() == blocks.tobytes()
    else:
        assert types["blk.0.ffn_up.weight"] == "F32"
    assert types["blk.0.attn_k.weight"] in ("BF16", *[p.upper() for p in GGML_PRESETS])
    assert types["mask"] == "I8" and types["bytes"] == "I16" and types["ids"] == "I64"
    assert rep.converted["bytes"] == "U8 -> I16"


def _gguf_source(path):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(128)
    w.add_uint32("llama.block_count", 1)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0])
    w.add_float32("llama.rope.freq_base", 10000.0)
    src = {
        "token_embd.weight": _w((32, 256)),
        "blk.0.attn_q.weight": _w((16, 512)),
        "blk.0.ffn_down.weight": _w((64, 96), np.float16),
        "output_norm.weight": _w((256,)),
    }
    for name, a in src.items():
        w.add_tensor(name, a)
    q8 = _w((4, 64))
    w.add_tensor(
        "blk.0.q8.weight",
        gguf.quants.quantize(q8, gguf.GGMLQuantizationType.Q8_0),
        raw_dtype=gguf.GGMLQuantizationType.Q8_0,
    )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("preset", [None, "q4_k", "q6_k"])
def test_gguf_source_keeps_metadata_and_order(tmp_path, preset):
    src = tmp_path / "tiny.gguf"
    _gguf_source(src)
    zm = tmp_path / "tiny.gguf.zm"
    zipmodel.compress_file(src, zm, lossy=preset, threads=1)
    out = tmp_path / "out.gguf"
    rep = export_file(zm, out)
    assert rep.metadata == "source"
    a, b = gguf.GGUFReader(str(src)), gguf.GGUFReader(str(out))
    keys = [k for k in a.fields if not k.startswith("GGUF.")]
    assert [k for k in b.fields if not k.startswith("GGUF.")] == keys
    for k in keys:
        assert b.fields[k].contents() == a.fields[k].contents(), k
    assert [t.name for t in b.tensors] == [t.name for t in a.tensors]
    with zipmodel.open(zm) as f:
        restored = {n: f.get_tensor(n) for n in f}
    for t in b.tensors:
        want = restored[t.name]
        if want.dtype == np.uint8:  # a block type stored losslessly: the same blocks
            assert t.tensor_type.name == "Q8_0"
            assert np.asarray(t.data).tobytes() == want.tobytes()
            continue
        v = _values(t).astype(want.dtype).reshape(want.shape)
        assert v.tobytes() == want.tobytes(), t.name
    if preset is None:  # lossless: the tensors are the source's own bytes
        for ta, tb in zip(a.tensors, b.tensors):
            assert ta.tensor_type == tb.tensor_type
            assert np.asarray(ta.data).tobytes() == np.asarray(tb.data).tobytes()
    else:
        types = {t.name: t.tensor_type.name for t in b.tensors}
        assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == preset.upper()
        assert types["blk.0.ffn_down.weight"] == "Q8_0"  # rows of 96
        assert types["output_norm.weight"] == "F32"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_cli_and_bad_input(model, tmp_path):
    zm = tmp_path / "m.zm"
    zipmodel.compress_file(model, zm, lossy="q4_k", threads=1)
    out = tmp_path / "m.gguf"
    r = run("export", zm, "--to", "gguf", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    (res,) = doc["results"]
    assert doc["command"] == "export" and res["output"] == str(out)
    assert res["types"]["Q4_K"] >= 1 and res["metadata"] == "minimal"
    # an existing output needs -f; nothing else is left behind
    r = run("export", zm, "--to", "gguf", "-o", out)
    assert r.exit_code == 1 and "exists" in r.output
    assert run("export", zm, "--to", "gguf", "-o", out, "-f").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf", "m.zm"]
    # unknown --to: a usage error
    assert run("export", zm, "--to", "onnx", "-o", tmp_path / "x").exit_code == 2
    # a container without tensors
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 8)
    zipmodel.compress_file(blob, tmp_path / "blob.bin.zm")
    r = run("export", tmp_path / "blob.bin.zm", "--to", "gguf", "-o", tmp_path / "blob.gguf")
    assert r.exit_code == 1 and "no tensors" in r.output
    assert not (tmp_path / "blob.gguf").exists()
    # the default output name
    r = run("export", zm, "--to", "gguf", "-f", "-q")
    assert r.exit_code == 0 and (tmp_path / "m.gguf").exists()


def test_a_delta_container_needs_its_base(tmp_path):
    base = _w((64, 256))
    ft = base.copy()
    ft[0, 0] += 1
    save_file({"w": base}, str(tmp_path / "base.safetensors"))
    save_file({"w": ft}, str(tmp_path / "ft.safetensors"))
    zm = tmp_path / "ft.zm"
    zipmodel.compress_file(tmp_path / "ft.safetensors", zm, base=tmp_path / "base.safetensors")
    r = run("export", zm, "--to", "gguf", "-o", tmp_path / "ft.gguf")
    assert r.exit_code == 1 and "base" in r.output and not (tmp_path / "ft.gguf").exists()
    r = run(
        "export",
        zm,
        "--to",
        "gguf",
        "-o",
        tmp_path / "ft.gguf",
        "--base",
        tmp_path / "base.safetensors",
    )
    assert r.exit_code == 0, r.output
    (t,) = gguf.GGUFReader(str(tmp_path / "ft.gguf")).tensors
    assert np.asarray(t.data).tobytes() == ft.tobytes()
