"""Choosing the codec of each stream of each chunk.

Every stream is coded by whichever candidate makes it smallest, ``raw`` when nothing saves
at least ``min_gain`` (decoding raw is a copy). Trying must be cheap: a byte histogram comes
first; a stream of one repeated byte is ``const``; a float-field stream whose order-0 entropy
is within ``min_gain`` of 8 bits (the BF16 sign|mantissa byte) is stored raw without trying
anything; codecs that can estimate their size from the histogram are tried best-first.

Stream kinds (declared by transforms): ``"field"`` streams (float exponent / mantissa bytes)
are close to i.i.d., so an order-0 coder is the right tool; ``"bytes"`` streams (headers,
integers, FP8 codes, unknown data) may have structure that only zstd finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from . import get_codec
from .base import Codec
from .const import ConstCodec
from .raw import RawCodec
from .zstd import ZstdCodec

__all__ = ["LEVELS", "CodecPolicy", "encode_stream", "entropy_bytes", "policy_for_level"]

Buffer = Union[bytes, np.ndarray]  # noqa: UP007 (a runtime alias on 3.10)
RAW, CONST = RawCodec.codec_id, ConstCodec.codec_id
LEVELS = ("fast", "default", "max")


@dataclass(frozen=True)
class CodecPolicy:
    """What the chooser may try, fixed by the compression level."""

    order0: tuple[Codec, ...]  # codecs with a histogram estimate, for all streams
    general: tuple[Codec, ...]  # codecs that must be tried (zstd), for "bytes" streams
    general_on_fields: bool = False  # also try them on "field" streams
    try_all: bool = False  # try every order-0 candidate, not only the best estimate
    min_gain: float = 0.005


def policy_for_level(level: str = "default") -> CodecPolicy:
    """The codec policy of a named level (``fast``, ``default``, ``max``)."""
    if level == "fast":
        return CodecPolicy(order0=(), general=(ZstdCodec(1),), general_on_fields=True)
    if level == "default":
        return CodecPolicy(order0=(), general=(ZstdCodec(3),), general_on_fields=True)
    if level == "max":
        return CodecPolicy(
            order0=(), general=(ZstdCodec(19),), general_on_fields=True, try_all=True
        )
    raise ValueError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")


def entropy_bytes(hist: np.ndarray) -> float:
    """Order-0 entropy of a histogram, in bytes (the floor for any order-0 coder)."""
    counts = hist[hist > 0].astype(np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0
    return float(-(counts * np.log2(counts / n)).sum() / 8)


def encode_stream(data: np.ndarray, kind: str, policy: CodecPolicy) -> tuple[int, Buffer]:
    """Code one stream; returns ``(codec_id, payload)`` (``data`` itself when stored raw)."""
    n = int(data.size)
    if n == 0:
        return RAW, data
    hist = np.bincount(data, minlength=256)
    if int(np.count_nonzero(hist)) == 1:
        return CONST, bytes([int(data[0])])
    limit = n * (1.0 - policy.min_gain)
    floor = entropy_bytes(hist)
    if kind == "field" and floor >= limit:
        return RAW, data  # near-random: storing it raw is the answer, found in one histogram
    best_id, best = RAW, None
    best_size = limit
    scored = []
    for c in policy.order0:
        e = c.estimate(hist, n)
        if e is not None and e < best_size:
            scored.append((e, c))
    scored.sort(key=lambda t: t[0])
    for e, c in scored if policy.try_all else scored[:1]:
        if e >= best_size:
            break
        payload = c.encode(data)
        if payload is not None and len(payload) < best_size:
            best_id, best, best_size = c.codec_id, payload, len(payload)
    if kind != "field" or policy.general_on_fields:
        for c in policy.general:
            payload = c.encode(data)
            if payload is not None and len(payload) < best_size:
                best_id, best, best_size = c.codec_id, payload, len(payload)
    if best is None:
        return RAW, data
    return best_id, best


def decode_stream(codec_id: int, payload: memoryview, out: np.ndarray) -> None:
    """Decode one stream into ``out`` with the codec of ``codec_id``."""
    get_codec(codec_id).decode(payload, out)
