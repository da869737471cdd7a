"""Lossless float field split (ZipNN-style, DESIGN §2).

The whole exponent field goes to one byte stream and the sign travels with the mantissa: the
word is rotated left by one bit, so for BF16 and F32 the top byte is exactly the 8-bit exponent
and the sign lands in the lowest bit. Exponents of trained weights have ~2.6 bits of entropy;
the sign and the low mantissa bits are close to random, so keeping them apart lets the entropy
coders spend bits only where they pay.

* ``split-bf16``: [exponent][mantissa(7) | sign]                  (2 streams)
* ``split-f32``:  [exponent][mantissa 22..15][14..7][6..0 | sign]  (4 streams)
* ``split-f16``:  [high byte][low byte] — measured on real fp16 data, isolating the 5-bit
  exponent gains nothing over coding the high byte (sign, exponent, 2 mantissa bits) whole,
  and byte planes do not depend on the data's 2-byte alignment inside an unknown container.
* FP8 (E4M3, E5M2) and integers use ``identity``: one byte stream, coded whole.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from .. import _jit
from .base import Transform


def _new(n: int, size: int) -> list[np.ndarray]:
    return [np.empty(size, np.uint8) for _ in range(n)]


def _k():
    """The split kernels (Numba), compiled or loaded on first use."""
    return _jit.kernels("split")


__all__ = ["Identity", "SplitBF16", "SplitF16", "SplitF32"]

_LITTLE = sys.byteorder == "little"


def _words(a: np.ndarray, itemsize: int) -> np.ndarray | None:
    """``a`` viewed as little-endian words when it is aligned for them, else None."""
    if _LITTLE and a.ctypes.data % itemsize == 0 and a.flags.c_contiguous:
        return a.view(np.uint32 if itemsize == 4 else np.uint16)
    return None


class Identity(Transform):
    """One stream: the bytes as they are."""

    transform_id = 0
    name = "identity"

    def forward(self, raw: np.ndarray, out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        return [raw]

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        out[:] = streams[0]


class SplitBF16(Transform):
    """BF16 → exponent byte, sign|mantissa byte."""

    transform_id = 1
    name = "split-bf16"
    dtype = "BF16"
    itemsize = 2
    stream_names = ("exponent", "sign-mantissa")
    stream_kinds = ("field", "field")
    stream_contexts = (None, 0)  # the top mantissa bits depend on the exponent
    stream_2d = (True, False)

    def forward(self, raw: np.ndarray, out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        exp, sm = out if out is not None else _new(2, raw.size // 2)
        _k()._split_bf16(_jit.readonly(raw), exp, sm)
        return [exp, sm]

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        _k()._merge_bf16(_jit.readonly(streams[0]), _jit.readonly(streams[1]), out)


class SplitF16(Transform):
    """F16 → high byte, low byte."""

    transform_id = 2
    name = "split-f16"
    dtype = "F16"
    itemsize = 2
    stream_names = ("high", "low")
    stream_kinds = ("field", "field")
    stream_contexts = (None, 0)
    stream_2d = (True, False)

    def forward(self, raw: np.ndarray, out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        hi, lo = out if out is not None else _new(2, raw.size // 2)
        _k()._split_f16(_jit.readonly(raw), hi, lo)
        return [hi, lo]

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        _k()._merge_f16(_jit.readonly(streams[0]), _jit.readonly(streams[1]), out)


class SplitF32(Transform):
    """F32 → exponent byte and three sign|mantissa bytes, most significant first."""

    transform_id = 3
    name = "split-f32"
    dtype = "F32"
    itemsize = 4
    stream_names = ("exponent", "mantissa-hi", "mantissa-mid", "mantissa-lo-sign")
    stream_kinds = ("field",) * 4
    stream_contexts = (None, 0, None, None)
    stream_2d = (True, False, False, False)

    def forward(self, raw: np.ndarray, out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        streams = list(out) if out is not None else _new(4, raw.size // 4)
        words = _words(raw, 4)
        if words is not None:
            _k()._split_f32_words(_jit.readonly(words), *streams)
        else:
            _k()._split_f32(_jit.readonly(raw), *streams)
        return streams

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        ro = [_jit.readonly(s) for s in streams]
        words = _words(out, 4)
        if words is not None:
            _k()._merge_f32_words(*ro, words)
        else:
            _k()._merge_f32(*ro, out)
