"""PyTorch checkpoint reader: zip and legacy layouts, tensor views, and hostile pickles.

Files are made with torch where it is installed; the hostile files are built by hand, and
no test unpickles anything except the one that proves a payload is live.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from workbudget import WorkBudget

from zipmodel.api import decompress_bytes
from zipmodel.pipeline import compress_layout
from zipmodel.readers.base import TENSOR, check_tiling
from zipmodel.readers.torch import (
    LEGACY_MAGIC,
    TorchFormatError,
    looks_like_torch,
    read_torch,
)

FLOATS = {"F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2"}


def arr(b: bytes) -> np.ndarray:
    return np.frombuffer(b, np.uint8)


def roundtrip(data: bytes, layout) -> None:
    out = io.BytesIO()
    compress_layout(arr(data), layout, out, source_name="x")
    assert decompress_bytes(out.getvalue()) == data


def layout_ok(data: bytes):
    """read_torch's result must be a tiling layout or a TorchFormatError, nothing else."""
    try:
        layout = read_torch(arr(data))
    except TorchFormatError:
        return None
    assert check_tiling(layout.segments, len(data)) is None
    return layout


# ---------------------------------------------------------------------------------------
# Files made by torch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _flat(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, obj


def _dtype_name(torch, dt) -> str:
    return {
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.float64: "F64",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.int16: "I16",
        torch.int8: "I8",
        torch.uint8: "U8",
        torch.bool: "BOOL",
        torch.float8_e4m3fn: "F8_E4M3",
        torch.float8_e5m2: "F8_E5M2",
        torch.uint16: "U16",
    }[dt]


_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _view_bits(data: bytes, layout, name: str) -> np.ndarray:
    """The tensor ``name`` rebuilt from the layout alone, as unsigned ints of its width."""
    meta = layout.metadata["torch"]
    t = meta["tensors"][name]
    st = meta["storages"][t["storage"]]
    width = {"BOOL": 1, "I8": 1, "U8": 1, "F8_E4M3": 1, "F8_E5M2": 1}.get(t["dtype"])
    width = width or {"F16": 2, "BF16": 2, "I16": 2, "U16": 2, "F32": 4, "I32": 4}.get(
        t["dtype"], 8
    )
    if st["segment"] is None:
        storage = np.zeros(0, _BITS[width])
    else:
        (seg,) = [s for s in layout.segments if s.kind == TENSOR and s.name == st["segment"]]
        storage = np.frombuffer(data[seg.offset : seg.end], _BITS[width])
    if not all(t["shape"]):
        return np.zeros(t["shape"], _BITS[width])
    return np.lib.stride_tricks.as_strided(
        storage[t["offset"] :],
        shape=t["shape"],
        strides=[s * width for s in t["stride"]],
        writeable=False,
    )


def check_against_torch(torch, path: Path, layout, data: bytes) -> None:
    """Every tensor torch.load sees is in the metadata with the same view and bytes."""
    assert check_tiling(layout.segments, len(data)) is None
    loaded = dict(_flat(torch.load(path, weights_only=True)))
    meta = layout.metadata["torch"]
    assert set(meta["tensors"]) == set(loaded)
    for name, t in loaded.items():
        m = meta["tensors"][name]
        assert m["shape"] == list(t.shape), name
        assert m["stride"] == list(t.stride()), name
        assert m["offset"] == t.storage_offset(), name
        assert m["dtype"] == _dtype_name(torch, t.dtype), name
        st = meta["storages"][m["storage"]]
        assert st["nbytes"] == t.untyped_storage().nbytes(), name
        want = t.contiguous().view(
            {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
        )
        got = _view_bits(data, layout, name)
        assert got.tobytes() == want.numpy().tobytes(), name
    # storages shared in the file are shared after torch.load, and the other way round
    names = sorted(loaded)
    for a in names:
        for b in names:
            same_file = meta["tensors"][a]["storage"] == meta["tensors"][b]["storage"]
            same_torch = (
                loaded[a].untyped_storage().data_ptr() == loaded[b].untyped_storage().data_ptr()
            )
            assert same_file == same_torch or loaded[a].numel() == 0, (a, b)
    # each storage with bytes is one tensor segment of its dtype and element count
    for st in meta["storages"].values():
        if st["segment"] is None:
            continue
        (seg,) = [s for s in layout.tensors() if s.name == st["segment"]]
        assert (seg.dtype, seg.shape, seg.size) == (st["dtype"], (st["numel"],), st["nbytes"])


def _state(torch):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 5, generator=g)
    emb = torch.randn(10, 4, generator=g).to(torch.bfloat16)
    return {
        "w": w,
        "w_t": w.t(),  # transpose: same storage, other strides
        "w_rows": w[2:4],  # slice: storage offset 10
        "w_col": w[:, 1],  # strided column
        "emb.weight": emb,
        "head.weight": emb,  # tied: the same tensor under two names
        "head_view": emb[3:],  # another tensor on the tied storage
        "half": torch.randn(7, generator=g).half(),
        "double": torch.randn(3, generator=g).double(),
        "steps": torch.tensor(12345),  # 0-d int64
        "scale": torch.tensor(0.5),  # 0-d float
        "empty": torch.empty(0, 3),
        "ids": torch.arange(-4, 4, dtype=torch.int8),
        "mask": torch.tensor([True, False, True]),
        "f8": torch.randn(8, generator=g).to(torch.float8_e4m3fn),
        "nested": {"inner": {"b": torch.ones(2, dtype=torch.int32)}, "c": torch.zeros(1)},
    }


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_state_dict_layout(torch, tmp_path, zip_format):
    p = tmp_path / "sd.pt"
    state = _state(torch)
    if not zip_format:
        # torch 2.13 writes legacy float8 tensors on an UntypedStorage it cannot load back
        del state["f8"]
    torch.save(state, p, _use_new_zipfile_serialization=zip_format)
    data = p.read_bytes()
    assert looks_like_torch(arr(data))
    layout = read_torch(arr(data))
    assert layout.format == ("torch-zip" if zip_format else "torch-legacy")
    check_against_torch(torch, p, layout, data)
    meta = layout.metadata["torch"]
    assert meta["tensors"]["w_rows"]["offset"] == 10
    assert meta["tensors"]["w_col"]["stride"] == [5]
    assert meta["tensors"]["emb.weight"]["storage"] == meta["tensors"]["head.weight"]["storage"]
    dtypes = {s.dtype for s in layout.tensors()}
    assert {"F32", "BF16", "F16", "F64", "I64", "I8", "BOOL", "I32"} <= dtypes
    assert ("F8_E4M3" in dtypes) == zip_format
    if zip_format:
        names = {s.name for s in layout.tensors()}
        assert all(n.startswith("sd/data/") for n in names)
    roundtrip(data, layout)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_module_state_dict(torch, tmp_path, zip_format):
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Embedding(16, 8), nn.LayerNorm(8), nn.Linear(8, 16), nn.BatchNorm1d(16)
    )
    model[2].weight = model[0].weight  # tie the output projection to the embedding
    p = tmp_path / "model.bin"
    torch.save(model.state_dict(), p, _use_new_zipfile_serialization=zip_format)
    data = p.read_bytes()
    layout = read_torch(arr(data))
    check_against_torch(torch, p, layout, data)
    assert set(layout.metadata["torch"]["tensors"]) == set(model.state_dict())
    roundtrip(data, layout)


def test_whole_module_names(torch, tmp_path):
    """torch.save(model) pickles module objects: names still come out as state-dict keys."""
    nn = torch.nn
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    p = tmp_path / "whole.pt"
    torch.save(model, p)
    layout = read_torch(arr(p.read_bytes()))
    tensors = layout.metadata["torch"]["tensors"]
    assert set(tensors) == set(model.state_dict())
    assert tensors["2.0.weight"]["shape"] == [2, 4]
    assert tensors["0.weight"].get("kind") == "parameter"


def test_top_level_tensor_and_list(torch, tmp_path):
    p = tmp_path / "t.pt"
    torch.save([torch.ones(3), (torch.zeros(2, dtype=torch.float16),)], p)
    layout = read_torch(arr(p.read_bytes()))
    assert set(layout.metadata["torch"]["tensors"]) == {"0", "1.0"}
    torch.save(torch.arange(4.0), p)
    layout = read_torch(arr(p.read_bytes()))
    assert list(layout.metadata["torch"]["tensors"]) == ["tensor"]


def test_sniff(torch, tmp_path):
    assert not looks_like_torch(arr(b""))
    assert not looks_like_torch(arr(b"\x80\x02K\x01."))  # a pickle, not torch's magic
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/readme.txt", "hello")
    assert not looks_like_torch(arr(buf.getvalue()))  # a zip without data.pkl
    import edgecases

    st = edgecases.safetensors_bytes([("x", "F32", [2], b"\x00" * 8)])
    assert not looks_like_torch(arr(st))
    with pytest.raises(TorchFormatError):
        read_torch(arr(st))


# ---------------------------------------------------------------------------------------
# Real checkpoints


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("name", "fmt"), [("english_g2.pth", "torch-zip"), ("craft_mlt_25k.pth", "torch-legacy")]
)
def test_corpus(corpus, name, fmt):
    p = corpus / name
    data = np.fromfile(p, np.uint8)
    # The pickle is read, the tensor data (15 and 83 MB) never scanned or copied: ~450 calls
    # in zipmodel code per tensor (english_g2: 20k for 44, craft: 65k for 154) and under
    # 400 KB allocated, measured; a per-byte pass would be millions.
    with WorkBudget(calls=2_000_000, peak_bytes=16 << 20) as w:
        layout = read_torch(data)
    assert w.calls <= 2_000 * len(layout.tensors()) + 20_000, w.calls
    assert layout.format == fmt
    assert check_tiling(layout.segments, data.size) is None
    f32 = sum(s.size for s in layout.tensors() if s.dtype == "F32")
    assert f32 / data.size > 0.99  # english_g2: 0.999, craft: 0.9996
    meta = layout.metadata["torch"]
    torch = pytest.importorskip("torch")
    loaded = dict(_flat(torch.load(p, weights_only=True, map_location="cpu")))
    assert set(meta["tensors"]) == set(loaded)
    for k, t in loaded.items():
        m = meta["tensors"][k]
        assert (m["shape"], m["stride"], m["offset"]) == (
            list(t.shape),
            list(t.stride()),
            t.storage_offset(),
        )
    if name == "english_g2.pth":
        roundtrip(data.tobytes(), layout)


# ---------------------------------------------------------------------------------------
# Hostile files: nothing runs, nothing crashes


def _payloads(marker: Path) -> list[bytes]:
    m = str(marker)
    code = f"__import__('pathlib').Path({m!r}).write_text('pwned')"
    return [
        # GLOBAL os system + REDUCE (what pickle.dumps of a __reduce__ exploit writes)
        b"\x80\x02cos\nsystem\nX"
        + struct.pack("<I", len(f"touch {m}"))
        + f"touch {m}".encode()
        + b"\x85R.",
        # builtins.exec / builtins.eval
        b"\x80\x02cbuiltins\nexec\nX" + struct.pack("<I", len(code)) + code.encode() + b"\x85R.",
        b"\x80\x02cbuiltins\neval\nX" + struct.pack("<I", len(code)) + code.encode() + b"\x85R.",
        # protocol 4 STACK_GLOBAL + BUILD with __setstate__-style state, INST, OBJ
        b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93X"
        + struct.pack("<I", len(code))
        + code.encode()
        + b"\x85R.",
        b"(X" + struct.pack("<I", len(code)) + code.encode() + b"ibuiltins\nexec\n.",
        b"\x80\x02(cbuiltins\nexec\nX" + struct.pack("<I", len(code)) + code.encode() + b"o.",
    ]


def _evil_dict(payload: bytes) -> bytes:
    """{'w': _rebuild_tensor_v2(storage '0' F32×4, ...), 'x': <payload object>} as one pickle."""
    body = payload[:-1]  # drop STOP: the payload object goes on the stack
    if body.startswith(b"\x80"):
        body = body[2:]
    tensor = (
        b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
        b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89"
        b"ccollections\nOrderedDict\n)Rtq\x00R"
    )
    return b"\x80\x02}(X\x01\x00\x00\x00w" + tensor + b"X\x01\x00\x00\x00x" + body + b"u."


def _zip(entries: dict[str, bytes], method=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return buf.getvalue()


def _legacy(obj_pickle: bytes, keys: list[str], storages: list[bytes], unit=4) -> bytes:
    out = pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
    out += pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
    out += obj_pickle + pickle.dumps(keys, protocol=2)
    for s in storages:
        out += struct.pack("<q", len(s) // unit) + s
    return out


def test_payloads_are_live(tmp_path):
    """The exec payload really runs under pickle.loads, so the tests below prove something."""
    marker = tmp_path / "live"
    pickle.loads(_payloads(marker)[1])
    assert marker.exists()


@pytest.mark.parametrize("which", range(6))
def test_malicious_pickle_does_not_run(tmp_path, which):
    marker = tmp_path / "pwned"
    payload = _payloads(marker)[which]
    store = np.arange(4, dtype=np.float32).tobytes()
    files = {
        "zip": _zip({"archive/data.pkl": _evil_dict(payload), "archive/data/0": store}),
        "zip-bare": _zip({"archive/data.pkl": payload}),
        "legacy": _legacy(_evil_dict(payload), ["0"], [store]),
        "legacy-bare": _legacy(payload, [], []),
    }
    for kind, data in files.items():
        assert looks_like_torch(arr(data)), kind
        layout = layout_ok(data)
        assert not marker.exists(), kind
        if kind in ("zip", "legacy"):
            assert layout is not None, kind
            (seg,) = layout.tensors()
            assert (seg.dtype, seg.shape, seg.size) == ("F32", (4,), 16)
            assert layout.metadata["torch"]["tensors"]["w"]["shape"] == [4]
            roundtrip(data, layout)
            assert not marker.exists(), kind


def test_zipfile_written_archive(tmp_path):
    """Local headers with sizes (no data descriptors), as Python's zipfile writes them."""
    store = np.arange(4, dtype=np.float32).tobytes()
    pkl = _evil_dict(b"\x80\x02N.")
    data = _zip({"archive/data.pkl": pkl, "archive/data/0": store, "archive/version": b"3\n"})
    layout = read_torch(arr(data))
    (seg,) = layout.tensors()
    assert data[seg.offset : seg.end] == store and seg.name == "archive/data/0"


def test_bad_zips_rejected():
    store = np.arange(4, dtype=np.float32).tobytes()
    pkl = _evil_dict(b"\x80\x02N.")
    # compressed entries
    data = _zip({"archive/data.pkl": pkl, "archive/data/0": store}, zipfile.ZIP_DEFLATED)
    with pytest.raises(TorchFormatError, match="compressed"):
        read_torch(arr(data))
    # a storage the pickle names but the archive lacks
    with pytest.raises(TorchFormatError, match="no zip entry"):
        read_torch(arr(_zip({"archive/data.pkl": pkl})))
    # numel × itemsize disagrees with the entry (a huge fake numel)
    huge = pkl.replace(b"K\x04tQ", b"\x8a\x08" + (1 << 62).to_bytes(8, "little") + b"tQ")
    with pytest.raises(TorchFormatError, match="needs"):
        read_torch(arr(_zip({"archive/data.pkl": huge, "archive/data/0": store})))
    # two central-directory entries pointing at one local header: overlap / mismatch
    good = _zip({"archive/data.pkl": pkl, "archive/data/0": store})
    cd = good.rfind(b"PK\x01\x02")
    bad = bytearray(good)
    bad[cd + 42 : cd + 46] = struct.pack("<I", 0)
    with pytest.raises(TorchFormatError):
        read_torch(arr(bytes(bad)))
    # an entry whose size runs past the end of the file
    bad = bytearray(good)
    bad[cd + 20 : cd + 28] = struct.pack("<II", 10**9, 10**9)
    with pytest.raises(TorchFormatError):
        read_torch(arr(bytes(bad)))


def test_bad_legacy_rejected():
    store = np.arange(4, dtype=np.float32).tobytes()
    pkl = _evil_dict(b"\x80\x02N.")
    assert read_torch(arr(_legacy(pkl, ["0"], [store]))).format == "torch-legacy"
    with pytest.raises(TorchFormatError, match="no tensor uses it"):
        read_torch(arr(_legacy(pkl, ["0", "1"], [store, store])))
    data = bytearray(_legacy(pkl, ["0"], [store]))
    count = len(data) - 16 - 8
    data[count : count + 8] = struct.pack("<q", 1 << 62)  # a huge element count
    with pytest.raises(TorchFormatError, match="elements"):
        read_torch(arr(bytes(data)))
    huge = pkl.replace(b"K\x04tQ", b"\x8a\x08" + (1 << 62).to_bytes(8, "little") + b"tQ")
    data = bytearray(_legacy(huge, ["0"], [store]))
    count = len(data) - 16 - 8
    data[count : count + 8] = struct.pack("<q", 1 << 62)
    with pytest.raises(TorchFormatError, match="past the end"):
        read_torch(arr(bytes(data)))


def _deep_pickles(n: int = 50_000) -> list[bytes]:
    """``n`` deep: far past Python's recursion limit (genops reads ~1M opcodes a second)."""
    return [
        b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b".",  # lists nested 50k deep
        b"\x80\x02" + b"(" * n + b")" + b"t" * n + b".",  # tuples nested via MARK
        b"\x80\x02" + b"}" * n + b"K\x01" + b"s" * 0 + b".",  # many dicts, one left on top
        b"\x80\x02]q\x00h\x00a.",  # a list containing itself
        # a DAG with 2**60 paths: a0 = [t, t]; a_i = [a_(i-1), a_(i-1)]
        b"\x80\x02]q\x00(K\x01K\x01e"
        + b"".join(
            b"](h" + bytes([i]) + b"h" + bytes([i]) + b"eq" + bytes([i + 1]) for i in range(60)
        )
        + b".",
        b"\x80\x02h\x05.",  # memo read before write
        b"\x80\x02t.",  # TUPLE without MARK
        b"\x80\x02X\xff\xff\xff\x7f.",  # a string longer than the file
        b"\x80\x02\x8e" + struct.pack("<Q", 1 << 62) + b".",  # BINBYTES8 of 4 EiB
        b"\x80\x02\xff.",  # unknown opcode
        b"\x80\x02K\x01",  # no STOP
    ]


def _in_containers(p: bytes) -> list[bytes]:
    store = np.arange(4, dtype=np.float32).tobytes()
    return [
        _zip({"archive/data.pkl": p, "archive/data/0": store}),
        _legacy(p, [], []),
        _legacy(p, ["0"], [store]),
    ]


def test_hostile_structures_are_clean():
    for p in _deep_pickles():
        for data in _in_containers(p):
            layout_ok(data)


def test_hostile_structures_cost_work_linear_in_their_size():
    """No walk explodes (the 2**60-path DAG, self-reference, deep nesting): the calls made
    in zipmodel code stay linear in the pickle's bytes. Measured: about 22 calls per byte
    for the three containers of a deep one, 12k in all for the DAG. Counted on 5,000-deep
    pickles (a profiled 50,000 takes 20 s; those are parsed above), where a quadratic walk
    would make 25 million calls."""
    for p in _deep_pickles(5_000):
        with WorkBudget(calls=100 * len(p) + 50_000):
            for data in _in_containers(p):
                layout_ok(data)


def test_deep_names_are_cut_not_crashed():
    """A tensor 1000 dicts deep: the walk stops at its depth limit, the layout survives."""
    pkl = _evil_dict(b"\x80\x02N.")
    deep = b"\x80\x02" + b"}(X\x01\x00\x00\x00k" * 1000 + pkl[2:-1] + b"u" * 1000 + b"."
    store = np.arange(4, dtype=np.float32).tobytes()
    layout = read_torch(arr(_zip({"archive/data.pkl": deep, "archive/data/0": store})))
    assert len(layout.tensors()) == 1
    assert layout.metadata["torch"].get("names_truncated")


def test_mutations_never_crash(torch, tmp_path):
    """Random byte damage and truncation: a tiling layout or TorchFormatError, quickly."""
    p = tmp_path / "m.pt"
    torch.save({"a": torch.randn(8, 8), "b": torch.arange(5)}, p)
    q = tmp_path / "l.pt"
    torch.save(
        {"a": torch.randn(8, 8), "b": torch.arange(5)}, q, _use_new_zipfile_serialization=False
    )
    rng = np.random.default_rng(1)

    def parse(data: bytes) -> None:  # quickly: at most 1,438 calls (measured) on ~1.8 KB
        with WorkBudget(calls=20_000, peak_bytes=4 << 20):
            layout_ok(data)

    for src in (p.read_bytes(), q.read_bytes()):
        for cut in range(0, len(src), max(1, len(src) // 60)):
            parse(src[:cut])
        for _ in range(150):
            b = bytearray(src)
            for i in rng.integers(0, len(b), rng.integers(1, 4)):
                b[i] = int(rng.integers(0, 256))
            parse(bytes(b))
