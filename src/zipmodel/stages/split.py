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

from collections.abc import Sequence

import numpy as np

from .base import Transform

__all__ = ["Identity", "SplitBF16", "SplitF16", "SplitF32"]


class Identity(Transform):
    """One stream: the bytes as they are."""

    transform_id = 0
    name = "identity"

    def forward(self, raw: np.ndarray) -> list[np.ndarray]:
        return [raw]

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        out[:] = streams[0]


class SplitBF16(Transform):
    """BF16 → exponent byte, sign|mantissa byte."""

    transform_id = 1
    name = "split-bf16"
    itemsize = 2
    stream_names = ("exponent", "sign-mantissa")
    stream_kinds = ("field", "field")

    def forward(self, raw: np.ndarray) -> list[np.ndarray]:
        w = raw.view("<u2")
        r = ((w << 1) | (w >> 15)).view(np.uint8).reshape(-1, 2)
        return [np.ascontiguousarray(r[:, 1]), np.ascontiguousarray(r[:, 0])]

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        exp, sm = streams
        r = (exp.astype(np.uint16) << 8) | sm
        out.view("<u2")[:] = (r >> 1) | (r << 15)


class SplitF16(Transform):
    """F16 → high byte, low byte."""

    transform_id = 2
    name = "split-f16"
    itemsize = 2
    stream_names = ("high", "low")
    stream_kinds = ("field", "field")

    def forward(self, raw: np.ndarray) -> list[np.ndarray]:
        b = raw.reshape(-1, 2)
        return [np.ascontiguousarray(b[:, 1]), np.ascontiguousarray(b[:, 0])]

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        b = out.reshape(-1, 2)
        b[:, 1] = streams[0]
        b[:, 0] = streams[1]


class SplitF32(Transform):
    """F32 → exponent byte and three sign|mantissa bytes, most significant first."""

    transform_id = 3
    name = "split-f32"
    itemsize = 4
    stream_names = ("exponent", "mantissa-hi", "mantissa-mid", "mantissa-lo-sign")
    stream_kinds = ("field",) * 4

    def forward(self, raw: np.ndarray) -> list[np.ndarray]:
        w = raw.view("<u4")
        r = ((w << 1) | (w >> 31)).view(np.uint8).reshape(-1, 4)
        return [np.ascontiguousarray(r[:, i]) for i in (3, 2, 1, 0)]

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        r = np.empty((streams[0].size, 4), np.uint8)
        for col, s in zip((3, 2, 1, 0), streams):
            r[:, col] = s
        w = r.view("<u4").reshape(-1)
        out.view("<u4")[:] = (w >> 1) | (w << 31)
