"""One Numba call that chooses and codes a float field stream when Huffman is the only
order-0 candidate (the ``fast`` level): the fast path of ``codecs.select.encode_stream``.

It runs the chooser's steps in the chooser's order, on the same kernels, with the same
floating-point expressions, so it picks the same codec and writes the same payload byte for
byte (``tests/test_choose_kernel.py`` compares the two on hypothesis inputs):

1. near-random on a sample (``_near_random``) -> raw;
2. the 4 part histograms; one symbol -> const; order-0 entropy within ``min_gain`` of 8 bits
   -> raw;
3. the Huffman estimate (``HuffmanCodec.estimate``); if it beats the limit, the Huffman
   payload (``HuffmanCodec.encode``, payload format in ``codecs.huffman``); kept if it beats
   the limit too, else raw.

Before it, a stream cost ~5 Python-level calls (histograms, entropy, estimate, encode) and
50-100 us of Python under the GIL, a third of a 1-thread ``fast`` compress.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from .huffman import _canonical_codes, _code_lengths, _encode4, _segment_hist
from .split import _entropy_bytes, _hist

RAW, CONST, HUFFMAN = 0, 1, 3
NOT_HANDLED = -1  # the Python chooser decides (a stream too long for the payload format)
_VERSION = 1
_FIXED = 52


@njit(nogil=True, cache=True)
def _header_size(k):
    return (_FIXED + (k + 1) // 2 + 7) & ~7


@njit(nogil=True, cache=True)
def choose_field_huffman(data, min_gain, sample, weight, max_bits, hist4, lens, work, codes, words):
    """Returns ``(codec, payload bytes)``: the Huffman payload is then ``words`` viewed as
    bytes; ``weight`` is the level's speed weight of Huffman. ``words`` must hold
    ``data.size // 5 + 64`` words (12-bit codes plus the header)."""
    n = data.size
    if n == 0:
        return RAW, 0
    limit = n * (1.0 - min_gain)
    if n >= 4 * sample:
        limit_bits = 8.0 * (1.0 - min_gain)
        if _entropy_bytes(_hist(data[:sample])) * 8 / sample >= limit_bits:
            return RAW, 0
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
        return CONST, 1
    if _entropy_bytes(hist) >= limit:
        return RAW, 0
    present = _code_lengths(hist, max_bits, lens, work)
    if present < 2:
        return RAW, 0
    bits = 0
    for v in range(256):
        bits += hist[v] * np.int64(lens[v])
    streams = min(n, 4)
    per_stream = bits / streams
    est_words = per_stream / 64 + 0.5 if per_stream >= 32 else 1.0
    estimate = _header_size(present) + 8 * streams * est_words
    if not estimate * (1.0 + weight) < limit:
        return RAW, 0
    hlen = _header_size(present)
    wbounds = np.empty(5, np.uint64)
    wbounds[0] = hlen // 8
    for s in range(4):
        sb = 0
        for v in range(256):
            sb += hist4[s, v] * np.int64(lens[v])
        nw = (sb + 63) >> 6
        if nw >= 1 << 32:
            return NOT_HANDLED, 0
        wbounds[s + 1] = wbounds[s] + uint64(nw)
    total = int(wbounds[4])
    if words.size < total:
        return NOT_HANDLED, 0
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
    size = 8 * total
    if size < limit and size * (1.0 + weight) < limit:
        return HUFFMAN, size
    return RAW, 0
