"""Fine-tunes against their base: the delta stages, base models, and ``--base`` end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import load_file, save_file

import zipmodel
from zipmodel import api, folder
from zipmodel.cli import cli
from zipmodel.container.reader import ContainerReader
from zipmodel.errors import BaseMismatchError
from zipmodel.pipeline.deltas import choose_delta
from zipmodel.readers.base import TENSOR, Segment
from zipmodel.stages.delta import (
    DELTA_STAGES,
    SAME,
    delta_itemsize,
)
from zipmodel.stages.tensor import StageContext

EDGE_F32 = np.array(
    [
        0x00000000,  # +0
        0x80000000,  # -0
        0x7F800000,  # +inf
        0xFF800000,  # -inf
        0x7FC00000,  # quiet NaN
        0x7FA12345,  # signalling NaN with a payload
        0xFFFFFFFF,  # negative NaN, all payload bits
        0x00000001,  # smallest subnormal
        0x807FFFFF,  # largest negative subnormal
        0x3F800000,  # 1.0
        0x3F7FFFFF,  # just below 1.0 (crosses an exponent against 1.0)
        0x7F7FFFFF,  # max float
    ],
    np.uint32,
)


def _seg(dtype: str, shape: tuple[int, ...], size: int, name: str = "w") -> Segment:
    return Segment(TENSOR, 0, size, name, dtype, shape)


def _ctx(base: np.ndarray) -> StageContext:
    return StageContext(base=lambda seg: base if seg.size == base.size else None)


def _edge_pairs():
    """(dtype, tensor bytes, base bytes): every edge pattern against every other."""
    a = np.repeat(EDGE_F32, EDGE_F32.size)
    b = np.tile(EDGE_F32, EDGE_F32.size)
    yield "F32", a.view(np.uint8), b.view(np.uint8)
    hi_a, hi_b = (a >> 16).astype(np.uint16), (b >> 16).astype(np.uint16)  # the bf16 patterns
    yield "BF16", hi_a.view(np.uint8), hi_b.view(np.uint8)
    f16 = np.array([0, 0x8000, 0x7C00, 0xFC00, 0x7E01, 0xFFFF, 1, 0x83FF, 0x3C00], np.uint16)
    yield "F16", np.repeat(f16, f16.size).view(np.uint8), np.tile(f16, f16.size).view(np.uint8)
    i64 = np.array([0, -1, 2**63 - 1, -(2**63), 5], np.int64)
    yield "I64", np.repeat(i64, 5).view(np.uint8), np.tile(i64, 5).view(np.uint8)
    u8 = np.arange(256, dtype=np.uint8)
    yield "U8", np.repeat(u8, 256), np.tile(u8, 256)


@pytest.mark.parametrize("stage", sorted(DELTA_STAGES))
@pytest.mark.parametrize("case", list(_edge_pairs()), ids=lambda c: c[0])
def test_delta_round_trips_every_bit_pattern(stage, case):
    dtype, tensor, base = case
    seg = _seg(dtype, (tensor.size // delta_itemsize(_seg(dtype, (), tensor.size)),), tensor.size)
    st = DELTA_STAGES[stage]
    staged = st.encode(tensor, seg, _ctx(base))
    assert staged is not None
    (part,) = staged.parts
    assert part.dtype == dtype and part.data.size == tensor.size
    assert st.part_sizes(seg, staged.params) == [tensor.size]
    out = np.empty_like(tensor)
    st.decode([part.data], out, seg, staged.params, _ctx(base))
    assert np.array_equal(out, tensor)
    # elementwise: any whole-element range decodes on its own (as chunks do)
    item = delta_itemsize(seg)
    out2 = np.zeros_like(tensor)
    step = 7 * item
    for a in range(0, tensor.size, step):
        b = min(a + step, tensor.size)
        st.decode([part.data[a:b]], out2[a:b], seg, {}, _ctx(base), offset=a)
    assert np.array_equal(out2, tensor)


def test_sub_is_small_where_xor_crosses_an_exponent():
    # 1.0 against the float just below it: XOR flips 23 bits, the difference is one ulp
    t = np.array([0x3F800000], np.uint32).view(np.uint8)
    b = np.array([0x3F7FFFFF], np.uint32).view(np.uint8)
    seg = _seg("F32", (1,), 4)
    xor = DELTA_STAGES["xor"].encode(t, seg, _ctx(b)).parts[0].data.view(np.uint32)
    sub = DELTA_STAGES["sub"].encode(t, seg, _ctx(b)).parts[0].data.view(np.uint32)
    assert int(xor[0]) == 0x00FFFFFF
    assert int(sub[0]) == 2  # zigzag(+1)
    back = DELTA_STAGES["sub"].encode(b, seg, _ctx(t)).parts[0].data.view(np.uint32)
    assert int(back[0]) == 1  # zigzag(-1)


def test_no_base_tensor_means_no_delta():
    t = np.arange(64, dtype=np.float32).view(np.uint8)
    seg = _seg("F32", (64,), t.size)
    for stage in [*DELTA_STAGES.values(), SAME]:
        assert stage.encode(t, seg, StageContext()) is None
        assert stage.encode(t, seg, StageContext(base=lambda s: None)) is None
        # a base of another size is not a candidate either
        assert stage.encode(t, seg, StageContext(base=lambda s: np.zeros(8, np.uint8))) is None
    assert choose_delta(t, seg, StageContext()).stage is None


def test_delta_decode_without_base_fails_clearly():
    seg = _seg("F32", (4,), 16)
    with pytest.raises(zipmodel.FormatError, match="stored against the base tensor 'w'"):
        DELTA_STAGES["xor"].decode(
            [np.zeros(16, np.uint8)], np.empty(16, np.uint8), seg, {}, StageContext()
        )
    with pytest.raises(ValueError, match="no parameters"):
        DELTA_STAGES["sub"].part_sizes(seg, {"x": 1})


def _finetune_pair(n: int, *, scale: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal(n) * 0.05).astype(np.float32)
    ft = (base + rng.standard_normal(n).astype(np.float32) * scale).astype(np.float32)
    return ft, base


def test_choose_delta_picks_a_delta_for_a_light_finetune():
    ft, base = _finetune_pair(100_000, scale=1e-6)
    seg = _seg("F32", (200, 500), ft.nbytes)
    c = choose_delta(ft.view(np.uint8), seg, _ctx(base.view(np.uint8)), chunk_size=64 << 10)
    assert c.stage is not None and c.stage.name in ("xor", "sub")
    assert c.sizes[c.stage.name] < 0.8 * c.sizes["standalone"]
    assert c.sampled == ft.nbytes  # under SAMPLE_BYTES: coded whole, in 7 chunks


def test_choose_delta_keeps_standalone_when_the_base_is_unrelated():
    ft, _ = _finetune_pair(100_000, scale=0.0, seed=1)
    other, _ = _finetune_pair(100_000, scale=0.0, seed=2)  # same statistics, unrelated values
    seg = _seg("F32", (100_000,), ft.nbytes)
    c = choose_delta(ft.view(np.uint8), seg, _ctx(other.view(np.uint8)))
    assert c.stage is None
    assert c.sizes["standalone"] <= min(c.sizes["xor"], c.sizes["sub"])


def test_choose_delta_samples_large_tensors_and_spots_identical_ones():
    ft, base = _finetune_pair(3 * (1 << 18), scale=1e-5)  # 3 MiB of F32
    seg = _seg("F32", (ft.size,), ft.nbytes)
    c = choose_delta(ft.view(np.uint8), seg, _ctx(base.view(np.uint8)), chunk_size=64 << 10)
    assert c.sampled == 4 * (64 << 10)  # 4 pieces of one chunk each, spread over 3 MiB
    same = choose_delta(base.view(np.uint8), seg, _ctx(base.view(np.uint8)))
    assert same.stage is SAME and same.staged.parts == []
    out = np.empty(ft.nbytes, np.uint8)
    SAME.decode([], out, seg, {}, _ctx(base.view(np.uint8)))
    assert np.array_equal(out, base.view(np.uint8))


# -- end to end: --base through the API, the CLI and folders ---------------------------------


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def _stages(zm: Path) -> dict[str, str]:
    """Tensor name -> how the container stores it ("standalone" or the stage's name)."""
    with ContainerReader(zm) as r:
        return {
            e.segment.name: (e.stage.name if e.stage is not None else "standalone")
            for e in r.index.segments
            if e.segment.kind == TENSOR
        }


def _write_pair(root: Path) -> tuple[Path, Path]:
    """A base and a fine-tune of it, covering every case a tensor can be in."""
    rng = np.random.default_rng(3)
    edge = np.tile(EDGE_F32, 512).view(np.float32)
    base = {
        "embed.weight": (rng.standard_normal((512, 256)) * 0.05).astype(np.float32),
        "layer.0.weight": (rng.standard_normal((256, 256)) * 0.05).astype(np.float32),
        "layer.1.weight": (rng.standard_normal((256, 256)) * 0.05).astype(ml_dtypes.bfloat16),
        "layer.1.bias": (rng.standard_normal(4096) * 0.05).astype(np.float16),
        "frozen.weight": (rng.standard_normal((128, 128)) * 0.05).astype(np.float32),
        "edge": edge,
        "position_ids": np.arange(2048, dtype=np.int64),
        "reshaped": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32),
        "retyped": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32),
        "dropped": (rng.standard_normal(1000)).astype(np.float32),
    }
    ft = dict(base)
    del ft["dropped"]
    for k in ("embed.weight", "layer.0.weight"):  # a light fine-tune
        ft[k] = (base[k] + rng.standard_normal(base[k].shape).astype(np.float32) * 1e-4).astype(
            np.float32
        )
    b = base["layer.1.weight"].astype(np.float32)
    ft["layer.1.weight"] = (b + rng.standard_normal(b.shape) * 1e-3).astype(ml_dtypes.bfloat16)
    e2 = edge.view(np.uint32).copy()
    e2[::3] ^= 1  # low bit flips on every kind of pattern (NaN payloads, -0, inf, subnormal)
    ft["edge"] = e2.view(np.float32)
    ft["reshaped"] = base["reshaped"].reshape(32, 128)
    ft["retyped"] = base["retyped"].astype(np.float16)
    ft["head.weight"] = (rng.standard_normal((2, 256)) * 0.05).astype(np.float32)  # new
    root.mkdir(parents=True, exist_ok=True)
    save_file(base, str(root / "base.safetensors"), metadata={"format": "pt"})
    save_file(ft, str(root / "ft.safetensors"), metadata={"format": "pt"})
    return root / "base.safetensors", root / "ft.safetensors"


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return _write_pair(tmp_path / "pair")


def test_base_round_trip_and_per_tensor_choices(pair, tmp_path):
    base, ft = pair
    alone = api.compress_file(ft, tmp_path / "alone.zm")
    rep = api.compress_file(ft, tmp_path / "d.zm", base=base)
    assert rep.output_bytes < alone.output_bytes
    st = _stages(tmp_path / "d.zm")
    assert st["frozen.weight"] == st["position_ids"] == st["layer.1.bias"] == "same"
    assert st["embed.weight"] in ("xor", "sub") and st["layer.0.weight"] in ("xor", "sub")
    assert st["layer.1.weight"] in ("xor", "sub") and st["edge"] in ("xor", "sub")
    # not delta candidates: another dtype, not in the base
    assert st["retyped"] == st["head.weight"] == "standalone"
    # another shape is no delta candidate, but the same bytes are found by content
    assert st["reshaped"] == "same"
    with ContainerReader(tmp_path / "d.zm") as r:
        (rec,) = [e.stage for e in r.index.segments if e.segment.name == "reshaped"]
    assert rec.params == {"tensor": "reshaped", "shape": [64, 64]}
    api.decompress_file(tmp_path / "d.zm", tmp_path / "out", base=base, check_sha256=True)
    assert _sha(tmp_path / "out") == _sha(ft)
    with ContainerReader(tmp_path / "d.zm") as r:
        assert r.index.base == {"name": "base.safetensors", "sha256": _sha(base)}


def test_an_unrelated_base_changes_nothing(pair, tmp_path):
    _, ft = pair
    rng = np.random.default_rng(9)
    other = tmp_path / "other.safetensors"
    save_file(
        {"embed.weight": (rng.standard_normal((512, 256)) * 0.05).astype(np.float32)}, str(other)
    )
    alone = api.compress_file(ft, tmp_path / "alone.zm")
    rep = api.compress_file(ft, tmp_path / "d.zm", base=other)
    # nothing paid: the same container as without a base, which then needs no base either
    assert (tmp_path / "d.zm").read_bytes() == (tmp_path / "alone.zm").read_bytes()
    assert rep.output_bytes == alone.output_bytes
    api.decompress_file(tmp_path / "d.zm", tmp_path / "out")
    assert _sha(tmp_path / "out") == _sha(ft)


def test_base_as_zm_as_folder_and_as_compressed_folder(pair, tmp_path):
    base, ft = pair
    want = api.compress_file(ft, tmp_path / "ref.zm", base=base)
    ref = (tmp_path / "ref.zm").read_bytes()
    api.compress_file(base, tmp_path / "base.safetensors.zm")
    bdir = tmp_path / "bdir"
    bdir.mkdir()
    (bdir / "ft.safetensors").write_bytes(base.read_bytes())  # matched by relative path
    (bdir / "notes.txt").write_text("not a weight")
    zdir = folder.compress_dir(bdir, tmp_path / "bdir.zm").output
    for b in (tmp_path / "base.safetensors.zm", bdir, zdir):
        out = tmp_path / f"x-{Path(b).name}.zm"
        rep = api.compress_file(ft, out, base=b)
        with ContainerReader(out) as r:  # one identity: the original's SHA-256
            assert r.index.base["sha256"] == _sha(base)
        if b != bdir and b != zdir:
            assert out.read_bytes() == ref  # the recorded name is the original's too
        assert abs(rep.output_bytes - len(ref)) < 16  # only the recorded base name differs
        api.decompress_file(out, tmp_path / "back", base=b, force=True, check_sha256=True)
        assert _sha(tmp_path / "back") == _sha(ft)
    assert want.output_bytes == len(ref)


def test_missing_or_wrong_base_names_the_sha256(pair, tmp_path):
    base, ft = pair
    api.compress_file(ft, tmp_path / "d.zm", base=base)
    want = _sha(base)
    with pytest.raises(BaseMismatchError, match=want):
        api.decompress_file(tmp_path / "d.zm", tmp_path / "out")
    with pytest.raises(BaseMismatchError, match=f"{want}.*{ft}.*{_sha(ft)}"):
        api.decompress_file(tmp_path / "d.zm", tmp_path / "out", base=ft)
    assert not (tmp_path / "out").exists()
    with pytest.raises(BaseMismatchError, match=want):
        api.verify_file(tmp_path / "d.zm")
    with pytest.raises(BaseMismatchError, match=want):
        zipmodel.load(tmp_path / "d.zm")
    # open() without the base still reads the index; decoding a tensor needs the base
    with zipmodel.open(tmp_path / "d.zm") as f:
        assert "embed.weight" in f
        with pytest.raises(BaseMismatchError, match=want):
            f.get_tensor("embed.weight")
    with pytest.raises(BaseMismatchError, match=want):
        zipmodel.open(tmp_path / "d.zm", base=ft)


def test_open_and_load_stream_with_a_base(pair, tmp_path):
    base, ft = pair
    want = load_file(str(ft))
    api.compress_file(ft, tmp_path / "d.zm", base=base)
    with zipmodel.open(tmp_path / "d.zm", base=base, threads=2) as f:
        assert set(f) == set(want)
        for name in f:
            got = f.get_tensor(name)
            assert got.shape == want[name].shape
            assert got.tobytes() == want[name].tobytes(), name
    sd = zipmodel.load(tmp_path / "d.zm", base=base, threads=2)
    assert {k: v.tobytes() for k, v in sd.items()} == {k: v.tobytes() for k, v in want.items()}


def test_cli_base_exit_codes(pair, tmp_path):
    base, ft = pair
    runner = CliRunner()
    out = tmp_path / "d.zm"
    r = runner.invoke(cli, ["compress", str(ft), "-o", str(out), "--base", str(base)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["decompress", str(out), "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and _sha(base) in r.output and not (tmp_path / "o").exists()
    r = runner.invoke(cli, ["decompress", str(out), "-o", str(tmp_path / "o"), "--base", str(ft)])
    assert r.exit_code == 1 and _sha(base) in r.output and str(ft) in r.output
    r = runner.invoke(cli, ["verify", str(out)])
    assert r.exit_code == 1 and _sha(base) in r.output
    r = runner.invoke(cli, ["verify", str(out), "--base", str(base), "--against", str(ft)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["decompress", str(out), "-o", str(tmp_path / "o"), "--base", str(base)])
    assert r.exit_code == 0 and _sha(tmp_path / "o") == _sha(ft)
    r = runner.invoke(cli, ["info", str(out), "--no-tensors"])
    assert (
        r.exit_code == 0 and _sha(base) in r.output and "unchanged (stored as nothing)" in r.output
    )
    r = runner.invoke(cli, ["info", "--json", str(out)])
    doc = json.loads(r.stdout)["results"][0]
    stages = {t["name"]: t.get("stage") for t in doc["tensors"]}
    assert stages["frozen.weight"] == "same" and stages["head.weight"] is None


def test_folder_with_a_base_folder(pair, tmp_path):
    base, ft = pair
    src, bdir = tmp_path / "ft", tmp_path / "base"
    src.mkdir()
    bdir.mkdir()
    (src / "model.safetensors").write_bytes(ft.read_bytes())
    (src / "config.json").write_text("{}")
    (bdir / "model.safetensors").write_bytes(base.read_bytes())
    rep = folder.compress_dir(src, tmp_path / "ft.zm", base=bdir)
    (e,) = [x for x in rep.files if x.path == "model.safetensors"]
    assert e.base == {"name": "model.safetensors", "sha256": _sha(base)}
    assert e.stages["same"][0] == 4  # 3 unchanged, 1 reshaped (found by content)
    man = json.loads((tmp_path / "ft.zm" / folder.MANIFEST).read_text())
    (m,) = [f for f in man["files"] if f["path"] == "model.safetensors"]
    assert m["base"] == {"name": "model.safetensors", "sha256": _sha(base)}
    with pytest.raises(BaseMismatchError, match=_sha(base)):
        folder.decompress_dir(tmp_path / "ft.zm", tmp_path / "back")
    assert not (tmp_path / "back").exists()
    folder.verify_dir(tmp_path / "ft.zm", against=src, base=bdir)
    folder.decompress_dir(tmp_path / "ft.zm", tmp_path / "back", base=bdir)
    assert _sha(tmp_path / "back" / "model.safetensors") == _sha(ft)


def test_folder_dedup_across_files(pair, tmp_path):
    """Several models in one folder: identical tensors (even renamed) are stored once, related
    ones as deltas, and every file restores byte for byte (decompress and verify)."""
    base, ft = pair
    src = tmp_path / "models"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "c").mkdir()
    (src / "a" / "model.safetensors").write_bytes(base.read_bytes())
    (src / "b" / "model.safetensors").write_bytes(ft.read_bytes())
    rng = np.random.default_rng(5)
    tb = load_file(str(ft))
    renamed = {  # the fine-tune's embedding under another name, plus a tensor of its own
        "tok_embeddings": tb["embed.weight"],
        "other": (rng.standard_normal((64, 64))).astype(np.float32),
    }
    save_file(renamed, str(src / "c" / "weights.safetensors"))
    rep = folder.compress_dir(src, tmp_path / "models.zm")
    by = {e.path: e for e in rep.files}
    assert by["a/model.safetensors"].base is None
    assert by["b/model.safetensors"].base == {"path": "a/model.safetensors"}
    assert by["c/weights.safetensors"].base == {"path": "b/model.safetensors"}
    assert by["c/weights.safetensors"].stages == {"same": [1, tb["embed.weight"].nbytes]}
    assert _stages(tmp_path / "models.zm" / "c" / "weights.safetensors.zm")["tok_embeddings"] == (
        "same"
    )
    tot = rep.totals()
    assert tot["deduplicated_tensors"] >= 4  # 3 unchanged in b, the renamed one in c
    # the .zm of c needs b, which needs a: verify walks the chain on the stored files
    folder.verify_dir(tmp_path / "models.zm", against=src)
    folder.decompress_dir(tmp_path / "models.zm", tmp_path / "back")
    for p in ("a/model.safetensors", "b/model.safetensors", "c/weights.safetensors"):
        assert _sha(tmp_path / "back" / p) == _sha(src / p)
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "models.zm")])
    assert r.exit_code == 0 and "stored once" in r.output
    man = json.loads((tmp_path / "models.zm" / folder.MANIFEST).read_text())
    assert man["totals"]["deduplicated_tensors"] == tot["deduplicated_tensors"]
    # without dedup every file stands alone
    solo = folder.compress_dir(src, tmp_path / "solo.zm", dedup=False)
    assert all(e.base is None for e in solo.files)
    assert solo.stored_bytes > rep.stored_bytes


@pytest.mark.corpus
def test_real_finetune_pair(corpus, tmp_path):
    d = corpus / "finetune"
    if not (d / "head_bf16.safetensors").exists():
        pytest.skip("no fine-tune pairs: run python scripts/make_finetune.py")
    for kind in ("bf16", "fp32"):
        ft, base = d / f"head_{kind}.safetensors", d / f"base_{kind}.safetensors"
        alone = api.compress_file(ft, tmp_path / f"a{kind}.zm")
        rep = api.compress_file(ft, tmp_path / f"d{kind}.zm", base=base)
        assert rep.output_bytes < 0.2 * alone.output_bytes  # only the head changed
        st = _stages(tmp_path / f"d{kind}.zm")
        assert sum(v == "same" for v in st.values()) >= 80  # the frozen layers cost nothing
        api.decompress_file(tmp_path / f"d{kind}.zm", tmp_path / "o", base=base, force=True)
        assert _sha(tmp_path / "o") == _sha(ft)


def test_folder_with_the_same_weights_as_safetensors_and_pytorch_bin(tmp_path):
    """A Hugging Face repo often ships both: the .bin's storages are the safetensors' tensors
    (flat, under other names), so the second file costs next to nothing."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    sd = {f"layer.{i}.weight": rng.standard_normal((96, 64)).astype(np.float32) for i in range(4)}
    src = tmp_path / "repo"
    src.mkdir()
    save_file(sd, str(src / "model.safetensors"))
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, str(src / "pytorch_model.bin"))
    rep = folder.compress_dir(src, tmp_path / "repo.zm")
    by = {e.path: e for e in rep.files}
    ptm = by["pytorch_model.bin"]
    assert ptm.base == {"path": "model.safetensors"}
    assert ptm.stages == {"same": [4, 4 * 96 * 64 * 4]}
    assert ptm.stored_size < 0.05 * ptm.size
    folder.verify_dir(tmp_path / "repo.zm", against=src)
    folder.decompress_dir(tmp_path / "repo.zm", tmp_path / "back")
    assert _sha(tmp_path / "back" / "pytorch_model.bin") == _sha(src / "pytorch_model.bin")


@given(
    st.sampled_from([("F32", 4), ("BF16", 2), ("F16", 2), ("I64", 8), ("U8", 1)]),
    st.binary(min_size=8, max_size=512),
    st.binary(min_size=8, max_size=512),
    st.integers(1, 9),
)
def test_delta_stages_invert_any_bytes_in_any_whole_element_pieces(kind, a, b, piece):
    dtype, item = kind
    n = min(len(a), len(b)) // item * item
    tensor = np.frombuffer(a[:n], np.uint8).copy()
    base = np.frombuffer(b[:n], np.uint8).copy()
    seg = _seg(dtype, (n // item,), n)
    for stage in DELTA_STAGES.values():
        part = stage.encode(tensor, seg, _ctx(base)).parts[0].data
        out = np.empty_like(tensor)
        step = piece * item
        for off in range(0, n, step):
            stage.decode([part[off : off + step]], out[off : off + step], seg, {}, _ctx(base), off)
        assert np.array_equal(out, tensor), stage.name


def test_cli_folder_with_base_folder(pair, tmp_path):
    base, ft = pair
    src, bdir = tmp_path / "ft", tmp_path / "base"
    src.mkdir()
    bdir.mkdir()
    (src / "model.safetensors").write_bytes(ft.read_bytes())
    (bdir / "model.safetensors").write_bytes(base.read_bytes())
    runner = CliRunner()
    r = runner.invoke(cli, ["compress", str(src), "--base", str(bdir), "--json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["verify", str(tmp_path / "ft.zm")])
    assert r.exit_code == 1 and _sha(base) in r.output
    r = runner.invoke(cli, ["verify", str(tmp_path / "ft.zm"), "--base", str(bdir)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli, ["decompress", str(tmp_path / "ft.zm"), "-o", str(tmp_path / "o"), "--base", str(bdir)]
    )
    assert r.exit_code == 0 and _sha(tmp_path / "o" / "model.safetensors") == _sha(ft)
    r = runner.invoke(cli, ["compress", str(ft), "--base", str(tmp_path / "nope")])
    assert r.exit_code == 2  # a --base that does not exist is a usage error


@pytest.mark.parametrize("edit", ["drop base", "rename ref"])
def test_hostile_delta_records_fail_cleanly(pair, tmp_path, edit):
    """A delta file whose index lost its base record, or names a base tensor that does not
    exist, fails with a FormatError (exit 1), never a crash."""
    from test_stages_framework import rewrite_index

    base, ft = pair
    api.compress_file(ft, tmp_path / "d.zm", base=base)

    def change(doc):
        if edit == "drop base":
            del doc["base"]
        else:
            for s in doc["segments"]:
                if s.get("stage", {}).get("name") == "same":
                    s["stage"]["params"] = {"tensor": "no.such.tensor"}

    bad = tmp_path / "bad.zm"
    bad.write_bytes(rewrite_index((tmp_path / "d.zm").read_bytes(), change))
    with pytest.raises(zipmodel.FormatError, match="stored against the base tensor"):
        api.decompress_file(bad, tmp_path / "out", base=base)
    assert not (tmp_path / "out").exists()
    r = CliRunner().invoke(
        cli, ["decompress", str(bad), "-o", str(tmp_path / "o"), "--base", str(base)]
    )
    assert r.exit_code == 1 and "stored against the base tensor" in r.output
