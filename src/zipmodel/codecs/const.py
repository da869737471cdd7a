"""``const``: a stream of one repeated byte (zero planes of BF16-origin FP32, zero tensors)."""

from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError
from .base import Codec

__all__ = ["ConstCodec"]


class ConstCodec(Codec):
    codec_id = 1
    name = "const"

    def encode(self, data: np.ndarray) -> bytes | None:
        if data.size == 0:
            return None
        v = data[0]
        if not (data == v).all():
            return None
        return bytes([int(v)])

    def decode(self, payload: memoryview, out: np.ndarray) -> None:
        if len(payload) != 1:
            raise CorruptDataError(f"const stream payload has {len(payload)} bytes, expected 1")
        out.fill(payload[0])

    def estimate(self, hist: np.ndarray, n: int) -> float | None:
        return 1.0 if n and int(np.count_nonzero(hist)) == 1 else None
