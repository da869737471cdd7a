"""``raw``: the stream stored as it is (what near-random streams cost: nothing to decode)."""

from __future__ import annotations

import numpy as np

from ..errors import CorruptDataError
from .base import Codec

__all__ = ["RawCodec"]


class RawCodec(Codec):
    codec_id = 0
    name = "raw"

    def encode(self, data: np.ndarray) -> bytes:
        return data.tobytes()

    def decode(self, payload: memoryview, out: np.ndarray) -> None:
        if len(payload) != out.size:
            raise CorruptDataError(f"raw stream holds {len(payload)} bytes, expected {out.size}")
        out[:] = np.frombuffer(payload, np.uint8)

    def estimate(self, hist: np.ndarray, n: int) -> float:
        return float(n)
