"""``zstd``: Zstandard (via python-zstandard), for streams with structure beyond order 0.

The compression level is a codec parameter chosen by the pipeline's level; decoding does not
need it. Frames carry their content size, which must equal the size the container records.
Compressor and decompressor objects are kept per thread (they are not thread-safe).
"""

from __future__ import annotations

import threading

import numpy as np
import zstandard

from ..errors import CorruptDataError
from .base import Codec

__all__ = ["ZstdCodec"]

_local = threading.local()


def _cctx(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "cctx", None)
    if cache is None:
        cache = _local.cctx = {}
    c = cache.get(level)
    if c is None:
        # write_content_size lets the decoder check the size before decoding anything.
        c = cache[level] = zstandard.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=False
        )
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


class ZstdCodec(Codec):
    codec_id = 2
    name = "zstd"

    def __init__(self, level: int = 3):
        self.level = level

    def encode(self, data: np.ndarray) -> bytes:
        return _cctx(self.level).compress(data)

    def decode(self, payload: memoryview, out: np.ndarray) -> None:
        try:
            params = zstandard.get_frame_parameters(payload)
        except zstandard.ZstdError as e:
            raise CorruptDataError(f"zstd stream header is invalid: {e}") from None
        if params.content_size != out.size:
            raise CorruptDataError(
                f"zstd stream declares {params.content_size} bytes, expected {out.size}"
            )
        try:
            # max_output_size bounds the allocation even if the frame header lies.
            data = _dctx().decompress(payload, max_output_size=out.size)
        except zstandard.ZstdError as e:
            raise CorruptDataError(f"zstd stream is corrupt: {e}") from None
        if len(data) != out.size:
            raise CorruptDataError(f"zstd stream decoded to {len(data)} bytes, expected {out.size}")
        out[:] = np.frombuffer(data, np.uint8)
