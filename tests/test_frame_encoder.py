"""The one-call chunk encoder (``zipmodel._kernels.frame.encode_frame``) against the Python
path it short-cuts (split, the chooser per stream, ``FrameWriter``, checksums).

For every float chunk it takes, it must write the frame the Python path writes, byte for
byte (so containers do not change with it), at ``fast`` and ``default``; it must hand the
chunk back when the ``default`` level's zstd probe could pick zstd, and leave other
transforms and levels to the Python path.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zipmodel.pipeline.chunk as chunk_mod
from subproc import run_python
from zipmodel.codecs.select import policy_for_level
from zipmodel.pipeline import encode_chunk
from zipmodel.pipeline.fused import encode_frame_fused
from zipmodel.stages.split import Identity, SplitBF16, SplitF16, SplitF32

TRANSFORMS = {"bf16": SplitBF16(), "f16": SplitF16(), "f32": SplitF32()}
SPECIAL32 = np.array(
    [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0xFFBADBAD, 0x00000001,
     0x807FFFFF, 0x3F800000],
    np.uint32,
)  # fmt: skip


def _chunk(kind: str, n_elems: int, seed: int, scale: float, special: float) -> bytes:
    """LLM-like values with a share of specials (NaN payloads, -0.0, infinities,
    subnormals), as the dtype's bytes."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n_elems) * scale).astype(np.float32).view(np.uint32)
    mask = rng.random(n_elems) < special
    w[mask] = rng.choice(SPECIAL32, int(mask.sum()))
    if kind == "bf16":
        return (w >> 16).astype(np.uint16).tobytes()
    if kind == "f16":
        with np.errstate(over="ignore", invalid="ignore"):  # (infinities wanted)
            return w.view(np.float32).astype(np.float16).tobytes()
    return w.tobytes()


def _both(raw: np.ndarray, kind: str, level: str, src_offset: int = 0):
    """(frame of the fused path or None, frame of the Python path)."""
    t, policy = TRANSFORMS[kind], policy_for_level(level)
    cap = 40 + 12 * t.n_streams + raw.size + 64
    fused = encode_frame_fused(raw, src_offset, t, policy, np.zeros(cap, np.uint8))
    # the Python path of the same split frame (encode_chunk may then prefer a tiny chunk
    # coded whole: see test_tiny_chunks_keep_the_smaller_frame)
    python = chunk_mod._encode_frame(raw, src_offset, t, policy, None, np.zeros(cap, np.uint8))
    frame = None if fused is None else (bytes(fused[0]), fused[1])
    return frame, (bytes(python[0]), python[1])


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["bf16", "f16", "f32"]),
    n_elems=st.one_of(st.integers(0, 3000), st.integers(130_000, 300_000)),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([1e-3, 0.02, 1.0, 3e4]),
    special=st.sampled_from([0.0, 0.01, 0.5]),
    level=st.sampled_from(["fast", "default"]),
    shift=st.integers(0, 3),
    src_offset=st.integers(0, 2**40),
)
def test_same_frame_as_python_path(kind, n_elems, seed, scale, special, level, shift, src_offset):
    data = _chunk(kind, n_elems, seed, scale, special)
    # an odd start: tensors may begin anywhere in a file
    raw = np.frombuffer(b"\0" * shift + data, np.uint8)[shift:]
    fused, python = _both(raw, kind, level, src_offset)
    if fused is not None:
        assert fused == python


@pytest.mark.parametrize("kind", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("level", ["fast", "default"])
def test_weights_take_the_fused_path(kind, level):
    raw = np.frombuffer(_chunk(kind, 300_000, 1, 0.02, 0.001), np.uint8)
    fused, python = _both(raw, kind, level)
    assert fused is not None and fused == python


def test_constant_and_empty_streams():
    raw = np.zeros(4000, np.uint8)  # every stream one value: const payloads
    fused, python = _both(raw, "bf16", "default")
    assert fused == python and {s.codec for s in fused[1]} == {1}
    fused, python = _both(np.zeros(0, np.uint8), "f32", "fast")
    assert fused == python


def test_structure_goes_to_the_python_chooser():
    """A stream zstd may beat (repeats) is handed back at ``default`` and coded the Python
    way; ``fast`` never tries zstd on a field, so it stays fused."""
    block = _chunk("bf16", 2048, 3, 0.02, 0.0)
    raw = np.frombuffer(block * 200, np.uint8)
    fused, python = _both(raw, "bf16", "default")
    assert fused is None and 2 in {s.codec for s in python[1]}
    fused, python = _both(raw, "bf16", "fast")
    assert fused == python


def test_other_transforms_and_levels_keep_the_python_path():
    raw = np.frombuffer(_chunk("bf16", 5000, 2, 0.02, 0.0), np.uint8)
    assert (
        encode_frame_fused(raw, 0, Identity(), policy_for_level("fast"), np.zeros(20000, np.uint8))
        is None
    )
    assert (
        encode_frame_fused(raw, 0, SplitBF16(), policy_for_level("max"), np.zeros(20000, np.uint8))
        is None
    )


def fixed_cases() -> None:
    for kind in ("bf16", "f16", "f32"):
        for level in ("fast", "default"):
            for n in (0, 7, 2000):
                raw = np.frombuffer(_chunk(kind, n, 4, 0.02, 0.05), np.uint8)
                fused, python = _both(raw, kind, level, 12345)
                assert fused is None or fused == python, (kind, level, n)


def test_kernel_bodies_without_jit():
    """NUMBA_DISABLE_JIT=1: the encoder kernel as Python writes the same frames."""
    run_python("import test_frame_encoder as t; t.fixed_cases()", NUMBA_DISABLE_JIT="1")


@pytest.mark.parametrize("level", ["fast", "default", "max"])
def test_tiny_chunks_keep_the_smaller_frame(level):
    """A split chunk of at most 4 KiB is also coded whole; the smaller frame is kept, and
    either decodes to the chunk."""
    from zipmodel.pipeline import decode_chunk
    from zipmodel.pipeline.chunk import TINY_CHUNK

    policy = policy_for_level(level)
    rng = np.random.default_rng(0)
    bias = (rng.standard_normal(64) * 0.02).astype(np.float32).view(np.uint8)  # 256 B
    ones = np.ones(1024, np.float32).view(np.uint8)  # 4 KiB of one value: whole is tiny too
    big = (rng.standard_normal(4096) * 0.02).astype(np.float32).view(np.uint8)  # 16 KiB
    for raw, whole in ((bias, True), (ones, True), (big, False)):
        ch = encode_chunk(raw, 7, SplitF32(), policy)
        split = chunk_mod._encode_frame(
            raw, 7, SplitF32(), policy, None, np.zeros(raw.size + 200, np.uint8)
        )
        assert (ch.transform_id == Identity().transform_id) == whole, raw.size
        assert ch.frame_size <= split[0].size
        if whole:
            assert raw.size <= TINY_CHUNK and ch.frame_size < split[0].size
        out = np.empty(raw.size, np.uint8)
        decode_chunk(chunk_mod.parse_frame(ch.frame), out)
        assert out.tobytes() == raw.tobytes()
