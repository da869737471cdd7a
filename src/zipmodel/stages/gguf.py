"""Block-field split for GGUF quantized tensors.

A GGUF block interleaves fields of very different statistics: fp16 scales (and mins) whose
high byte (sign, exponent, two mantissa bits) has a few bits of entropy, packed sub-block
scales, and the packed quants, which are close to random. Coded whole, the scales drown in the
quants; split into one stream per field, each gets its own codec. A chunk is a whole number of
blocks (``itemsize`` = the block's bytes), so a stream is one field of every block, in order.

Every fp16 field becomes two streams, its low byte and its high byte: measured on Q4_1 and
Q8_0 from a real file, byte planes beat one 2-byte stream per field (0.883 vs 0.906 of the
Q4_1 bytes) and beat putting d and m together. All streams are kind ``"bytes"`` so zstd is
tried too (neighbouring blocks of a row often repeat a scale). Only types whose split was
measured to pay are registered (see ``docs/format.md``); others are coded whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from .base import Transform

__all__ = ["BLOCK_SPLITS", "BlockSplit"]


class BlockSplit(Transform):
    """Split each block into one stream per field (``fields``: name, first byte, width)."""

    fields: ClassVar[tuple[tuple[str, int, int], ...]]

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        pos = 0
        for _, start, width in cls.fields:  # fields tile the block, in order
            assert start == pos and width > 0, cls.__name__
            pos += width
        assert pos == cls.itemsize, cls.__name__
        n = len(cls.fields)
        cls.stream_names = tuple(f[0] for f in cls.fields)
        cls.stream_kinds = ("bytes",) * n
        cls.stream_contexts = (None,) * n
        cls.stream_2d = (False,) * n
        cls._widths = np.array([f[2] for f in cls.fields], np.int64)

    def stream_sizes(self, raw_size: int) -> tuple[int, ...]:
        if raw_size % self.itemsize:
            raise ValueError(f"{self.name}: {raw_size} bytes is not a whole number of blocks")
        n = raw_size // self.itemsize
        return tuple(n * w for _, _, w in self.fields)

    def stream_sizes_array(self, raw_sizes: np.ndarray) -> np.ndarray:
        n = np.asarray(raw_sizes, np.int64) // self.itemsize
        return n[:, None] * self._widths[None, :]

    def forward(self, raw: np.ndarray, out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        n = raw.size // self.itemsize
        blocks = raw.reshape(n, self.itemsize)
        streams = (
            list(out) if out is not None else [np.empty(n * w, np.uint8) for w in self._widths]
        )
        for s, (_, start, width) in zip(streams, self.fields):
            s.reshape(n, width)[...] = blocks[:, start : start + width]
        return streams

    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        n = out.size // self.itemsize
        blocks = out.reshape(n, self.itemsize)
        for s, (_, start, width) in zip(streams, self.fields):
            blocks[:, start : start + width] = s.reshape(n, width)


def _f16(name: str, start: int) -> tuple[tuple[str, int, int], ...]:
    """An fp16 field as its low-byte and high-byte streams."""
    return ((f"{name}-lo", start, 1), (f"{name}-hi", start + 1, 1))


class SplitQ4_0(BlockSplit):
    """Q4_0 (18 bytes / 32 elements): fp16 d, 16 bytes of 4-bit quants."""

    transform_id = 32
    name = "gguf-q4_0"
    dtype = "GGUF_Q4_0"
    itemsize = 18
    fields = (*_f16("d", 0), ("qs", 2, 16))


class SplitQ4_1(BlockSplit):
    """Q4_1 (20 bytes / 32 elements): fp16 d, fp16 m, 16 bytes of 4-bit quants."""

    transform_id = 33
    name = "gguf-q4_1"
    dtype = "GGUF_Q4_1"
    itemsize = 20
    fields = (*_f16("d", 0), *_f16("m", 2), ("qs", 4, 16))


class SplitQ5_0(BlockSplit):
    """Q5_0 (22 bytes / 32 elements): fp16 d, 4 bytes of high bits, 16 bytes of low nibbles."""

    transform_id = 34
    name = "gguf-q5_0"
    dtype = "GGUF_Q5_0"
    itemsize = 22
    fields = (*_f16("d", 0), ("qh", 2, 4), ("qs", 6, 16))


class SplitQ5_1(BlockSplit):
    """Q5_1 (24 bytes / 32 elements): fp16 d, fp16 m, high bits, low nibbles."""

    transform_id = 35
    name = "gguf-q5_1"
    dtype = "GGUF_Q5_1"
    itemsize = 24
    fields = (*_f16("d", 0), *_f16("m", 2), ("qh", 4, 4), ("qs", 8, 16))


class SplitQ8_0(BlockSplit):
    """Q8_0 (34 bytes / 32 elements): fp16 d, 32 int8 quants."""

    transform_id = 36
    name = "gguf-q8_0"
    dtype = "GGUF_Q8_0"
    itemsize = 34
    fields = (*_f16("d", 0), ("qs", 2, 32))


class SplitQ4_K(BlockSplit):
    """Q4_K (144 bytes / 256): fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, quants."""

    transform_id = 37
    name = "gguf-q4_k"
    dtype = "GGUF_Q4_K"
    itemsize = 144
    fields = (*_f16("d", 0), *_f16("dmin", 2), ("scales", 4, 12), ("qs", 16, 128))


class SplitQ5_K(BlockSplit):
    """Q5_K (176 bytes / 256): as Q4_K plus 32 bytes of high bits."""

    transform_id = 38
    name = "gguf-q5_k"
    dtype = "GGUF_Q5_K"
    itemsize = 176
    fields = (
        *_f16("d", 0),
        *_f16("dmin", 2),
        ("scales", 4, 12),
        ("qh", 16, 32),
        ("qs", 48, 128),
    )


class SplitQ6_K(BlockSplit):
    """Q6_K (210 bytes / 256): low nibbles, high 2-bit pairs, 16 int8 scales, fp16 d."""

    transform_id = 39
    name = "gguf-q6_k"
    dtype = "GGUF_Q6_K"
    itemsize = 210
    fields = (("ql", 0, 128), ("qh", 128, 64), ("scales", 192, 16), *_f16("d", 208))


class SplitQ3_K(BlockSplit):
    """Q3_K (110 bytes / 256): high-bit mask, 2-bit quants, 12 bytes of 6-bit scales, fp16 d."""

    transform_id = 40
    name = "gguf-q3_k"
    dtype = "GGUF_Q3_K"
    itemsize = 110
    fields = (("hmask", 0, 32), ("qs", 32, 64), ("scales", 96, 12), *_f16("d", 108))


class SplitIQ4_XS(BlockSplit):
    """IQ4_XS (136 bytes / 256): fp16 d, 16-bit high scale bits, 4 bytes of low scale nibbles,
    128 bytes of 4-bit grid indices."""

    transform_id = 41
    name = "gguf-iq4_xs"
    dtype = "GGUF_IQ4_XS"
    itemsize = 136
    fields = (*_f16("d", 0), ("scales_h", 2, 2), ("scales_l", 4, 4), ("qs", 8, 128))


# dtype name -> transform
_SPLIT_CLASSES = (
    SplitQ4_0, SplitQ4_1, SplitQ5_0, SplitQ5_1, SplitQ8_0, SplitQ4_K, SplitQ5_K, SplitQ6_K,
    SplitQ3_K, SplitIQ4_XS,
)  # fmt: skip
# dtype name -> transform (each class names its GGUF dtype)
BLOCK_SPLITS: dict[str, BlockSplit] = {c.dtype: c() for c in _SPLIT_CLASSES}
