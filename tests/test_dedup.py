"""Identical segments are stored once (format 1.1 ``dup_of``) and restored byte for byte."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from safetensors.numpy import save

import zipmodel
from zipmodel.api import compress_bytes, decompress_bytes, decompress_file, verify_file
from zipmodel.container.reader import ContainerReader
from zipmodel.errors import FormatError
from zipmodel.pipeline import DEDUP_MIN, find_duplicates
from zipmodel.readers import read_layout


def tied_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = (rng.standard_normal((500, 64)) * 0.02).astype(np.float32)
    return {
        "model.embed_tokens.weight": emb,
        "model.layers.0.mlp.weight": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32),
        "model.norm.weight": np.ones(64, np.float32),
        "lm_head.weight": emb.copy(),  # tied: the same values, stored twice by the writer
    }


def tied_model(seed: int = 0) -> tuple[bytes, np.ndarray]:
    t = tied_tensors(seed)
    return save(t), t["lm_head.weight"]


def test_tied_embedding_is_stored_once(tmp_path):
    raw, emb = tied_model()
    once = save({k: v for k, v in tied_tensors().items() if k != "lm_head.weight"})
    z = compress_bytes(raw)
    assert decompress_bytes(z) == raw
    # the second copy costs index bytes, not another compressed embedding
    assert len(z) < len(compress_bytes(once)) + 1024
    with ContainerReader(io.BytesIO(z)) as r:
        assert r.index.format_version == (1, 1)
        dups = [e for e in r.index.segments if e.dup_of is not None]
        assert len(dups) == 1  # whichever of the two comes second in the file
        pair = {dups[0].segment.name, r.index.segments[dups[0].dup_of].segment.name}
        assert pair == {"lm_head.weight", "model.embed_tokens.weight"}
        dup_name = dups[0].segment.name
    path = tmp_path / "m.safetensors.zm"
    path.write_bytes(z)
    with zipmodel.open(path) as f:
        assert np.array_equal(f.get_tensor(dup_name), emb)
        info = {t.name: t for t in f.summary().tensors}
        assert info[dup_name].transform == "dup"
    verify_file(path)
    decompress_file(path, tmp_path / "out.safetensors")
    assert (tmp_path / "out.safetensors").read_bytes() == raw
    stream = io.BytesIO()
    decompress_file(path, stream)  # sequential output (zipmodel decompress -c)
    assert stream.getvalue() == raw


def test_duplicates_do_not_depend_on_threads():
    raw, _ = tied_model(1)
    assert compress_bytes(raw, threads=1) == compress_bytes(raw, threads=2)


def test_no_duplicates_writes_format_1_0():
    rng = np.random.default_rng(2)
    raw = save({"a": rng.standard_normal(4096).astype(np.float32)})
    with ContainerReader(io.BytesIO(compress_bytes(raw))) as r:
        assert r.index.format_version == (1, 0)
        assert all(e.dup_of is None for e in r.index.segments)


def test_find_duplicates_confirms_bytes_and_skips_small():
    rng = np.random.default_rng(3)
    big = rng.standard_normal(DEDUP_MIN // 4).astype(np.float32)
    small = np.ones(8, np.float32)
    raw = save({"a": big, "b": big.copy(), "c": small, "d": small.copy(), "e": big + 1})
    data = np.frombuffer(raw, np.uint8)
    layout = read_layout(data)
    names = {i: s.name for i, s in enumerate(layout.segments)}
    dups = {names[i]: names[j] for i, j in find_duplicates(data, layout).items()}
    assert dups == {"b": "a"}


def _index(raw: bytes):
    with ContainerReader(io.BytesIO(compress_bytes(raw))) as r:
        return r.index, r.index_offset


def _with_segment(index, i, **changes):
    segs = list(index.segments)
    segs[i] = dataclasses.replace(segs[i], **changes)
    return dataclasses.replace(index, segments=segs)


def test_index_rejects_bad_duplicates():
    raw, _ = tied_model(4)
    index, off = _index(raw)
    index.validate(off)
    i = next(k for k, e in enumerate(index.segments) if e.dup_of is not None)
    ref = index.segments[i].dup_of
    with pytest.raises(FormatError, match=r"format 1\.0"):
        dataclasses.replace(index, format_version=(1, 0)).validate(off)
    other = next(
        k for k, e in enumerate(index.segments) if k < i and k != ref and e.segment.size > 0
    )
    with pytest.raises(FormatError, match="does not fit"):
        _with_segment(index, i, dup_of=other).validate(off)
    with pytest.raises(FormatError, match="has chunks"):
        _with_segment(index, i, n_chunks=1).validate(off)


def test_dup_of_must_name_an_earlier_segment():
    from zipmodel.container.index import _parse_segment

    seg = {"kind": "verbatim", "offset": 0, "size": 4096, "chunks": [0, 0], "dup_of": 3}
    with pytest.raises(FormatError, match="dup_of"):
        _parse_segment(3, seg, None)
    with pytest.raises(FormatError, match="dup_of"):
        _parse_segment(5, dict(seg, dup_of="0"), None)
    assert _parse_segment(5, seg, None).dup_of == 3
