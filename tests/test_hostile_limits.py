"""Hardening (issue 16): limits a reader enforces before it spends memory, fields the format
fixes as zero, and source readers that never let a built-in exception escape.

Bounded work is asserted on memory (peak RSS of a child process, tracemalloc), never on time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import xxhash
import zstandard

from zipmodel import errors
from zipmodel.container import index as index_mod
from zipmodel.container.format import (
    CHUNK_DTYPE,
    CHUNK_MAGIC,
    FILE_HEADER,
    FILE_MAGIC,
    INDEX_MAGIC,
    NO_CONTEXT,
    STREAM_DTYPE,
    TRAILER,
    TRAILER_MAGIC,
)
from zipmodel.container.frames import StreamInfo, build_frame
from zipmodel.container.reader import ContainerReader, decode_index_frame


def _frame(magic: bytes, raw_size: int, raw_check: int, infos, payloads) -> bytes:
    parts = build_frame(magic, 0, 0, raw_size, raw_check, infos, payloads)
    return b"".join(bytes(p) for p in parts)


def _index_frame(raw: list[bytes]) -> bytes:
    z = zstandard.ZstdCompressor(level=3, write_content_size=True)
    pay = [z.compress(r) for r in raw]
    infos = [StreamInfo(2, NO_CONTEXT, len(r), len(p)) for r, p in zip(raw, pay)]
    check = xxhash.xxh3_64_intdigest(b"".join(raw), 0)
    return _frame(INDEX_MAGIC, sum(map(len, raw)), check, infos, pay)


def many_empty_tensors(n: int, head: bytes = b"0123456789abcdef") -> bytes:
    """A valid container of a ``len(head)``-byte source: one verbatim chunk, then ``n`` empty
    F32 tensors. Empty tensors cost no frame, so the index JSON (zstd) is nearly all of it:
    a million of them fit in under 1 MB."""
    prefix = FILE_HEADER.pack(FILE_MAGIC, 1, 0, 0)
    h = len(head)
    chunk = _frame(
        CHUNK_MAGIC,
        h,
        xxhash.xxh3_64_intdigest(head, 0),
        [StreamInfo(0, NO_CONTEXT, h, h)],
        [head],
    )
    chunks = np.zeros(1, CHUNK_DTYPE)
    chunks[0] = (0, len(prefix), len(chunk), h, 0, 1, 0, 0)
    streams = np.zeros(1, STREAM_DTYPE)
    streams[0] = (0, NO_CONTEXT, 0, h, h)
    prefix += chunk
    doc = {
        "format": [1, 0],
        "writer": "test_hostile_limits",
        "flags": 0,
        "source": {
            "name": "many.safetensors",
            "size": h,
            "sha256": hashlib.sha256(head).hexdigest(),
            "format": "raw",
        },
        "options": {},
        "metadata": {},
    }
    segs = [f'{{"kind":"verbatim","offset":0,"size":{h},"chunks":[0,1]}}'] + [
        f'{{"kind":"tensor","offset":{h},"size":0,"chunks":[1,0],"name":"t{i}",'
        f'"dtype":"F32","shape":[0]}}'
        for i in range(n)
    ]
    js = json.dumps(doc, separators=(",", ":"))[:-1] + ',"segments":[' + ",".join(segs) + "]}"
    ix = _index_frame([js.encode(), chunks.tobytes(), streams.tobytes()])
    return prefix + ix + TRAILER.pack(len(prefix), len(ix), TRAILER_MAGIC)


def _peak_rss_mb(*args: str) -> tuple[int, str, float]:
    """Run ``python -m zipmodel ARGS`` from a fresh wrapper process; return its exit code,
    stderr and peak RSS in MB (ru_maxrss of RUSAGE_CHILDREN, measured in the wrapper so
    earlier children of the test process do not count)."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "r = subprocess.run([sys.executable, '-m', 'zipmodel', *sys.argv[1:]],"
        " capture_output=True, text=True)\n"
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.stderr.write(r.stderr)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", wrapper, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )
    rc, kb = p.stdout.split()[-2:]
    return int(rc), p.stderr, int(kb) / 1024


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    path = tmp_path_factory.mktemp("limits") / "million.zm"
    path.write_bytes(many_empty_tensors(1_000_000))
    return path


def test_million_empty_tensors_small_file(million):
    assert million.stat().st_size < 2 << 20  # the threat: a small file, a huge index


@pytest.mark.parametrize("cmd", ["info", "decompress"])
def test_million_empty_tensors_bounded_rss(million, tmp_path, cmd):
    """Before: 1.26 GB peak RSS and 14-16 s for either command. The JSON stream declares
    its size, so the reader refuses it before decompressing anything."""
    tiny = tmp_path / "tiny.zm"
    tiny.write_bytes(many_empty_tensors(10))
    out = ["-f", "-o", str(tmp_path / "out")] if cmd == "decompress" else []
    rc0, err0, base = _peak_rss_mb(cmd, *out, str(tiny))
    assert rc0 == 0, err0
    rc, err, peak = _peak_rss_mb(cmd, *out, str(million))
    assert rc == 1, err
    assert str(million) in err and "index JSON" in err and "limit" in err
    assert "bug in zipmodel" not in err
    assert peak < 300, f"{cmd} peaked at {peak:.0f} MB"
    assert peak < base + 64, f"{cmd}: {peak:.0f} MB against {base:.0f} MB on a tiny file"


def test_segment_cap_under_the_json_cap(monkeypatch, tmp_path):
    """An index under the JSON byte cap but with more segments than MAX_INDEX_SEGMENTS is
    refused while parsing, before the entries are all built (cap lowered for the test)."""
    monkeypatch.setattr(index_mod, "MAX_INDEX_SEGMENTS", 2000)
    path = tmp_path / "m.zm"
    path.write_bytes(many_empty_tensors(20_000))
    tracemalloc.start()
    try:
        with pytest.raises(errors.FormatError, match="more than 2000 segments") as info:
            ContainerReader(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.path == str(path)
    # the JSON text (~1.8 MB) and ~2000 parsed entries; not the 20,000 (~15 MB)
    assert peak < 8 << 20, f"{peak >> 20} MiB"


def test_segment_count_cap_boundary(monkeypatch, tmp_path):
    """Exactly MAX_INDEX_SEGMENTS segments read; one more is refused."""
    path = tmp_path / "m.zm"
    path.write_bytes(many_empty_tensors(50))
    monkeypatch.setattr(index_mod, "MAX_INDEX_SEGMENTS", 50)
    with pytest.raises(errors.FormatError, match="more than 50 segments"):
        ContainerReader(path)
    monkeypatch.setattr(index_mod, "MAX_INDEX_SEGMENTS", 51)
    with ContainerReader(path) as r:
        assert len(r.index.segments) == 51


def test_chunk_table_bounded_by_the_file():
    """A chunk table needs one frame (at least 52 bytes) per row before the index: a table
    that declares more rows than that is refused before it is decompressed."""
    rows = np.random.default_rng(0).bytes(100_000 * CHUNK_DTYPE.itemsize)  # incompressible
    raw = [b"{}", rows, b""]
    fr = _index_frame(raw)
    with pytest.raises(errors.FormatError, match="chunk table of 3200000 bytes"):
        decode_index_frame(fr, path="x.zm", offset=16 + 52 * 10)


def test_source_readers_respect_the_index_caps(monkeypatch):
    """A layout with more segments than an index may hold is compressed as opaque bytes
    (with a note), so every container written can be read back."""
    import edgecases

    import zipmodel.readers as readers

    data = edgecases.safetensors_bytes(
        [(f"t{i}", "F32", [2], np.arange(2, dtype=np.float32).tobytes()) for i in range(8)]
    )
    arr = np.frombuffer(data, np.uint8)
    assert len(readers.read_layout(arr).segments) == 9
    monkeypatch.setattr(readers, "MAX_INDEX_SEGMENTS", 5)
    layout = readers.read_layout(arr)
    assert layout.format == "raw" and "more than a container index holds" in layout.note
    with pytest.raises(errors.FormatError, match="not a valid safetensors"):
        readers.read_layout(arr, format="safetensors", path="x")


# -- fields the format fixes as zero (docs/format.md rules 2, 3, 7) --------------------------

GOLDEN = __import__("pathlib").Path(__file__).parent / "golden" / "model.safetensors.default.zm"


def _rehash(frame: bytearray) -> bytes:
    """Recompute a frame's check after editing it, so only the edited field is wrong."""
    body = bytes(frame[32:])
    frame[24:32] = xxhash.xxh3_64_intdigest(bytes(frame[:24]) + body, 0).to_bytes(8, "little")
    return bytes(frame)


def _golden_chunk_frame() -> tuple[bytes, int]:
    blob = GOLDEN.read_bytes()
    r = ContainerReader(blob)
    row = r.index.chunks[0]
    off, size = int(row["frame_offset"]), int(row["frame_size"])
    return blob[off : off + size], off


def test_chunk_frame_flags_must_be_zero():
    from zipmodel.container.frames import parse_frame

    fr, off = _golden_chunk_frame()
    parse_frame(fr)  # the golden frame itself is fine
    b = bytearray(fr)
    b[6:8] = (4).to_bytes(2, "little")
    with pytest.raises(errors.FormatError, match="frame flags are 0x4"):
        parse_frame(_rehash(b), path="g.zm", offset=off)


def test_stream_entry_reserved_must_be_zero():
    from zipmodel.container.frames import parse_frame

    fr, off = _golden_chunk_frame()
    b = bytearray(fr)
    b[32 + 2 : 32 + 4] = (1).to_bytes(2, "little")
    with pytest.raises(errors.FormatError, match="stream 0 has reserved field 0x1"):
        parse_frame(_rehash(b), path="g.zm", offset=off)


def _golden_index_frame() -> tuple[bytes, bytes]:
    blob = GOLDEN.read_bytes()
    idx_off, idx_size, _ = TRAILER.unpack(blob[-16:])
    return blob[:idx_off], blob[idx_off : idx_off + idx_size]


@pytest.mark.parametrize(
    "field, at, width, match",
    [
        ("src_offset", 8, 8, "src_offset 7"),
        ("transform", 4, 1, "index frame has transform 7"),
        ("flags", 6, 2, "frame flags are 0x7"),
    ],
)
def test_index_frame_fields_must_be_zero(tmp_path, field, at, width, match):
    prefix, fr = _golden_index_frame()
    b = bytearray(fr)
    b[at : at + width] = (7).to_bytes(width, "little")
    fr = _rehash(b)
    path = tmp_path / f"index_{field}.zm"
    path.write_bytes(prefix + fr + TRAILER.pack(len(prefix), len(fr), TRAILER_MAGIC))
    with pytest.raises(errors.FormatError, match=match) as info:
        ContainerReader(path)
    assert info.value.path == str(path)


@pytest.mark.parametrize(
    "table, field, match",
    [("chunks", "flags", "chunk 0 has flags 0x2"), ("streams", "reserved", "stream 0 has reserved")],
)
def test_index_table_fields_must_be_zero(tmp_path, table, field, match):
    blob = GOLDEN.read_bytes()
    r = ContainerReader(blob)
    js, ct, st = r.index.to_streams()
    tabs = {
        "chunks": np.frombuffer(ct, CHUNK_DTYPE).copy(),
        "streams": np.frombuffer(st, STREAM_DTYPE).copy(),
    }
    tabs[table][field][0] = 2
    prefix = blob[: r.index_offset]
    fr = _index_frame([js, tabs["chunks"].tobytes(), tabs["streams"].tobytes()])
    path = tmp_path / f"{table}_{field}.zm"
    path.write_bytes(prefix + fr + TRAILER.pack(len(prefix), len(fr), TRAILER_MAGIC))
    with pytest.raises(errors.FormatError, match=match) as info:
        ContainerReader(path)
    assert info.value.path == str(path)


# -- source readers on hostile headers: their own error or opaque bytes, never a built-in ----


def _samples() -> dict[str, bytes]:
    import io
    import pickle
    import zipfile

    import edgecases
    import test_ctranslate2
    import test_gguf

    st = edgecases.safetensors_bytes(
        [("w", "F32", [4, 4], np.arange(16, dtype=np.float32).tobytes())],
        metadata={"format": "pt"},
    )
    gg = test_gguf.build([("w", [32], 0)])
    ct2 = test_ctranslate2.sample()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": [1, 2, (3, "x")]}, protocol=2))
        z.writestr("archive/version", "3\n")
    return {"safetensors": st, "gguf": gg, "ctranslate2": ct2, "torch": buf.getvalue()}


SAMPLES = _samples()


def test_deep_safetensors_header_is_opaque_bytes():
    """Before: RecursionError escaped ('this is a bug in zipmodel', compress_dir aborted)."""
    from zipmodel.api import compress_bytes, decompress_bytes
    from zipmodel.readers import read_layout

    js = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    data = len(js).to_bytes(8, "little") + js + bytes(64)
    layout = read_layout(np.frombuffer(data, np.uint8))
    assert layout.format == "raw" and "not a valid safetensors" in layout.note
    with pytest.raises(errors.FormatError, match="nests too deeply"):
        read_layout(np.frombuffer(data, np.uint8), format="safetensors", path="deep")
    assert decompress_bytes(compress_bytes(data, threads=1)) == data


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_mutations = st.lists(st.tuples(st.integers(0, 299), st.integers(0, 255)), min_size=1, max_size=8)


def _mutate(data: bytes, muts) -> bytes:
    b = bytearray(data)
    for pos, val in muts:
        b[pos % len(b)] = val
    return bytes(b)


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@settings(max_examples=150, deadline=None)
@given(muts=_mutations)
def test_mutated_headers_never_raise_builtins(fmt, muts):
    from zipmodel.readers import check_tiling, read_layout

    data = _mutate(SAMPLES[fmt], muts)
    arr = np.frombuffer(data, np.uint8)
    layout = read_layout(arr)  # auto: a broken header falls back, never raises
    assert check_tiling(layout.segments, len(data)) is None
    try:
        read_layout(arr, format=fmt, path="x")
    except errors.ZipmodelError:
        pass


@pytest.mark.parametrize("fmt", sorted(SAMPLES))
@settings(max_examples=12, deadline=None)
@given(muts=_mutations)
def test_mutated_headers_round_trip(fmt, muts):
    from zipmodel.api import compress_bytes, decompress_bytes

    data = _mutate(SAMPLES[fmt], muts)
    try:
        blob = compress_bytes(data, threads=1)
    except errors.ZipmodelError:
        return
    assert decompress_bytes(blob) == data
