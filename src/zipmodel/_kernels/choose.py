"""One Numba call that chooses and codes a float field stream with the order-0 coders (the
``fast`` and ``default`` levels): the fast path of ``codecs.select.encode_stream``.

It runs the chooser's steps in the chooser's order, on the same kernels, with the same
floating-point expressions, so it picks the same codec and writes the same payload byte for
byte (``tests/test_choose_kernel.py`` compares the two on hypothesis inputs):

1. near-random on a sample (``_near_random``) -> raw;
2. the 4 part histograms; one symbol -> const; order-0 entropy within ``min_gain`` of 8 bits
   -> raw;
3. the Huffman estimate (``HuffmanCodec.estimate``) and, when the level has rANS, the rANS
   estimate (``RansCodec.estimate``: the same kernel), each weighted by the level's speed
   weight; the cheaper one (Huffman on a tie: the policy lists it first) is encoded, and
   kept if it beats the limit.

Steps 1 and 2 end the choice; after step 3 the caller may still try zstd (the level's
structure probe, ``_structure_pays``), so the kernel also reports the entropy that probe
compares against and the best weighted estimate.

Before it, a stream cost 5-12 Python-level calls (histograms, entropy, estimates, encode)
and 50-150 us of Python under the GIL: a third of a 1-thread ``fast`` compress, a fifth of a
``default`` one.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .huffman import _canonical_codes, _code_lengths, _encode4, _segment_hist
from .rans import _rans_encode, _rans_estimate
from .split import _entropy_bytes, _hist

RAW, CONST, HUFFMAN, RANS = 0, 1, 3, 4
NOT_HANDLED = -1  # the Python chooser decides (a stream too long for the payload format)
_VERSION = 1
_FIXED = 52


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _header_size(k):
    return (_FIXED + (k + 1) // 2 + 7) & ~7


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _huffman_estimate(hist, n, max_bits, lens, work):
    """``HuffmanCodec.estimate`` (payload bytes; -1.0: no code), leaving the lengths in ``lens``."""
    present = _code_lengths(hist, max_bits, lens, work)
    if present < 2 or n <= 0:
        return -1.0, present
    bits = 0
    for v in range(256):
        bits += hist[v] * np.int64(lens[v])
    streams = min(n, 4)
    per_stream = bits / streams
    est_words = per_stream / 64 + 0.5 if per_stream >= 32 else 1.0
    return _header_size(present) + 8 * streams * est_words, present


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _huffman_encode(data, bounds, hist4, lens, present, codes, words):
    """``HuffmanCodec.encode`` with the lengths already in ``lens``: the payload is
    ``words[:size // 8]``; returns its size, or -1 (too long for the format / for ``words``)."""
    hlen = _header_size(present)
    wbounds = np.empty(5, np.uint64)
    wbounds[0] = hlen // 8
    for s in range(4):
        sb = 0
        for v in range(256):
            sb += hist4[s, v] * np.int64(lens[v])
        nw = (sb + 63) >> 6
        if nw >= 1 << 32:
            return -1
        wbounds[s + 1] = wbounds[s] + uint64(nw)
    total = int(wbounds[4])
    if words.size < total:
        return -1
    payload = words[:total]
    for i in range(hlen // 8):
        payload[i] = 0
    head = payload[: hlen // 8].view(np.uint8)
    head[0] = _VERSION
    for s in range(4):
        nw = wbounds[s + 1] - wbounds[s]
        for k in range(4):
            head[4 + 4 * s + k] = np.uint8((nw >> uint64(8 * k)) & uint64(0xFF))
    q = _FIXED
    odd = False
    for v in range(256):
        if lens[v] > 0:
            head[20 + (v >> 3)] |= np.uint8(1 << (v & 7))
            if odd:
                head[q] |= np.uint8(lens[v] << 4)
                q += 1
            else:
                head[q] = lens[v]
            odd = not odd
    _canonical_codes(lens, codes)
    _encode4(data, bounds, codes, payload, wbounds)
    return 8 * total


@njit(nogil=True, cache=True)
def choose_field(
    data, min_gain, sample, probe, w_huff, w_rans, use_rans, max_bits, prob_bits,
    hist4, lens, work, codes, words, freq, rbuf, res,
):  # fmt: skip
    """Returns ``(codec, start, size, final)``. The payload is ``words`` viewed as bytes
    ``[0:size]`` (Huffman) or ``rbuf[start:start + size]`` (rANS); raw means the stream itself.
    ``final``: the choice ended in step 1 or 2 (no zstd probe follows). ``res`` gets the
    chosen weighted cost, the entropy bytes the probe compares against (of the first
    ``probe`` bytes, or of the whole stream if it is not longer), and the lowest
    weighted estimate (``n`` if none). ``words`` must hold ``data.size // 5 + 64`` words,
    ``rbuf`` the rANS encoder's buffer."""
    n = data.size
    res[0] = 0.0
    res[1] = 0.0
    res[2] = float(n)
    if n == 0:
        return RAW, 0, 0, True
    limit = n * (1.0 - min_gain)
    res[0] = limit
    near_random = 8.0 * (1.0 - min_gain)
    if n >= 4 * sample and _entropy_bytes(_hist(data[:sample])) * 8 / sample >= near_random:
        return RAW, 0, 0, True
    base, rem = n // 4, n % 4
    bounds = np.empty(5, np.uint64)
    bounds[0] = 0
    for s in range(4):
        bounds[s + 1] = bounds[s] + uint64(base + (1 if s < rem else 0))
    _segment_hist(data, bounds, hist4)
    hist = np.zeros(256, np.int64)
    present = 0
    for v in range(256):
        hist[v] = hist4[0, v] + hist4[1, v] + hist4[2, v] + hist4[3, v]
        if hist[v]:
            present += 1
    if present == 1:
        return CONST, 0, 1, True
    floor = _entropy_bytes(hist)
    if floor >= limit:
        return RAW, 0, 0, True
    res[1] = _entropy_bytes(_hist(data[:probe])) if n > probe else floor
    h_est, h_present = _huffman_estimate(hist, n, max_bits, lens, work)
    h_cost = h_est * (1.0 + w_huff)
    r_cost = -1.0
    if use_rans:
        r_cost = _rans_estimate(hist, prob_bits, freq) * (1.0 + w_rans)
    if h_est >= 0.0 and (r_cost < 0.0 or h_cost <= r_cost):
        first, cost, weight = HUFFMAN, h_cost, w_huff
    elif r_cost >= 0.0:
        first, cost, weight = RANS, r_cost, w_rans
    else:
        return RAW, 0, 0, False
    res[2] = cost
    if not cost < limit:
        return RAW, 0, 0, False
    if first == HUFFMAN:
        size = _huffman_encode(data, bounds, hist4, lens, h_present, codes, words)
        if size < 0:
            return NOT_HANDLED, 0, 0, True
        start = 0
    else:
        if rbuf.size < 2 * n + 2 + 32 + 1 + 32 + 3 * 256:
            return NOT_HANDLED, 0, 0, True
        start = _rans_encode(data, freq, prob_bits, rbuf)
        size = rbuf.size - start
    if size < limit and size * (1.0 + weight) < limit:
        res[0] = size * (1.0 + weight)
        return first, start, size, False
    return RAW, 0, 0, False
