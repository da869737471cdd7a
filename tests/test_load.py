"""``zipmodel.load``: every tensor, bit for bit as the source holds it, in numpy or torch."""

from __future__ import annotations

import itertools
import sys

import ml_dtypes
import numpy as np
import pytest

import edgecases
import zipmodel
from zipmodel.container.reader import ContainerReader
from zipmodel.errors import CorruptDataError, MissingDependencyError, UnsupportedError
from zipmodel.readers import read_layout

NAN_F32 = [0x7FC00001, 0xFFBFFFFF, 0x7F800001, 0x80000000]  # payloads torch/numpy must keep
NAN_BF16 = [0x7FC1, 0xFF81, 0x7F81, 0x8000]


def _weights(rng, shape, dtype):
    w = (rng.standard_normal(shape) * 0.02).astype(np.float32)
    if dtype == "BF16":
        return (w.view(np.uint32) >> 16).astype(np.uint16)
    return w.astype({"F16": np.float16, "F32": np.float32}[dtype])


def _spec(seed: int = 0) -> list[tuple[str, str, list[int], bytes]]:
    """(name, dtype, shape, bytes) of a small checkpoint with every case load must get right."""
    rng = np.random.default_rng(seed)
    f32 = _weights(rng, (48, 40), "F32").view(np.uint32)
    f32.reshape(-1)[: len(NAN_F32)] = NAN_F32
    bf16 = _weights(rng, (512, 96), "BF16")  # 96 KiB: several chunks at 16 KiB
    bf16.reshape(-1)[: len(NAN_BF16)] = NAN_BF16
    return [
        ("embed.weight", "BF16", [512, 96], bf16.tobytes()),
        ("layer.0.weight", "F32", [48, 40], f32.tobytes()),
        ("layer.0.half", "F16", [33, 7], _weights(rng, (33, 7), "F16").tobytes()),
        ("position_ids", "I64", [1, 77], np.arange(77, dtype=np.int64).tobytes()),
        ("step", "I64", [], np.int64(-3).tobytes()),  # 0-d
        ("scale", "F32", [], np.float32(0.125).tobytes()),
        ("empty", "F32", [0], b""),
        ("empty2d", "BF16", [3, 0], b""),
        ("mask", "BOOL", [5], bytes([1, 0, 1, 1, 0])),
        ("codes", "I8", [9], np.arange(-4, 5, dtype=np.int8).tobytes()),
    ]


def _expected(dtype: str, shape, blob: bytes) -> np.ndarray:
    from zipmodel.dtypes import numpy_dtype

    return np.frombuffer(blob, numpy_dtype(dtype)).reshape(shape)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A hand-built safetensors file (BF16 included) and its container, 16 KiB chunks."""
    d = tmp_path_factory.mktemp("load")
    src = d / "model.safetensors"
    src.write_bytes(edgecases.safetensors_bytes(_spec(), metadata={"format": "pt"}))
    zm = d / "model.safetensors.zm"
    zipmodel.compress_file(src, zm, chunk_size=16 << 10)
    return src, zm


def _same(a, b) -> bool:
    """Same dtype, shape and bytes (NaN payloads included)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("threads", [1, 2])
def test_numpy_is_bit_identical(checkpoint, threads):
    from safetensors.numpy import load_file

    src, zm = checkpoint
    got = zipmodel.load(zm, threads=threads)
    spec = _spec()
    assert list(got) == [name for name, *_ in spec]  # file order
    for name, dtype, shape, blob in spec:
        assert _same(got[name], _expected(dtype, shape, blob)), name
    assert got["embed.weight"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert got["step"].shape == () and int(got["step"]) == -3
    assert got["empty2d"].shape == (3, 0)
    ref = load_file(str(src))  # safetensors' numpy loader: every dtype it has
    for name, arr in ref.items():
        assert _same(got[name], arr), name
    assert all(a.flags.writeable and a.flags.c_contiguous for a in got.values())


def test_tensors_are_aligned_disjoint_slices(checkpoint):
    """Tensors share blocks of memory (``loading._tensor_memory``): each starts on a 64-byte
    boundary, no two overlap, writing one leaves the others alone, and they outlive each
    other."""
    _, zm = checkpoint
    got = zipmodel.load(zm, threads=2)
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes, k) for k, a in got.items() if a.nbytes)
    assert all(lo % 64 == 0 for lo, _, _ in spans)
    assert all(hi <= nxt for (_, hi, _), (nxt, _, _) in itertools.pairwise(spans))
    before = {k: a.tobytes() for k, a in got.items()}
    got["layer.0.weight"].view(np.uint8)[...] = 0xFF
    assert all(got[k].tobytes() == v for k, v in before.items() if k != "layer.0.weight")
    keep = got["embed.weight"]
    del got
    assert keep.tobytes() == before["embed.weight"]


def test_torch_tensors_own_their_storage(checkpoint):
    """Torch tensors are not views into one big tensor: each storage starts at the tensor
    (``storage_offset() == 0``), as ``torch.load`` gives, so ``as_strided`` offsets work."""
    pytest.importorskip("torch")
    _, zm = checkpoint
    got = zipmodel.load(zm, framework="torch", threads=2)
    for name, t in got.items():
        assert t.storage_offset() == 0, name
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size(), name


def test_numpy_from_bytes_and_file_object(checkpoint):
    _, zm = checkpoint
    want = zipmodel.load(zm)
    got = zipmodel.load(zm.read_bytes(), threads=2)
    assert all(_same(got[k], want[k]) for k in want)
    with open(zm, "rb") as f:
        got = zipmodel.load(f, threads=2)
    assert all(_same(got[k], want[k]) for k in want)


@pytest.mark.parametrize("threads", [1, 2])
def test_torch_is_bit_identical(tmp_path, threads):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    g = torch.Generator().manual_seed(0)
    f32 = torch.randn(64, 48, generator=g) * 0.02
    f32.view(torch.int32).view(-1)[:3] = torch.tensor([0x7FC00001, -0x00400001, 0x7F800001])
    state = {
        "w.bf16": (torch.randn(300, 64, generator=g) * 0.02).to(torch.bfloat16),
        "w.f16": torch.randn(17, 5, generator=g).half(),
        "w.f32": f32,
        "ids": torch.arange(-5, 100, dtype=torch.int64).reshape(3, 35),
        "scalar": torch.tensor(2.5),
        "empty": torch.empty(0, 4, dtype=torch.bfloat16),
        "mask": torch.tensor([True, False, True]),
        "f8": torch.randn(32, generator=g).to(torch.float8_e4m3fn),
    }
    src = tmp_path / "t.safetensors"
    save_file(state, src)
    zm = tmp_path / "t.safetensors.zm"
    zipmodel.compress_file(src, zm, chunk_size=8 << 10)
    got = zipmodel.load(zm, framework="torch", threads=threads)
    ref = load_file(src)
    assert set(got) == set(ref)
    for name, want in ref.items():
        t = got[name]
        assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
        assert (t.dtype, t.shape) == (want.dtype, want.shape), name
        assert _torch_bytes(torch, t) == _torch_bytes(torch, want), name
    on_cpu = zipmodel.load(zm, "cpu", threads=threads)  # a device means torch, as safetensors
    assert on_cpu.keys() == got.keys()
    for name, t in on_cpu.items():
        assert isinstance(t, torch.Tensor) and t.device.type == "cpu"
        assert _torch_bytes(torch, t) == _torch_bytes(torch, got[name]), name


def _torch_bytes(torch, t) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def test_duplicates_share_memory_and_keep_their_dtype(tmp_path):
    rng = np.random.default_rng(1)
    emb = (rng.standard_normal((200, 32)) * 0.02).astype(np.float32)
    zeros = bytes(8192)
    spec = [
        ("embed.weight", "F32", [200, 32], emb.tobytes()),
        ("zeros.f32", "F32", [2048], zeros),
        ("lm_head.weight", "F32", [200, 32], emb.tobytes()),  # tied: stored once
        ("zeros.i64", "I64", [4, 256], zeros),  # same bytes, another dtype and shape
    ]
    src = tmp_path / "tied.safetensors"
    src.write_bytes(edgecases.safetensors_bytes(spec))
    zm = tmp_path / "tied.safetensors.zm"
    zipmodel.compress_file(src, zm)
    with ContainerReader(zm) as r:  # the container really stores them once
        assert sum(e.dup_of is not None for e in r.index.segments) == 2
    got = zipmodel.load(zm, threads=2)
    for name, dtype, shape, blob in spec:
        assert _same(got[name], _expected(dtype, shape, blob)), name
    assert np.shares_memory(got["embed.weight"], got["lm_head.weight"])
    assert got["zeros.i64"].dtype == np.int64 and got["zeros.i64"].shape == (4, 256)
    torch = pytest.importorskip("torch")
    tt = zipmodel.load(zm, framework="torch")
    assert tt["zeros.i64"].dtype == torch.int64 and tt["zeros.f32"].dtype == torch.float32
    assert tt["embed.weight"].data_ptr() == tt["lm_head.weight"].data_ptr()
    assert torch.equal(tt["embed.weight"], torch.from_numpy(emb))


def test_unknown_and_quantized_dtypes_come_back_as_bytes(tmp_path):
    from test_gguf import MIXED, build

    data = build(MIXED)
    src = tmp_path / "m.gguf"
    src.write_bytes(data)
    zm = tmp_path / "m.gguf.zm"
    zipmodel.compress_file(src, zm, chunk_size=4096)
    got = zipmodel.load(zm)
    layout = read_layout(np.frombuffer(data, np.uint8))
    assert list(got) == [t.name for t in layout.tensors()]
    for t in layout.tensors():
        blob = data[t.offset : t.end]
        if t.dtype.startswith("GGUF_"):
            assert got[t.name].dtype == np.uint8 and got[t.name].shape == (t.size,)
            assert got[t.name].tobytes() == blob
        else:
            assert _same(got[t.name], _expected(t.dtype, t.shape, blob)), t.name
    p = tmp_path / "u.safetensors"
    p.write_bytes(edgecases.build()["unknown_dtype.safetensors"])
    zipmodel.compress_file(p)
    got = zipmodel.load(str(p) + ".zm")
    assert got["x"].dtype == np.uint8 and got["x"].tobytes() == b"abcde"


def test_torch_checkpoint_storages_match_torch_load(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(12, 10, generator=g)
    emb = torch.randn(40, 8, generator=g).to(torch.bfloat16)
    state = {
        "w": w,
        "w_t": w.t(),  # views on one storage
        "w_rows": w[3:5],
        "emb.weight": emb,
        "head.weight": emb,  # tied
        "steps": torch.tensor(7),
        "half": torch.randn(9, generator=g).half(),
    }
    src = tmp_path / "sd.pt"
    torch.save(state, src)
    zm = tmp_path / "sd.pt.zm"
    zipmodel.compress_file(src, zm)
    got = zipmodel.load(zm, framework="torch", threads=2, state_dict=False)
    with ContainerReader(zm) as r:
        meta = r.index.metadata["torch"]
    ref = torch.load(src, weights_only=True)
    for name, t in ref.items():  # rebuild each state-dict tensor from its storage's segment
        m = meta["tensors"][name]
        storage = got[meta["storages"][m["storage"]]["segment"]]
        assert storage.dtype == t.dtype, name
        view = storage.as_strided(m["shape"], m["stride"], m["offset"])
        assert _torch_bytes(torch, view) == _torch_bytes(torch, t), name
    # the default: the state dict itself, views sharing storages as torch.load's do
    sd = zipmodel.load(zm, framework="torch", threads=2)
    assert set(sd) == set(ref)
    for name, t in ref.items():
        assert sd[name].dtype == t.dtype and sd[name].shape == t.shape, name
        assert sd[name].stride() == t.stride(), name
        assert _torch_bytes(torch, sd[name]) == _torch_bytes(torch, t), name
    assert sd["emb.weight"].data_ptr() == sd["head.weight"].data_ptr()
    nd = zipmodel.load(zm)  # numpy: the same values
    for name, t in ref.items():
        assert nd[name].shape == tuple(t.shape), name
        assert nd[name].tobytes() == _torch_bytes(torch, t), name


def test_torch_views_outside_their_storage_are_refused():
    """The view table comes from the file: a view past its storage is an error, not a read."""
    from zipmodel.errors import FormatError
    from zipmodel.loading import _torch_state_dict

    storage = np.arange(10, dtype=np.float32)
    table = {"0": {"segment": "a/data/0", "dtype": "F32"}}
    ok = {"storage": "0", "offset": 2, "shape": [2, 3], "stride": [3, 1], "dtype": "F32"}
    got = _torch_state_dict(
        {"tensors": {"w": ok}, "storages": table}, {"a/data/0": storage}, None, "x"
    )
    assert got["w"].tolist() == [[2, 3, 4], [5, 6, 7]]
    for bad in (
        dict(ok, offset=5),  # 5 + 1 + 3 + 2 = 11 > 10
        dict(ok, stride=[6, 1]),  # 2 + 1 + 6 + 2 = 11
        dict(ok, stride=[-1, 1]),
        dict(ok, shape=[2]),  # rank differs from the strides
        dict(ok, dtype="F16"),  # not the storage's type
        dict(ok, storage="9"),
    ):
        with pytest.raises(FormatError):
            _torch_state_dict(
                {"tensors": {"w": bad}, "storages": table}, {"a/data/0": storage}, None, "x"
            )


def test_one_tensor_reads_a_small_part_of_the_file(tmp_path):
    rng = np.random.default_rng(2)
    spec = [
        ("big.weight", "BF16", [5120, 1024], _weights(rng, (5120, 1024), "BF16").tobytes()),
        ("small.bias", "F32", [64], _weights(rng, 64, "F32").tobytes()),
    ]
    src = tmp_path / "big.safetensors"
    src.write_bytes(edgecases.safetensors_bytes(spec))
    rep = zipmodel.compress_file(src, threads=2)
    assert rep.output_bytes > 5 << 20
    with zipmodel.open(rep.output) as f:
        assert _same(f.get_tensor("small.bias"), _expected(*spec[1][1:]))
        assert f.bytes_read < 1 << 20, f.bytes_read


def test_corrupt_chunk_fails(checkpoint, tmp_path):
    _, zm = checkpoint
    data = bytearray(zm.read_bytes())
    with ContainerReader(zm) as r:
        row = r.index.chunks[r.index.segments[1].first_chunk]  # embed.weight's first chunk
        data[int(row["frame_offset"]) + int(row["frame_size"]) // 2] ^= 0x40
    with pytest.raises(CorruptDataError):
        zipmodel.load(bytes(data))


def test_device_and_framework_errors(checkpoint, monkeypatch):
    _, zm = checkpoint
    with pytest.raises(ValueError, match="framework"):
        zipmodel.load(zm, framework="jax")
    with pytest.raises(ValueError, match="numpy arrays live on the CPU"):
        zipmodel.load(zm, "cuda", framework="numpy")
    with pytest.raises(ValueError, match="threads"):
        zipmodel.load(zm, threads=-1)
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    for kw in ({"framework": "torch"}, {"device": "cpu"}):
        with pytest.raises(MissingDependencyError, match="PyTorch") as e:
            zipmodel.load(zm, **kw)
        assert "zipmodel[torch]" in e.value.hint
    assert isinstance(zipmodel.load(zm)["embed.weight"], np.ndarray)


def test_cuda_without_a_gpu_is_a_clear_error(checkpoint):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    _, zm = checkpoint
    with pytest.raises(UnsupportedError, match="CUDA"):
        zipmodel.load(zm, "cuda")
    with pytest.raises(UnsupportedError, match="CUDA"):
        zipmodel.load(zm, "cuda:1", framework="torch")


def test_load_is_the_function_after_its_module_is_imported():
    import zipmodel.loading

    assert zipmodel.load is zipmodel.loading.load and "load" in zipmodel.__all__


def _st_file(path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))


def test_load_a_compressed_model_folder(tmp_path):
    """A sharded Hugging Face folder: ``load(folder.zm)`` gives every tensor of the shards
    the index names (a shard stored against another, one stored as a copy), not the
    ``pytorch_model.bin`` beside them nor the shard nobody names."""
    import json

    rng = np.random.default_rng(7)
    w = lambda *s: (rng.standard_normal(s) * 0.02).astype(np.float32)  # noqa: E731
    shared = w(64, 64)
    s1 = {"embed.weight": w(256, 64), "layers.0.weight": shared}
    s2 = {"layers.1.weight": shared.copy(), "layers.1.bias": w(64)}  # same bytes: stored once
    s3 = {"tiny": rng.integers(0, 256, 24, dtype=np.uint8)}  # does not compress: a copy
    src = tmp_path / "model"
    src.mkdir()
    names = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors"]
    names.append("model-00003-of-00003.safetensors")
    for name, t in zip(names, (s1, s2, s3)):
        _st_file(src / name, t)
    _st_file(src / "unlisted.safetensors", {"stray": w(4)})
    weight_map = {k: n for n, t in zip(names, (s1, s2, s3)) for k in t}
    (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (src / "config.json").write_text("{}")
    (src / "pytorch_model.bin").write_bytes(b"not read: safetensors weights are there")
    res = zipmodel.compress_dir(src, threads=2)
    stored = {e.path: e for e in res.files}
    assert stored[names[1]].base == {"path": names[0]}  # stored against the first shard
    assert stored[names[2]].stored == "copy"
    from safetensors.numpy import load_file

    want = {k: v for n in names for k, v in load_file(str(src / n)).items()}  # file order
    for threads in (1, 2):
        got = zipmodel.load(res.output, threads=threads)
        assert list(got) == list(want)
        for k, v in want.items():
            assert _same(got[k], v), k
    torch = pytest.importorskip("torch")
    got = zipmodel.load(res.output, framework="torch")
    assert got["layers.1.bias"].dtype == torch.float32
    assert got["embed.weight"].numpy().tobytes() == s1["embed.weight"].tobytes()


def test_load_folder_errors(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(zipmodel.ZipmodelError, match="not a compressed model folder"):
        zipmodel.load(plain)
    src = tmp_path / "twice"
    src.mkdir()
    _st_file(src / "a.safetensors", {"w": np.ones(8, np.float32)})
    _st_file(src / "b.safetensors", {"w": np.zeros(8, np.float32)})
    res = zipmodel.compress_dir(src)
    with pytest.raises(
        zipmodel.FormatError, match=r"'w' is in both a\.safetensors and b\.safetensors"
    ):
        zipmodel.load(res.output)
    with pytest.raises(ValueError, match="context"):
        zipmodel.load(res.output, context=object())


def test_load_folder_of_pytorch_weights(tmp_path):
    """No safetensors: the PyTorch weight files, not the training state beside them."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(3)
    state = {"w": torch.randn(32, 16, generator=g), "b": torch.randn(16, generator=g)}
    src = tmp_path / "pt"
    src.mkdir()
    torch.save(state, src / "pytorch_model.bin")
    torch.save({"step": torch.tensor(5), "lr": torch.tensor(0.1)}, src / "training_args.bin")
    torch.save({"state": {"m": torch.zeros(4)}}, src / "optimizer.pt")
    res = zipmodel.compress_dir(src)
    got = zipmodel.load(res.output, framework="torch")
    assert set(got) == {"w", "b"}
    assert all(torch.equal(got[k], v) for k, v in state.items())
