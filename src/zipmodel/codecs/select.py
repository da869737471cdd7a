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
   only tried when zstd -1 on a 16 KiB sample beats that sample's order-0 entropy, so i.i.d.
   streams do not pay for it (on the corpus a 16 KiB probe finds what a 64 KiB one did, at a
   quarter of the cost; the 64 KiB probe was 13-18% of a ``default`` compress).

Steps 1-3 of a field stream at ``fast`` and ``default`` run as one Numba call
(``zipmodel._kernels.choose``), which makes the same choices and bytes.

Stream kinds (declared by transforms): ``"field"`` streams (float exponent / mantissa bytes) are
close to i.i.d.; ``"bytes"`` streams (headers, integers, FP8 codes, unknown data) may have
structure only zstd finds.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from .. import _jit
from . import CODECS, get_codec
from .base import Codec
from .const import ConstCodec
from .raw import RawCodec
from .zstd import ZstdCodec

__all__ = [
    "LEVELS",
    "CodecPolicy",
    "encode_stream",
    "entropy_bytes",
    "histogram",
    "policy_for_level",
]

Buffer = Union[bytes, np.ndarray]  # noqa: UP007 (a runtime alias on 3.10)
RAW, CONST = RawCodec.codec_id, ConstCodec.codec_id
LEVELS = ("fast", "default", "max")
SAMPLE = 64 << 10  # the near-random test's sample
PROBE = 16 << 10  # the zstd structure probe's sample
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
    return _jit.kernels("split")._hist(_jit.readonly(data))


def histogram4(data: np.ndarray) -> np.ndarray:
    """Byte histograms of the 4 parts of ``data`` that Huffman codes as separate streams.

    Shape ``(4, 256)``; the order-0 coders reuse them instead of counting again.
    """
    from .huffman import split_bounds

    _segment_hist = _jit.kernels("huffman")._segment_hist

    h = np.empty((4, 256), np.int64)
    _segment_hist(_jit.readonly(data), np.array(split_bounds(data.size), np.uint64), h)
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
        return float(_jit.kernels("split")._entropy_bytes(np.ascontiguousarray(hist)))
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
    if kind == "field" and not use_context and _order0_only(policy, layout):
        fused = _field_order0(data, policy)
        if fused is not None:
            final, best, order0_best, probe_est = fused
            if not final and policy.general and structure_pays(data, probe_est, policy):
                best = _try_general(data, policy, best, limit, order0_best)
            return best[1], best[2], best[3]
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
    best: _Best = (limit, RAW, data, False)
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
            best = _consider(best, policy, limit, c, payload, False)
    if use_context:
        for c in policy.context:
            best = _consider(best, policy, limit, c, c.encode(data, context), True)
    if layout is not None:
        for c in policy.layout:
            best = _consider(best, policy, limit, c, c.encode(data, layout), False)
    if policy.general:
        probe_est = entropy_bytes(histogram(data[:PROBE])) if n > PROBE else floor
        if kind != "field" or policy.general_on_fields or structure_pays(data, probe_est, policy):
            order0_best = min((e for e, _ in scored), default=float(n))
            best = _try_general(data, policy, best, limit, order0_best)
    _, cid, payload, used_ctx = best
    return cid, payload, used_ctx


_Best = tuple  # (weighted cost, codec id, payload, used context)


def _consider(best: _Best, policy: CodecPolicy, limit: float, codec: Codec, payload, used_ctx):
    """``best``, or the candidate if it is smaller than the limit and cheaper (weighted)."""
    if payload is None:
        return best
    size = len(payload)
    cost = size * (1.0 + policy.speed_weight.get(codec.name, 0.0))
    if size < limit and cost < best[0]:
        return (cost, codec.codec_id, payload, used_ctx)
    return best


def _try_general(data, policy: CodecPolicy, best: _Best, limit: float, order0_best: float):
    """The general codecs (zstd) after the others, escalating when structure shows."""
    for c in policy.general:
        payload = c.encode(data)
        best = _consider(best, policy, limit, c, payload, False)
        if payload is not None and len(payload) < policy.escalate_ratio * order0_best:
            for strong in policy.escalate:
                best = _consider(best, policy, limit, strong, strong.encode(data), False)
            break
    return best


def _order0_only(policy: CodecPolicy, layout) -> bool:
    """Whether a field stream's order-0 candidates are what the one-call chooser handles
    (Huffman, or Huffman then rANS, best estimate only: ``fast`` and ``default``)."""
    names = tuple(c.name for c in policy.order0)
    return (
        names in (("huffman",), ("huffman", "rans"))
        and not policy.try_all
        and not policy.general_on_fields
        and not (layout is not None and policy.layout)
        and _LITTLE
    )


def frame_fusable(policy: CodecPolicy) -> bool:
    """Whether every float field stream of a chunk is chosen by the one-call chooser alone,
    up to the zstd probe (no context or layout codecs): ``pipeline.fused.encode_frame_fused``
    then codes the whole chunk in one kernel call."""
    return _order0_only(policy, None) and not policy.context and not policy.layout


_choose = None


def chooser_args(policy: CodecPolicy, n: int) -> tuple:
    """The level's parameters and this thread's buffers for ``choose_field`` on streams of up
    to ``n`` bytes, in its argument order after the data (``encode_frame`` takes the same):
    ``(min_gain, sample, probe, w_huff, w_rans, use_rans, max_bits, prob_bits, hist4, lens,
    work, codes, words, freq, rbuf)``. The Huffman payload lands in ``words``, rANS's in
    ``rbuf``; both valid until this thread's next encode."""
    from . import huffman as hm
    from . import rans as rm

    huff = policy.order0[0]
    use_rans = len(policy.order0) > 1
    s = hm._scratch()
    need = n // 5 + 64
    if s.payload.size < need:
        s.payload = np.empty(max(need, 1 << 17), np.uint64)
    if use_rans:
        rbuf = rm._scratch("enc", 2 * n + 2 + 4 * rm._STATES + 1 + 32 + 3 * 256, np.uint8)
        freq = rm._scratch("freq", 256, np.int64)
    else:
        rbuf, freq = _NO_RANS_BUF, _NO_RANS_FREQ
    w = policy.speed_weight
    return (
        policy.min_gain,
        SAMPLE,
        PROBE,
        w.get(huff.name, 0.0),
        w.get("rans", 0.0),
        use_rans,
        huff.max_code_bits,
        rm.PROB_BITS,
        s.hist,
        s.lens,
        s.work,
        s.codes,
        s.payload,
        freq,
        rbuf,
    )


def _choose_kernels():
    """``zipmodel._kernels.choose``, imported (and the JIT made ready) on first use."""
    global _choose
    if _choose is None:
        _choose = _jit.kernels("choose")
    return _choose


def _field_order0(data: np.ndarray, policy: CodecPolicy):
    """:func:`encode_stream`'s steps up to the general codecs, in one kernel call
    (``zipmodel._kernels.choose``: same steps, same result). Returns ``(final, best,
    order0_best, probe_est)``, or None when the kernel leaves the stream to the Python path."""
    k = _choose_kernels()
    args = chooser_args(policy, int(data.size))
    words, rbuf = args[12], args[14]
    res = getattr(_local, "res", None)
    if res is None:
        res = _local.res = np.zeros(3, np.float64)
    d = _jit.readonly(np.ascontiguousarray(data, np.uint8).reshape(-1))
    cid, start, size, final = k.choose_field(d, *args, res)
    if cid == k.NOT_HANDLED:
        return None
    if cid == RAW:
        payload = data
    elif cid == CONST:
        payload = bytes([int(data[0])])
    elif cid == k.HUFFMAN:
        payload = words.view(np.uint8)[:size]  # valid until the next encode
    else:
        payload = rbuf[start : start + size]
    return bool(final), (float(res[0]), int(cid), payload, False), float(res[2]), float(res[1])


_NO_RANS_BUF = np.zeros(0, np.uint8)  # (same array types: one compiled signature)
_NO_RANS_FREQ = np.zeros(256, np.int64)
_local = threading.local()


def structure_pays(data: np.ndarray, est: float, policy: CodecPolicy) -> bool:
    """Whether zstd may beat order-0 coding on a field stream: zstd -1 on the first
    :data:`PROBE` bytes against ``est``, their order-0 entropy in bytes."""
    if not policy.probe_fields:
        return False
    if not policy.order0:
        return True
    z = ZstdCodec(1).encode(data[:PROBE])
    return len(z) < 0.98 * est
