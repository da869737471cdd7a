"""Choosing the codec of each stream of each chunk.

Every stream is coded by the candidate that makes it cheapest, ``raw`` when nothing saves at
least ``min_gain`` (decoding raw is a copy). Trying must be cheap:

1. one byte histogram (a Numba kernel, GIL released);
2. a stream of one repeated byte is ``const``; a "field" stream whose order-0 entropy is within
   ``min_gain`` of 8 bits (the BF16 sign|mantissa byte) is stored raw at once — unless the level
   allows a context codec, which can beat order 0;
3. order-0 coders (Huffman, rANS) estimate their exact size from the histogram; only the best
   estimate (all of them at ``max``) is encoded. A codec's estimate is weighted by its decode
   cost at the level (``speed_weight``), so ``default`` keeps the fast Huffman decoder unless
   rANS saves enough to pay for its slower decoding;
4. zstd finds structure beyond order 0 (repeats, runs, small integers). On "field" streams it is
   only tried when zstd on a 64 KiB sample beats the order-0 estimate, so i.i.d. streams do not
   pay for it.

Stream kinds (declared by transforms): ``"field"`` streams (float exponent / mantissa bytes) are
close to i.i.d.; ``"bytes"`` streams (headers, integers, FP8 codes, unknown data) may have
structure only zstd finds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from . import CODECS, get_codec
from .base import Codec
from .const import ConstCodec
from .raw import RawCodec
from .zstd import ZstdCodec

__all__ = [
    "LEVELS",
    "CodecPolicy",
    "decode_stream",
    "encode_stream",
    "entropy_bytes",
    "histogram",
    "policy_for_level",
]

Buffer = Union[bytes, np.ndarray]  # noqa: UP007 (a runtime alias on 3.10)
RAW, CONST = RawCodec.codec_id, ConstCodec.codec_id
LEVELS = ("fast", "default", "max")
SAMPLE = 64 << 10
_LITTLE = sys.byteorder == "little"


@dataclass(frozen=True)
class CodecPolicy:
    """What the chooser may try, fixed by the compression level."""

    order0: tuple[Codec, ...] = ()  # codecs with a histogram estimate
    speed_weight: dict[str, float] = field(default_factory=dict)  # codec name -> size penalty
    context: tuple[Codec, ...] = ()  # codecs coding a stream given an earlier one
    layout: tuple[Codec, ...] = ()  # codecs modelling a tensor's rows and columns
    general: tuple[Codec, ...] = ()  # must be tried (zstd): all of them on "bytes" streams
    probe_fields: bool = True  # on "field" streams, try ``general`` when a sample says it pays
    general_on_fields: bool = False  # on "field" streams, always try ``general``
    # Tried when a ``general`` codec beat the best order-0 estimate by this ratio: structure
    # worth a slower, stronger coder (sinusoidal position tables, say). zstd -12, not -19:
    # on the corpus -19 saved 0.02-0.03% more of the file for 40-75% more compress time.
    escalate: tuple[Codec, ...] = ()
    escalate_ratio: float = 0.99
    try_all: bool = False  # encode every candidate, keep the smallest
    min_gain: float = 0.005


def _optional(codec_id: int) -> tuple[Codec, ...]:
    """The codec if this build registers it (the Numba coders), else nothing."""
    return (get_codec(codec_id),) if codec_id in CODECS else ()


def policy_for_level(level: str = "default") -> CodecPolicy:
    """The codec policy of a named level (``fast``, ``default``, ``max``)."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    huffman, rans, rans_ctx, rans_2d = _optional(3), _optional(4), _optional(5), _optional(6)
    if level == "fast":
        # Huffman only on float fields (zstd just where there is no Numba coder)
        return CodecPolicy(order0=huffman, general=(ZstdCodec(1),), probe_fields=not huffman)
    if level == "default":
        return CodecPolicy(
            order0=huffman + rans,
            speed_weight={"rans": 0.01},
            general=(ZstdCodec(3),),
        )
    return CodecPolicy(
        order0=rans + huffman,
        context=rans_ctx,
        layout=rans_2d,
        general=(ZstdCodec(3),),
        general_on_fields=True,
        escalate=(ZstdCodec(12),),
        try_all=True,
        min_gain=0.0005,
    )


def histogram(data: np.ndarray) -> np.ndarray:
    """Byte histogram (256 int64 counts), computed without holding the GIL."""
    from .. import _jit

    _jit.ensure_ready()
    from .._kernels.split import _hist

    return _hist(data)


def histogram4(data: np.ndarray) -> np.ndarray:
    """Byte histograms of the 4 parts of ``data`` that Huffman codes as separate streams.

    Shape ``(4, 256)``; the order-0 coders reuse them instead of counting again.
    """
    from .. import _jit

    _jit.ensure_ready()
    from .._kernels.huffman import _segment_hist
    from .huffman import split_bounds

    h = np.empty((4, 256), np.int64)
    _segment_hist(data, np.array(split_bounds(data.size), np.uint64), h)
    return h


def _near_random(data: np.ndarray, limit_bits: float) -> bool:
    """Whether a sample already shows the stream is at least ``limit_bits`` per byte.

    A sample's plug-in entropy underestimates the true one (by about 255 / (2 n ln 2) bits),
    so a sample that clears the limit is safe to call near-random; one that does not is
    decided on the whole stream.
    """
    if data.size < 4 * SAMPLE:
        return False
    return entropy_bytes(histogram(data[:SAMPLE])) * 8 / SAMPLE >= limit_bits


def entropy_bytes(hist: np.ndarray) -> float:
    """Order-0 entropy of a histogram, in bytes (the floor for any order-0 coder)."""
    if isinstance(hist, np.ndarray) and hist.dtype == np.int64 and hist.shape == (256,):
        from .. import _jit

        _jit.ensure_ready()
        from .._kernels.split import _entropy_bytes

        return float(_entropy_bytes(np.ascontiguousarray(hist)))
    counts = np.asarray(hist)[np.asarray(hist) > 0].astype(np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0
    return float(-(counts * np.log2(counts / n)).sum() / 8)


def encode_stream(
    data: np.ndarray,
    kind: str,
    policy: CodecPolicy,
    context: np.ndarray | None = None,
    layout: tuple[int, int] | None = None,
) -> tuple[int, Buffer, bool]:
    """Code one stream; returns ``(codec_id, payload, used_context)``.

    ``context`` is an earlier stream of the chunk a context codec may condition on; ``layout``
    is ``(row_len, first_col)`` when the stream has one symbol per element of a matrix-shaped
    tensor. The payload is ``data`` itself when the stream is stored raw.
    """
    n = int(data.size)
    if n == 0:
        return RAW, data, False
    limit = n * (1.0 - policy.min_gain)
    use_context = context is not None and bool(policy.context)
    if kind == "field" and not use_context and _huffman_only(policy, layout):
        chosen = _field_huffman(data, policy)
        if chosen is not None:
            return chosen
    if kind == "field" and not use_context and _near_random(data, 8.0 * (1.0 - policy.min_gain)):
        # near-random (sign|mantissa bytes): raw, found on a 64 KiB sample. A constant
        # stream cannot get here: its sample has zero entropy.
        return RAW, data, False
    hist4 = histogram4(data)
    hist = hist4.sum(axis=0)
    if int(np.count_nonzero(hist)) == 1:
        return CONST, bytes([int(data[0])]), False
    floor = entropy_bytes(hist)
    if kind == "field" and floor >= limit and not use_context:
        return RAW, data, False  # near-random: raw is the answer, found in one histogram
    best: tuple[float, int, Buffer, bool] = (limit, RAW, data, False)  # (cost, id, payload, ctx)

    def consider(codec: Codec, payload, used_ctx: bool) -> None:
        nonlocal best
        if payload is None:
            return
        size = len(payload)
        cost = size * (1.0 + policy.speed_weight.get(codec.name, 0.0))
        if size < limit and cost < best[0]:
            best = (cost, codec.codec_id, payload, used_ctx)

    scored = []
    for c in policy.order0:
        e = c.estimate(hist, n)
        if e is not None:
            scored.append((e * (1.0 + policy.speed_weight.get(c.name, 0.0)), c))
    scored.sort(key=lambda t: t[0])
    for cost, c in scored if policy.try_all else scored[:1]:
        if cost < best[0]:
            payload = (
                c.encode(data, hist4=hist4) if getattr(c, "takes_hist4", False) else c.encode(data)
            )
            consider(c, payload, False)
    if use_context:
        for c in policy.context:
            consider(c, c.encode(data, context), True)
    if layout is not None:
        for c in policy.layout:
            consider(c, c.encode(data, layout), False)
    if policy.general and (
        kind != "field" or policy.general_on_fields or _structure_pays(data, hist, n, policy)
    ):
        order0_best = min((e for e, _ in scored), default=float(n))
        for c in policy.general:
            payload = c.encode(data)
            consider(c, payload, False)
            if payload is not None and len(payload) < policy.escalate_ratio * order0_best:
                for strong in policy.escalate:
                    consider(strong, strong.encode(data), False)
                break
    _, cid, payload, used_ctx = best
    return cid, payload, used_ctx


def _huffman_only(policy: CodecPolicy, layout) -> bool:
    """Whether a field stream's only candidates are raw, const and Huffman (``fast``)."""
    return (
        len(policy.order0) == 1
        and policy.order0[0].name == "huffman"
        and not (layout is not None and policy.layout)
        and not (policy.general and (policy.general_on_fields or policy.probe_fields))
        and _LITTLE
    )


_choose = None


def _field_huffman(data: np.ndarray, policy: CodecPolicy) -> tuple[int, Buffer, bool] | None:
    """:func:`encode_stream` of a field stream under a Huffman-only policy, in one kernel
    call (``zipmodel._kernels.choose``: same steps, same result). None: not decided here."""
    global _choose
    if _choose is None:
        from .. import _jit

        _jit.ensure_ready()
        from .._kernels import choose

        _choose = choose
    from .huffman import _readonly, _scratch

    codec = policy.order0[0]
    s = _scratch()
    need = data.size // 5 + 64
    if s.payload.size < need:
        s.payload = np.empty(max(need, 1 << 17), np.uint64)
    d = _readonly(np.ascontiguousarray(data, np.uint8).reshape(-1))
    cid, nbytes = _choose.choose_field_huffman(
        d,
        policy.min_gain,
        SAMPLE,
        policy.speed_weight.get(codec.name, 0.0),
        codec.max_code_bits,
        s.hist,
        s.lens,
        s.work,
        s.codes,
        s.payload,
    )
    if cid == RAW:
        return RAW, data, False
    if cid == CONST:
        return CONST, bytes([int(data[0])]), False
    if cid == codec.codec_id:
        return cid, s.payload.view(np.uint8)[:nbytes], False  # valid until the next encode
    return None


def _structure_pays(data: np.ndarray, hist: np.ndarray, n: int, policy: CodecPolicy) -> bool:
    """Whether zstd may beat order-0 coding on a field stream (probed on a sample)."""
    if not policy.probe_fields:
        return False
    if not policy.order0:
        return True
    sample = data[:SAMPLE]
    z = ZstdCodec(1).encode(sample)
    est = entropy_bytes(histogram(sample)) if sample.size < n else entropy_bytes(hist)
    return len(z) < 0.98 * est


def decode_stream(codec_id: int, payload: memoryview, out: np.ndarray, context=None) -> None:
    """Decode one stream into ``out`` with the codec of ``codec_id``."""
    c = get_codec(codec_id)
    if context is not None:
        c.decode(payload, out, context)
    else:
        c.decode(payload, out)
