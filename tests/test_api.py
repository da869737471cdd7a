import time
from pathlib import Path

import numpy as np
import pytest

import edgecases
import zipmodel
from zipmodel.api import compress_bytes, default_output
from zipmodel.errors import OutputExistsError, ZipmodelError

EDGE = edgecases.build()


@pytest.fixture
def model(tmp_path):
    p = tmp_path / "model.safetensors"
    p.write_bytes(EDGE["model_meta.safetensors"])
    return p


def test_open_is_lazy_and_matches_safetensors(model):
    from safetensors.numpy import load_file

    rep = zipmodel.compress_file(model)
    with zipmodel.open(rep.output) as f:
        assert f.keys() == ["embed.weight", "layer.0.weight", "layer.0.bias", "head.weight"]
        assert f.metadata() == {"format": "pt", "x": "ü ≠ 😀"}
        assert len(f) == 4 and "head.weight" in f and "nope" not in f
        info = f.tensor_info("embed.weight")
        assert (info.dtype, info.shape, info.nbytes) == ("BF16", (300, 64), 300 * 64 * 2)
        emb = f.get_tensor("embed.weight")
        assert str(emb.dtype) == "bfloat16" and emb.shape == (300, 64)
        ref = load_file(str(model))  # safetensors' numpy loader has no bf16: compare the others
        for k in ("layer.0.weight", "layer.0.bias", "head.weight"):
            got = f.get_tensor(k)
            assert got.dtype == ref[k].dtype and got.shape == ref[k].shape
            assert got.tobytes() == ref[k].tobytes()
        with pytest.raises(KeyError, match="no tensor named 'nope'"):
            f.get_tensor("nope")
        assert [k for k, _ in f.items()] == f.keys()
        assert f.source["sha256"] == rep.summary.sha256


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_open_items_read_ahead_in_order_and_bounded(tmp_path, threads):
    """``items()`` decodes ahead on the pool: every tensor equals ``get_tensor``'s, in file
    order, each its own array (a tied copy too); holding the first tensor leaves most of a
    large file unread; an abandoned loop stops decoding."""
    rng = np.random.default_rng(5)
    spec = []
    for k in range(40):  # 40 tensors of 512 KiB: several per decode window, 20 MiB in all
        w = (rng.standard_normal(1 << 17) * 0.02).astype(np.float32)
        spec.append((f"w{k:02d}", "F32", [1 << 17], w.tobytes()))
    spec.append(("tied", "F32", [1 << 17], spec[0][3]))  # stored once (a duplicate segment)
    spec.append(("empty", "F32", [0], b""))
    spec.append(("ids", "I64", [3], np.arange(3, dtype=np.int64).tobytes()))
    src = tmp_path / "many.safetensors"
    src.write_bytes(edgecases.safetensors_bytes(spec))
    zm = tmp_path / "many.safetensors.zm"
    zipmodel.compress_file(src, zm, chunk_size=128 << 10, level="fast")
    with zipmodel.open(zm, threads=threads) as f:
        want = {k: f.get_tensor(k) for k in f}
    with zipmodel.open(zm, threads=threads) as f:
        got = list(f.items())
        assert [k for k, _ in got] == list(want)
        for k, a in got:
            assert a.dtype == want[k].dtype and a.shape == want[k].shape, k
            assert a.tobytes() == want[k].tobytes(), k
        assert not np.shares_memory(dict(got)["tied"], dict(got)["w00"])
    size = zm.stat().st_size
    with zipmodel.open(zm, threads=threads) as f:
        it = f.items()
        name, first = next(it)
        assert name == "w00"
        if threads > 1:  # it reads ahead (the workers run on while the loop body does)
            deadline = time.monotonic() + 20
            while f.bytes_read <= 3 * first.nbytes and time.monotonic() < deadline:
                time.sleep(0.01)
            assert f.bytes_read > 3 * first.nbytes
        # ... but bounded: the window (2 x threads batches of ~1 MiB, one being formed, one
        # being yielded) and the index, not the whole file
        assert f.bytes_read < (2 * threads + 3) * (1 << 20) + (64 << 10) < size
        it.close()  # abandon: pending chunks are cancelled or finish, nothing hangs
        assert f.bytes_read < size


def test_special_values_survive_get_tensor(tmp_path):
    p = tmp_path / "s.safetensors"
    p.write_bytes(EDGE["special_values.safetensors"])
    zipmodel.compress_file(p)
    with zipmodel.open(str(p) + ".zm") as f:
        assert f.get_tensor("f32").view(np.uint32).tolist() == edgecases.SPECIAL_F32
        assert f.get_tensor("bf16").view(np.uint16).tolist() == edgecases.SPECIAL_BF16
        assert f.get_tensor("f16").view(np.uint16).tolist() == edgecases.SPECIAL_F16


def test_empty_and_scalar_tensors(tmp_path):
    p = tmp_path / "e.safetensors"
    p.write_bytes(EDGE["empty_and_scalar.safetensors"])
    zipmodel.compress_file(p)
    with zipmodel.open(str(p) + ".zm") as f:
        assert f.get_tensor("empty").shape == (0,)
        assert f.get_tensor("empty2d").shape == (3, 0)
        s = f.get_tensor("scalar")
        assert s.shape == () and s.dtype == np.float32 and float(s) == pytest.approx(4.6052)


def test_dtype_hint_makes_one_tensor(tmp_path):
    p = tmp_path / "weights.bin"
    p.write_bytes(np.arange(1001, dtype=np.float16).tobytes() + b"x")
    rep = zipmodel.compress_file(p, dtype="f16")
    assert rep.summary.source_format == "raw"
    with zipmodel.open(rep.output) as f:
        assert f.keys() == ["data"]
        assert f.get_tensor("data").tolist() == list(range(1001))
    with pytest.raises(ValueError, match="unknown dtype"):
        zipmodel.compress_file(p, tmp_path / "o.zm", dtype="f13")


def test_outputs_are_atomic_and_not_overwritten(model, tmp_path):
    rep = zipmodel.compress_file(model)
    with pytest.raises(OutputExistsError, match="already exists"):
        zipmodel.compress_file(model)
    zipmodel.compress_file(model, force=True)
    out = tmp_path / "restored.safetensors"
    zipmodel.decompress_file(rep.output, out)
    with pytest.raises(OutputExistsError):
        zipmodel.decompress_file(rep.output, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.safetensors",
        "model.safetensors.zm",
        "restored.safetensors",
    ]


def test_failed_decompress_leaves_nothing(model, tmp_path):
    rep = zipmodel.compress_file(model)
    blob = bytearray(Path(rep.output).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    bad = tmp_path / "bad.safetensors.zm"
    bad.write_bytes(bytes(blob))
    with pytest.raises(ZipmodelError):
        zipmodel.decompress_file(bad)
    assert not (tmp_path / "bad.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], (
        "temporary file left behind"
    )


def test_interrupt_leaves_nothing(model, tmp_path):
    def boom(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zipmodel.compress_file(model, tmp_path / "x.zm", progress=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ZipmodelError, match="no such file") as e:
        zipmodel.compress_file(tmp_path / "missing.safetensors")
    assert e.value.path.endswith("missing.safetensors")
    with pytest.raises(ZipmodelError, match=r"does not end in \.zm"):
        zipmodel.decompress_file(tmp_path / "x.bin")
    notzm = tmp_path / "x.zm"
    notzm.write_bytes(b"hello")
    with pytest.raises(zipmodel.FormatError, match="not a zipmodel container"):
        zipmodel.decompress_file(notzm)


def test_same_file_refused(model):
    with pytest.raises(ZipmodelError, match="same file"):
        zipmodel.compress_file(model, model, force=True)


def test_default_output_names(tmp_path):
    assert default_output("a/b.safetensors", decompress=False).name == "b.safetensors.zm"
    assert default_output("a/b.safetensors.zm", decompress=True).name == "b.safetensors"


def test_bad_options():
    with pytest.raises(ValueError, match="chunk size"):
        compress_bytes(b"abc", chunk_size=10)
    with pytest.raises(ValueError, match="unknown level"):
        compress_bytes(b"abc", level="ultra")


def test_source_release_keeps_bytes_valid(tmp_path):
    """Dropping a mapped source's pages (bounded RSS) never changes what is read."""
    from zipmodel._io import Source

    p = tmp_path / "blob.bin"
    data = np.random.default_rng(5).integers(0, 256, 3 * 4096 + 123, dtype=np.uint8)
    p.write_bytes(data.tobytes())
    with Source.open(p) as src:
        src.RELEASE_MIN = 0  # (small files keep their pages; force the release path)
        before = src.data.copy()
        src.release(100, 5000)  # unaligned range: whole pages around it are dropped
        src.release(0, src.size)
        src.release(src.size - 10, 1 << 20)  # past the end: clipped
        assert np.array_equal(src.data, before)
    Source.from_bytes(b"abc").release(0, 3)  # in-memory: a no-op
