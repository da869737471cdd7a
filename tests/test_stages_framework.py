"""The tensor-stage framework: container records, pipeline, API, checks (with tests/stage_examples)."""

import hashlib
import io
import json
import struct

import numpy as np
import pytest
import zstandard

import edgecases
import stage_examples as ex
import zipmodel
from zipmodel._checksum import xxh3_64
from zipmodel.api import compress_bytes, decompress_bytes, verify_file
from zipmodel.container.format import FILE_HEADER, FLAG_LOSSY, INDEX_MAGIC, TRAILER, TRAILER_MAGIC
from zipmodel.container.frames import StreamInfo, build_frame
from zipmodel.container.reader import ContainerReader
from zipmodel.errors import CorruptDataError, FormatError, ZipmodelError
from zipmodel.stages import get_stage, register_stage
from zipmodel.stages.tensor import StageContext

RNG = np.random.default_rng(11)
A = RNG.standard_normal((64, 300)).astype(np.float32)  # 76.8 kB: several 16 KiB chunks
B = (RNG.standard_normal((50, 70)) * 3).astype(np.float32)
Z = np.zeros((40, 40), np.float32)
NORM = RNG.standard_normal(300).astype(np.float32)
TENSORS = [
    ("a", "F32", [64, 300], A.tobytes()),
    ("b", "F32", [50, 70], B.tobytes()),
    ("z", "F32", [40, 40], Z.tobytes()),
    ("norm", "F32", [300], NORM.tobytes()),
    ("ids", "I64", [4], np.arange(4, dtype=np.int64).tobytes()),
]
MODEL = edgecases.safetensors_bytes(TENSORS, metadata={"format": "pt"})
CHUNK = 16 << 10


def every(stage, names=None):
    return lambda seg: stage if names is None or seg.name in names else None


def pack(stage, data=MODEL, threads=2, **kw):
    return compress_bytes(data, chunk_size=CHUNK, stages=every(stage), threads=threads, **kw)


def reader(blob):
    return ContainerReader(io.BytesIO(blob))


def tensor_ranges(blob):
    with reader(blob) as r:
        return {
            e.segment.name: (e.segment.offset, e.segment.end)
            for e in r.index.segments
            if e.segment.kind == "tensor"
        }


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [ex.HiLo(), ex.Zeros()], ids=lambda s: s.name)
@pytest.mark.parametrize("threads", [1, 3])
def test_lossless_stage_round_trip(stage, threads, tmp_path):
    blob = pack(stage, threads=threads)
    assert decompress_bytes(blob, threads=threads) == MODEL
    with reader(blob) as r:
        assert r.index.format_version == (1, 2) and r.flags == 0 and not r.index.lossy
        assert any(e.stage is not None for e in r.index.segments)
    with zipmodel.open(io.BytesIO(blob)) as f:
        for name, _dt, _shape, raw in TENSORS:
            assert f.get_bytes(name).tobytes() == raw
    p = tmp_path / "x.zm"
    p.write_bytes(blob)
    rep = verify_file(p)
    assert rep.sha256 == _sha(MODEL) and not rep.lossy


def _sha(b) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("stage", [ex.RowInt8(), ex.DropLow()], ids=lambda s: s.name)
@pytest.mark.parametrize("threads", [1, 3])
def test_lossy_stage_decodes_dequantized(stage, threads):
    blob = pack(stage, threads=threads)
    out = decompress_bytes(blob, threads=threads)
    ranges = tensor_ranges(blob)
    with reader(blob) as r:
        assert r.index.lossy and r.flags & FLAG_LOSSY
        assert FILE_HEADER.unpack_from(blob)[2:] == (2, FLAG_LOSSY)
        staged = {e.segment.name for e in r.index.segments if e.stage is not None}
    assert staged == {"a", "b", "z", "norm"} if stage.name == "test-droplow" else {"a", "b", "z"}
    with zipmodel.open(io.BytesIO(blob), threads=threads) as f:
        assert f.lossy
        for name, _dt, shape, raw in TENSORS:
            lo, hi = ranges[name]
            got = f.get_tensor(name)
            assert list(got.shape) == shape
            assert got.tobytes() == out[lo:hi], "random access = what decompress writes"
            if name not in staged:
                assert out[lo:hi] == raw
    # everything outside the staged tensors is the source's bytes
    keep = bytearray(MODEL)
    mine = bytearray(out)
    for name in sorted(staged, key=lambda n: -ranges[n][0]):  # from the end: offsets hold
        lo, hi = ranges[name]
        keep[lo:hi] = mine[lo:hi] = b""
    assert keep == mine
    a = np.frombuffer(out[slice(*ranges["a"])], np.float32).reshape(A.shape)
    assert np.sqrt(((a - A) ** 2).sum() / (A**2).sum()) < 0.01
    assert not np.array_equal(a, A)


def test_output_does_not_depend_on_thread_count():
    for stage in (ex.HiLo(), ex.RowInt8(), ex.DropLow(), ex.Zeros()):
        blobs = {pack(stage, threads=t) for t in (1, 2, 4)}
        assert len(blobs) == 1, stage.name


def test_declined_everywhere_is_byte_identical_to_no_stage():
    plain = compress_bytes(MODEL, chunk_size=CHUNK)
    declines = pack(ex.XorBase())  # no base in the context: it declines every tensor
    assert declines == plain
    assert FILE_HEADER.unpack_from(plain)[2:] == (0, 0)


class _Pipe(io.RawIOBase):
    """A write-only, non-seekable output (like a pipe)."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += bytes(b)
        return len(b)


def test_non_seekable_output_keeps_the_guessed_header(tmp_path):
    src = tmp_path / "m.safetensors"
    src.write_bytes(MODEL)
    pipe = _Pipe()
    zipmodel.compress_file(src, pipe, chunk_size=CHUNK, stages=every(ex.XorBase()))
    blob = bytes(pipe.buf)
    # the guess (a stage was asked for) cannot be taken back on a pipe: 1.2, still valid
    assert FILE_HEADER.unpack_from(blob)[2:] == (2, 0)
    assert decompress_bytes(blob) == MODEL
    pipe = _Pipe()
    zipmodel.compress_file(src, pipe, chunk_size=CHUNK, stages=every(ex.RowInt8(), {"a"}))
    blob = bytes(pipe.buf)
    assert FILE_HEADER.unpack_from(blob)[2:] == (2, FLAG_LOSSY)
    with zipmodel.open(io.BytesIO(blob)) as f:
        assert f.tensor_info("a").stage == "test-int8"


def test_index_records_parts_and_checks():
    blob = pack(ex.RowInt8(), threads=1)
    with reader(blob) as r:
        e = next(e for e in r.index.segments if e.segment.name == "a")
        rec = e.stage
        assert rec.name == "test-int8" and rec.params == {"rows": 64}
        codes, scales = rec.parts
        assert (codes.name, codes.dtype, codes.shape, codes.size) == (
            "codes",
            "I8",
            (64, 300),
            19200,
        )
        assert (scales.name, scales.dtype, scales.shape, scales.size) == ("scales", "F32", (), 256)
        assert codes.first_chunk == e.first_chunk
        assert scales.first_chunk == codes.first_chunk + codes.n_chunks
        assert e.n_chunks == codes.n_chunks + scales.n_chunks == 3  # 19200 B in 16 KiB + 1
        rows = r.index.chunks[e.first_chunk : e.first_chunk + e.n_chunks]
        # part chunks are laid out from the segment's offset, each part on its own
        assert rows["src_offset"].tolist() == [
            e.segment.offset,
            e.segment.offset + CHUNK,
            e.segment.offset,
        ]
        with zipmodel.open(io.BytesIO(blob)) as f:
            assert rec.check == xxh3_64(f.get_bytes("a"))
        assert set(rec.quality) >= {"rel_rms", "max_abs", "snr_db", "sq_err", "sq_ref"}
        js = json.loads(r.index.to_streams()[0])
        seg = next(s for s in js["segments"] if s.get("name") == "a")
        assert seg["stage"]["check"] == f"{rec.check:016x}"
        assert seg["stage"]["parts"][0]["chunks"] == [codes.first_chunk, codes.n_chunks]


def test_summary_and_quality_totals():
    blob = pack(ex.RowInt8())
    with zipmodel.open(io.BytesIO(blob)) as f:
        s = f.summary()
    by = {t.name: t for t in s.tensors}
    assert by["a"].transform == by["a"].stage == "test-int8" and by["a"].lossy
    assert by["norm"].stage is None and by["norm"].transform == "split-f32"
    tot = s.quality_total()
    assert tot["tensors"] == 3 and tot["elements"] == 64 * 300 + 50 * 70 + 1600
    exact = np.sqrt(
        sum(by[n].quality["sq_err"] for n in "abz") / sum(by[n].quality["sq_ref"] for n in "abz")
    )
    assert tot["rel_rms"] == pytest.approx(exact)
    assert tot["bits_per_weight"] == pytest.approx(
        8 * sum(by[n].compressed_bytes for n in "abz") / tot["elements"]
    )
    d = s.to_json()
    assert d["lossy"] is True and d["quality"]["tensors"] == 3
    assert "stage" not in next(t for t in d["tensors"] if t["name"] == "norm")


def test_random_access_reads_only_that_tensors_frames(tmp_path):
    p = tmp_path / "m.zm"
    p.write_bytes(pack(ex.RowInt8()))
    with zipmodel.open(p) as f:
        e = next(e for e in f.index.segments if e.segment.name == "b")
        rows = f.index.chunks[e.first_chunk : e.first_chunk + e.n_chunks]
        before = f.bytes_read
        f.get_tensor("b")
        assert f.bytes_read - before == int(rows["frame_size"].sum())


# -- loading -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage", [ex.RowInt8(), ex.DropLow(), ex.HiLo(), ex.Zeros()], ids=lambda s: s.name
)
def test_load_equals_decompress(stage):
    blob = pack(stage)
    out = decompress_bytes(blob)
    ranges = tensor_ranges(blob)
    sd = zipmodel.load(io.BytesIO(blob))
    for name, _dt, shape, _raw in TENSORS:
        assert list(sd[name].shape) == shape
        assert sd[name].tobytes() == out[slice(*ranges[name])]


def test_torch_load_bit_equals_decompress():
    torch = pytest.importorskip("torch")
    blob = pack(ex.RowInt8())
    out = decompress_bytes(blob)
    ranges = tensor_ranges(blob)
    sd = zipmodel.load(io.BytesIO(blob), framework="torch")
    t = sd["a"]
    assert t.dtype == torch.float32 and tuple(t.shape) == (64, 300)
    assert t.numpy().tobytes() == out[slice(*ranges["a"])]


# -- duplicates, zero parts, base context ----------------------------------------------------
def test_duplicate_of_a_staged_tensor_decodes_the_same():
    data = edgecases.safetensors_bytes(
        [("emb", "F32", [64, 300], A.tobytes()), ("head", "F32", [64, 300], A.tobytes())]
    )
    blob = compress_bytes(data, chunk_size=CHUNK, stages=every(ex.RowInt8()))
    with reader(blob) as r:
        emb, head = (e for e in r.index.segments if e.segment.kind == "tensor")
        assert emb.stage is not None and head.dup_of is not None and head.stage is None
    sd = zipmodel.load(io.BytesIO(blob))
    assert np.array_equal(sd["emb"], sd["head"]) and not np.array_equal(sd["emb"], A)
    with zipmodel.open(io.BytesIO(blob)) as f:
        assert np.array_equal(f.get_tensor("head"), sd["emb"])
    out = decompress_bytes(blob)
    r = tensor_ranges(blob)
    assert out[slice(*r["emb"])] == out[slice(*r["head"])]


def test_stage_with_no_parts():
    blob = pack(ex.Zeros())
    with reader(blob) as r:
        z = next(e for e in r.index.segments if e.segment.name == "z")
        assert z.stage.parts == () and z.n_chunks == 0
    assert decompress_bytes(blob) == MODEL
    assert not zipmodel.load(io.BytesIO(blob))["z"].any()


BASE = {"a": (A + 1e-3).astype(np.float32), "b": B}


def base_context(info=None):
    def base(seg):
        t = BASE.get(seg.name)
        return None if t is None else t.reshape(-1).view(np.uint8)

    return StageContext(base=base, base_info=info)


def test_elementwise_stage_with_base_decodes_chunk_by_chunk(monkeypatch):
    info = {"name": "base.safetensors", "sha256": "ab" * 32}
    blob = pack(ex.XorBase(), context=base_context(info))
    with reader(blob) as r:
        assert r.index.base == info
        staged = {e.segment.name for e in r.index.segments if e.stage is not None}
        assert staged == {"a", "b"}
    calls = []
    real = ex.XorBase.decode

    def spy(self, parts, out, seg, params, ctx, offset=0):
        calls.append((seg.name, offset, out.size, parts[0] is out))
        return real(self, parts, out, seg, params, ctx, offset)

    monkeypatch.setattr(ex.XorBase, "decode", spy)
    ctx = base_context(info)
    assert decompress_bytes(blob, context=ctx) == MODEL
    a_calls = [c for c in calls if c[0] == "a"]
    assert sorted(c[1] for c in a_calls) == list(
        range(0, A.nbytes, CHUNK)
    )  # one per chunk, in place
    assert all(c[3] for c in a_calls)
    calls.clear()
    with zipmodel.open(io.BytesIO(blob), context=ctx) as f:
        assert np.array_equal(f.get_tensor("a"), A)
    assert len(calls) == -(-A.nbytes // CHUNK)
    assert np.array_equal(zipmodel.load(io.BytesIO(blob), context=ctx)["b"], B)


def test_base_context_missing_or_wrong():
    info = {"name": "base.safetensors", "sha256": "ab" * 32}
    blob = pack(ex.XorBase(), context=base_context(info))
    with pytest.raises(ZipmodelError, match="base"):
        decompress_bytes(blob)
    wrong = base_context({"name": "other", "sha256": "cd" * 32})
    with pytest.raises(ZipmodelError, match="ab" * 32):
        decompress_bytes(blob, context=wrong)
    with pytest.raises(ZipmodelError, match="ab" * 32):
        zipmodel.open(io.BytesIO(blob), context=wrong)


# -- contract enforcement at compression ---------------------------------------------------
@register_stage
class _NotLossless(ex.HiLo):
    name = "test-not-lossless"

    def decode(self, parts, out, seg, params, ctx, offset=0):
        super().decode(parts, out, seg, params, ctx, offset)
        out[0] ^= 1


def test_lossless_stage_that_changes_the_tensor_fails_compression():
    with pytest.raises(ZipmodelError, match="did not give the tensor back"):
        pack(_NotLossless())


def test_stage_encodes_each_tensor_once():
    seen = []

    class Counting(ex.RowInt8):
        def encode(self, tensor, seg, ctx):
            seen.append(seg.name)
            return super().encode(tensor, seg, ctx)

    Counting.name = "test-int8"  # decodes as test-int8
    pack(Counting(), threads=3)
    assert sorted(seen) == ["a", "b", "ids", "norm", "z"]


def test_register_stage_refuses_a_taken_name():
    class Other(ex.HiLo):
        name = "test-int8"

    with pytest.raises(ValueError, match="taken"):
        register_stage(Other)
    assert get_stage("test-int8") is ex.RowInt8


# -- hostile stage records -------------------------------------------------------------------
def rewrite_index(blob: bytes, edit) -> bytes:
    """``blob`` with its index JSON passed through ``edit(doc)`` (checksums made valid)."""
    idx_off, _size, _magic = TRAILER.unpack(blob[-16:])
    with reader(blob) as r:
        streams = r.index.to_streams()
    doc = json.loads(streams[0])
    edit(doc)
    streams[0] = json.dumps(doc).encode()
    cctx = zstandard.ZstdCompressor(write_content_size=True)
    payloads = [cctx.compress(s) for s in streams]
    infos = [StreamInfo(2, 0xFF, len(s), len(z)) for s, z in zip(streams, payloads)]
    parts = build_frame(
        INDEX_MAGIC, 0, 0, sum(map(len, streams)), xxh3_64(b"".join(streams)), infos, payloads
    )
    frame = b"".join(bytes(memoryview(p).cast("B")) for p in parts)
    head = bytearray(blob[:idx_off])
    struct.pack_into("<HI", head, 10, doc["format"][1], doc["flags"])
    return bytes(head) + frame + TRAILER.pack(idx_off, len(frame), TRAILER_MAGIC)


def _stage_of(doc, name="a"):
    return next(s for s in doc["segments"] if s.get("name") == name)["stage"]


HOSTILE = {
    "unknown stage name": lambda d: _stage_of(d).__setitem__("name", "from-the-future"),
    "part size disagrees": lambda d: _stage_of(d)["parts"][1].__setitem__("size", 260),
    "params break part_sizes": lambda d: _stage_of(d).__setitem__("params", {"rows": "64"}),
    "params missing": lambda d: _stage_of(d).__setitem__("params", {}),
    "part chunks out of range": lambda d: _stage_of(d)["parts"][1].__setitem__("chunks", [0, 99]),
    "parts out of order": lambda d: _stage_of(d)["parts"].reverse(),
    "part dtype unknown": lambda d: _stage_of(d)["parts"][0].__setitem__("dtype", "Q9"),
    "part shape wrong": lambda d: _stage_of(d)["parts"][0].__setitem__("shape", [64, 301]),
    "too many parts": lambda d: _stage_of(d).__setitem__("parts", _stage_of(d)["parts"] * 9),
    "malformed part": lambda d: _stage_of(d)["parts"].__setitem__(0, "codes"),
    "malformed check": lambda d: _stage_of(d).__setitem__("check", "xyz"),
    "stage on verbatim": lambda d: d["segments"][0].__setitem__("stage", _stage_of(d)),
    "stage in a 1.1 file": lambda d: d.__setitem__("format", [1, 1]),
    "lossy without the flag": lambda d: d.__setitem__("flags", 0),
    "elementwise with two parts": lambda d: _stage_of(d).__setitem__("name", "test-droplow"),
    "stage record not an object": lambda d: next(
        s for s in d["segments"] if s.get("name") == "a"
    ).__setitem__("stage", [1]),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_stage_records_are_refused(case):
    blob = pack(ex.RowInt8())
    bad = rewrite_index(blob, HOSTILE[case])
    with pytest.raises(FormatError):
        ContainerReader(io.BytesIO(bad)).close()


def test_hostile_elementwise_part_of_the_wrong_size():
    blob = pack(ex.DropLow())

    def edit(d):
        st = _stage_of(d, "norm")
        st["parts"][0]["size"] = 1196

    with pytest.raises(FormatError, match=r"parts have|elementwise"):
        ContainerReader(io.BytesIO(rewrite_index(blob, edit))).close()


def test_rewrite_helper_keeps_a_valid_file_valid():
    blob = pack(ex.RowInt8())
    same = rewrite_index(blob, lambda d: None)
    assert decompress_bytes(same) == decompress_bytes(blob)


def test_wrong_tensor_check_is_corrupt_data():
    blob = pack(ex.RowInt8())
    bad = rewrite_index(blob, lambda d: _stage_of(d).__setitem__("check", "0" * 16))
    with pytest.raises(CorruptDataError, match="checksum"):
        decompress_bytes(bad)
    with zipmodel.open(io.BytesIO(bad)) as f, pytest.raises(CorruptDataError):
        f.get_tensor("a")
    with pytest.raises(CorruptDataError):
        zipmodel.load(io.BytesIO(bad))


def test_verify_lossy_and_lossless_stages(tmp_path):
    p = tmp_path / "l.zm"
    p.write_bytes(pack(ex.RowInt8()))
    rep = verify_file(p)
    assert rep.lossy and rep.sha256 == _sha(MODEL)
    assert rep.restored_sha256 == _sha(decompress_bytes(p.read_bytes()))
    assert rep.to_json()["lossy"] is True
    q = tmp_path / "e.zm"
    q.write_bytes(pack(ex.HiLo()))
    rep = verify_file(q)
    assert not rep.lossy and rep.sha256 == _sha(MODEL)


def test_every_single_byte_flip_of_a_staged_container_is_detected():
    data = edgecases.safetensors_bytes(
        [
            ("w", "F32", [32, 40], A[:32, :40].tobytes()),
            ("v", "F32", [8, 160], B[:8, :20].repeat(8, 1).tobytes()),
        ]
    )
    blob = compress_bytes(data, chunk_size=4096, stages=every(ex.RowInt8()))
    good = decompress_bytes(blob)
    for i in range(len(blob)):
        b = bytearray(blob)
        b[i] ^= 0x10
        try:
            out = decompress_bytes(bytes(b))
        except ZipmodelError:
            continue
        raise AssertionError(f"a flip at byte {i} went unnoticed (same output: {out == good})")
