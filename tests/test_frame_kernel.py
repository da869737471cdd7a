"""The one-call chunk decoder (``zipmodel._kernels.frame``) against the Python path it
short-cuts (frame parse, codec decoders, transform inverse, checksums).

It must decode every frame it accepts to the same bytes as the Python path, accept the common
frames (so the speed-up is real), leave the frame buffer untouched, and refuse whatever the
Python path refuses (then the Python path raises the precise error).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from subproc import run_python
from zipmodel.codecs.select import policy_for_level
from zipmodel.container.frames import HEADROOM, build_frame, parse_frame
from zipmodel.errors import ZipmodelError
from zipmodel.pipeline import decode_chunk, encode_chunk
from zipmodel.pipeline.fused import decode_frame_fused
from zipmodel.stages.split import Identity, SplitBF16, SplitF16, SplitF32

TRANSFORMS = {"bf16": SplitBF16(), "f16": SplitF16(), "f32": SplitF32(), "identity": Identity()}
FLOATS = {"bf16": None, "f16": np.float16, "f32": np.float32}


def _weights(kind: str, n: int, seed: int, scale: float) -> bytes:
    """LLM-like values (so huffman and rans get chosen), or random bytes for identity."""
    rng = np.random.default_rng(seed)
    if kind == "identity":
        return rng.geometric(min(0.9, scale), n).astype(np.uint8).tobytes()
    w = (rng.standard_normal(n) * scale).astype(np.float32)
    if kind == "bf16":
        return (w.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return w.astype(FLOATS[kind]).tobytes()


def _frame_buffer(frame: bytes, shift: int = 0) -> tuple[np.ndarray, int]:
    fb = np.zeros(HEADROOM + len(frame) + 16, np.uint8)[shift:]
    fb[HEADROOM : HEADROOM + len(frame)] = np.frombuffer(frame, np.uint8)
    return fb, len(frame)


def _python_path(frame: bytes, n: int, row: dict) -> bytes | None:
    out = np.empty(n, np.uint8)
    try:
        decode_chunk(frame, out, row=row)
    except ZipmodelError:
        return None
    return out.tobytes()


def _fused(frame: bytes, n: int, row: dict, out_shift: int = 0) -> bytes | None:
    fb, size = _frame_buffer(frame)
    before = fb.copy()
    out = np.zeros(n + 8, np.uint8)[out_shift : out_shift + n]
    ok = decode_frame_fused(fb, size, out, row)
    assert np.array_equal(fb, before), "the frame buffer must come back as it was"
    return out.tobytes() if ok else None


def _row(transform: int, src_offset: int, n_streams: int) -> dict:
    return {"transform": transform, "src_offset": src_offset, "n_streams": n_streams}


def _encode(kind: str, raw: bytes, level: str, src_offset: int):
    t = TRANSFORMS[kind]
    ch = encode_chunk(np.frombuffer(raw, np.uint8), src_offset, t, policy_for_level(level))
    return ch.frame.tobytes(), _row(ch.transform_id, src_offset, len(ch.streams))


@given(
    kind=st.sampled_from(sorted(TRANSFORMS)),
    n=st.integers(0, 40000),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 0.02, 0.5, 30.0]),
    level=st.sampled_from(["fast", "default", "max"]),
    src_offset=st.integers(0, 2**40),
    out_shift=st.integers(0, 7),
)
def test_fused_decode_equals_python_path(kind, n, seed, scale, level, src_offset, out_shift):
    check_roundtrip(kind, n, seed, scale, level, src_offset, out_shift)


def check_roundtrip(kind, n, seed, scale, level, src_offset, out_shift):
    t = TRANSFORMS[kind]
    raw = _weights(kind, n, seed, scale)
    raw = raw[: len(raw) - len(raw) % t.itemsize]
    frame, row = _encode(kind, raw, level, src_offset)
    assert _python_path(frame, len(raw), row) == raw
    got = _fused(frame, len(raw), row, out_shift)
    if got is not None:
        assert got == raw
    codecs = {s.codec for s in parse_frame(frame).streams}
    contexts = {s.context for s in parse_frame(frame).streams}
    if codecs <= {0, 3, 4} and contexts == {0xFF}:
        assert got == raw, "a raw/huffman/rans frame must take the fused path"


@pytest.mark.parametrize("kind", ["bf16", "f32", "f16"])
@pytest.mark.parametrize("level", ["fast", "default"])
def test_common_frames_take_the_fused_path(kind, level):
    raw = _weights(kind, 300_000, 7, 0.02)
    frame, row = _encode(kind, raw, level, 12345)
    codecs = [s.codec for s in parse_frame(frame).streams]
    assert codecs[0] in (3, 4), codecs  # the exponent is entropy-coded
    assert _fused(frame, len(raw), row) == raw
    # a second chunk with the same huffman table reuses the thread's tables
    assert _fused(frame, len(raw), row, 3) == raw


def _mutated(frame: bytes, where: str, pos: int, value: int) -> bytes:
    """``frame`` with one byte of a payload or a stream entry changed, re-checksummed, so only
    the decoders' own checks can catch it."""
    f = parse_frame(frame)
    h = f.header
    streams = list(f.streams)
    payloads = [bytearray(p) for p in f.payloads]
    j = pos % len(streams)
    if where == "payload":
        if not payloads[j]:
            return frame
        payloads[j][(pos // len(streams)) % len(payloads[j])] = value
    else:
        s = streams[j]
        fields = [s.codec, s.context, s.decoded_size, s.encoded_size]
        fields[pos % 3] = value if pos % 3 < 2 else max(0, s.decoded_size + value - 128)
        streams[j] = type(s)(fields[0], fields[1], fields[2], s.encoded_size)
    parts = build_frame(
        h.magic, h.transform, h.src_offset, h.raw_size, f.raw_check, streams, payloads
    )
    return b"".join(bytes(p) for p in parts)


@given(
    kind=st.sampled_from(["bf16", "f32", "f16", "identity"]),
    level=st.sampled_from(["fast", "default"]),
    seed=st.integers(0, 1000),
    where=st.sampled_from(["payload", "entry"]),
    pos=st.integers(0, 2**20),
    value=st.integers(0, 255),
)
def test_damaged_frames_agree_with_python_path(kind, level, seed, where, pos, value):
    check_damaged(kind, level, seed, where, pos, value)


def check_damaged(kind, level, seed, where, pos, value, n=6000):
    t = TRANSFORMS[kind]
    raw = _weights(kind, n, seed, 0.02)
    raw = raw[: len(raw) - len(raw) % t.itemsize]
    frame, row = _encode(kind, raw, level, 0)
    bad = _mutated(frame, where, pos, value)
    want = _python_path(bad, len(raw), row)
    got = _fused(bad, len(raw), row)
    if got is not None:  # accepted: the Python path accepts it too, with the same bytes
        assert got == want


def test_refuses_what_the_index_does_not_say():
    raw = _weights("bf16", 5000, 3, 0.02)
    frame, row = _encode("bf16", raw, "fast", 64)
    for bad in (_row(3, 64, 2), _row(1, 65, 2), _row(1, 64, 4)):
        assert _fused(frame, len(raw), bad) is None
        assert _python_path(frame, len(raw), bad) is None
    assert _fused(frame, len(raw) - 2, row) is None  # wrong output size
    flipped = bytearray(frame)
    flipped[-1] ^= 1  # frame checksum
    assert _fused(bytes(flipped), len(raw), row) is None


def fixed_cases() -> None:
    """A few of each case above, for the uncompiled run below."""
    rng = np.random.default_rng(5)
    for kind in sorted(TRANSFORMS):
        for level in ("fast", "default"):
            check_roundtrip(kind, 1501, 1, 0.02, level, 7, 1)
            for _ in range(3):
                where = ("payload", "entry")[int(rng.integers(2))]
                check_damaged(
                    kind, level, 2, where, int(rng.integers(1 << 20)), int(rng.integers(256)), 1500
                )


def test_kernel_bodies_without_jit():
    """NUMBA_DISABLE_JIT=1: the kernel bodies run as Python, where numpy's bounds checks turn
    any stray index into an IndexError (and coverage sees them)."""
    run_python("import test_frame_kernel as t; t.fixed_cases()", NUMBA_DISABLE_JIT="1")


@pytest.mark.slow
def test_compiled_kernel_with_bounds_checks(tmp_path):
    """The compiled kernel with Numba's bounds checks on, on damaged frames."""
    here = Path(__file__).parent
    env = {
        **os.environ,
        "NUMBA_BOUNDSCHECK": "1",
        "NUMBA_CACHE_DIR": str(tmp_path),
        "ZIPMODEL_QUIET_JIT": "1",
        "PYTHONPATH": os.pathsep.join([str(here), *sys.path]),
    }
    code = "import test_frame_kernel as t; t.fixed_cases()"
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _rehashed(frame: bytearray) -> bytes:
    """The frame with its header checksum recomputed (header[0:24] + body)."""
    import struct

    import xxhash

    frame[24:32] = struct.pack("<Q", xxhash.xxh3_64_intdigest(bytes(frame[:24] + frame[32:])))
    return bytes(frame)


def test_refuses_fields_format_1_fixes_as_zero():
    """Frame flags and stream-entry reserved bytes must be zero (docs/format.md), on the
    kernel's path as on the Python path, even with the frame checksum made to match."""
    raw = _weights("bf16", 5000, 4, 0.02)
    frame, row = _encode("bf16", raw, "default", 0)
    assert _fused(frame, len(raw), row) == raw
    for at in (6, 7, 32 + 2, 32 + 3, 44 + 2, 44 + 3):  # flags; reserved of streams 0 and 1
        bad = bytearray(frame)
        bad[at] = 1
        bad = _rehashed(bad)
        assert _fused(bad, len(raw), row) is None, at
        assert _python_path(bad, len(raw), row) is None, at


def test_refuses_a_frame_the_stream_table_does_not_describe():
    """With the index's stream table given, the frame's entries must equal its rows."""
    raw = _weights("f32", 4000, 5, 0.02)
    frame, row = _encode("f32", raw, "default", 0)
    ns = row["n_streams"]
    entries = np.frombuffer(frame[32 : 32 + 12 * ns], np.uint8)
    table = np.concatenate([np.zeros(24, np.uint8), entries])  # rows 2.. are this frame's
    fb, size = _frame_buffer(frame)
    out = np.empty(len(raw), np.uint8)
    assert decode_frame_fused(fb, size, out, dict(row, first_stream=2), table)
    assert out.tobytes() == raw
    assert not decode_frame_fused(fb, size, out, dict(row, first_stream=1), table)
    other = table.copy()
    other[24 + 12 * (ns - 1) + 4] ^= 1  # the last stream's decoded size
    assert not decode_frame_fused(fb, size, out, dict(row, first_stream=2), other)
    assert not decode_frame_fused(fb, size, out, dict(row, first_stream=2), table[:-1])
