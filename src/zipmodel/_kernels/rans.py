"""Numba kernels of the ``rans`` and ``rans-ctx`` codecs.

The payload formats are specified in :mod:`zipmodel.codecs.rans`; the codec classes there check
arguments and own the scratch buffers. Payload bytes are untrusted: the decoders check every
read against the payload end and return a negative ``E_*`` code instead of raising.

Design choices, measured against throwaway variants on the 2-core dev VM (best of 40, one
1 MiB exponent chunk in cache; benches/kernels_rans.py has the end-to-end figures):

* 8 interleaved states in registers (``x0``..``x7``): decode 630 M symbols/s against 435
  with 4 states (lookup latency exposed) and 525 with 16 (register spills);
* a decode group runs its 8 symbol steps, then its 8 refills (+10% over alternating them);
  refills are a branch-free select on ``x < L`` (+8% over mask arithmetic), and every hot
  index is ``uint64`` (a signed index costs a wrap-around test per access);
* 14-bit probabilities: 0.0015 bit/symbol smaller than 12 bits on bf16 exponents, for a
  uint64 decode table (128 KiB) that decodes 0–10% slower than 12 bits' uint32 one;
* the encoder divides with a reciprocal (Granlund–Montgomery 33-bit magic, exact for every
  32-bit state): 1.3–1.4× faster than ``//``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, int64

STATES = 8  # interleaved states (part of the format)
RANS_L = 1 << 16  # states live in [RANS_L, 2**32); 16-bit words refill them
CTX_SCALE = 13  # rans-ctx: scale bits of the joint (modelled top bits, raw low bits) step
MIN_PROB_BITS = 8
MAX_PROB_BITS = 14
MAX_VARINT = 3  # bytes of one table entry (values < 2**21)

E_HEADER = -1  # payload ends inside the header, or a parameter is out of range
E_TABLE = -2  # frequencies do not sum to 2**prob_bits (or list out of order)
E_STATE = -3  # an initial state is outside [RANS_L, 2**32)
E_ODD = -4  # the word stream has an odd number of bytes
E_SHORT = -5  # the word stream ended before the last symbol
E_FINAL = -6  # words left over, or a final state is not RANS_L

_u = np.uint64
_L = np.uint64(RANS_L)
_W = np.uint64(2)  # bytes per word


# ----------------------------------------------------------------------------- histograms


@njit(nogil=True, cache=True)
def _histogram(data, hist):
    """Byte histogram of ``data`` into ``hist`` (int64[256]); 4 sub-counts avoid store stalls."""
    h = np.zeros((4, 256), np.int64)
    n = _u(data.size)
    n4 = n - n % _u(4)
    i = _u(0)
    while i < n4:
        h[0, data[i]] += 1
        h[1, data[i + _u(1)]] += 1
        h[2, data[i + _u(2)]] += 1
        h[3, data[i + _u(3)]] += 1
        i += _u(4)
    while i < n:
        h[0, data[i]] += 1
        i += _u(1)
    for s in range(256):
        hist[s] = h[0, s] + h[1, s] + h[2, s] + h[3, s]


@njit(nogil=True, cache=True)
def _joint_histogram(data, ctx, hist):
    """Counts of (context byte, top 4 bits of the data byte) into ``hist`` (int64[256 * 16])."""
    hist[:] = 0
    n = _u(data.size)
    i = _u(0)
    while i < n:
        hist[(_u(ctx[i]) << _u(4)) | (_u(data[i]) >> _u(4))] += 1
        i += _u(1)


# ----------------------------------------------------------------------------- frequencies


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _step_cost(count, f):
    """Bits saved on ``count`` symbols when their frequency grows from ``f`` to ``f + 1``."""
    return count * (math.log2(f + 1) - math.log2(f))


@njit(nogil=True, cache=True)
def _normalize(hist, prob_bits, freq):
    """Frequencies summing to ``2**prob_bits`` that minimise the coded size of ``hist``.

    Every symbol with a count gets a frequency of at least 1. Start from the rounded
    proportional share, fix the sum greedily (cheapest decrement / best increment), then swap
    single units while an increment saves more than a decrement costs. The cost is separable
    and convex in each frequency, so the result is the integer optimum. ``hist`` must hold at
    least one nonzero count and fewer than ``2**prob_bits`` distinct symbols.
    """
    m = 1 << prob_bits
    k = hist.size
    n = 0
    for s in range(k):
        n += hist[s]
    gain = np.full(k, -1.0)  # bits saved by f[s] += 1 (-1: absent)
    loss = np.full(k, np.inf)  # bits lost by f[s] -= 1 (inf: absent or f == 1)
    total = 0
    for s in range(k):
        freq[s] = 0
        if hist[s] > 0:
            f = (2 * hist[s] * m + n) // (2 * n)
            freq[s] = max(f, 1)
            total += freq[s]
    for s in range(k):
        if hist[s] > 0:
            gain[s] = _step_cost(hist[s], freq[s])
            if freq[s] > 1:
                loss[s] = _step_cost(hist[s], freq[s] - 1)
    for _ in range(4 * m):  # bounded; ends after a few steps on any input
        best_up = 0
        best_down = 0
        for s in range(1, k):
            if gain[s] > gain[best_up]:
                best_up = s
            if loss[s] < loss[best_down]:
                best_down = s
        if total > m:
            s, step = best_down, -1
        elif total < m or gain[best_up] > loss[best_down]:
            s, step = best_up, 1  # at total == m: a swap, best_down follows next round
        else:
            break
        freq[s] += step
        total += step
        gain[s] = _step_cost(hist[s], freq[s])
        loss[s] = _step_cost(hist[s], freq[s] - 1) if freq[s] > 1 else np.inf


@njit(nogil=True, cache=True)
def _varint_size(v):
    """Bytes of the LEB128 code of ``v >= 0``."""
    s = 1
    while v >= 128:
        v >>= 7
        s += 1
    return s


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _put_varint(buf, p, v):
    """LEB128: 7 bits a byte, least significant group first, 0x80 marks 'more follows'."""
    while v >= 128:
        buf[p] = np.uint8((v & 127) | 128)
        v >>= 7
        p += 1
    buf[p] = np.uint8(v)
    return p + 1


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _get_varint_max(src, p, end, max_bytes):
    """(value, next position); position -1 if the payload ends or the value has more than
    ``max_bytes`` bytes (at most 8: values below 2**56)."""
    v = np.int64(0)
    for k in range(max_bytes):
        if p >= end:
            return np.int64(0), -1
        b = np.int64(src[p])
        p += 1
        v |= (b & 127) << (7 * k)
        if b < 128:
            return v, p
    return np.int64(0), -1


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _get_varint(src, p, end):
    """A table entry: at most MAX_VARINT bytes (see :func:`_get_varint_max`)."""
    return _get_varint_max(src, p, end, int64(MAX_VARINT))


# ----------------------------------------------------------------------------- shared steps


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _encoder_entry(etab, k, f, cum, prob_bits, scale_bits):
    """Encoder constants of one symbol: renorm bound, reciprocal, shift, cum, 2**P - f."""
    shift = 0
    while (1 << shift) < f:
        shift += 1
    # ceil(2**(32 + shift) / f) has 33 bits; keep the low 32 (the top bit is added as x).
    rcp = (((1 << (32 + shift)) + f - 1) // f) - (1 << 32)
    etab[4 * k] = _u(f) << _u(32 - scale_bits)
    etab[4 * k + 1] = _u(rcp)
    etab[4 * k + 2] = _u(shift)
    etab[4 * k + 3] = _u(cum) | (_u((1 << prob_bits) - f) << _u(32))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _enc_step(x, k, etab, buf, p):
    """Renormalise (one word out, written branch-free below ``p``), then x -> C(s, x)."""
    k4 = _u(4) * _u(k)
    c = x >= etab[k4]
    buf[p - _u(2)] = np.uint8(x & _u(0xFF))
    buf[p - _u(1)] = np.uint8((x >> _u(8)) & _u(0xFF))
    p -= _u(c) << _u(1)
    x = (x >> _u(16)) if c else x
    q = (x + ((x * etab[k4 + _u(1)]) >> _u(32))) >> etab[k4 + _u(2)]  # x // f
    e3 = etab[k4 + _u(3)]
    return x + (e3 & _u(0xFFFFFFFF)) + q * (e3 >> _u(32)), p


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _refill(x, src, p):
    """Branch-free: if x < L, shift in the 16-bit little-endian word at ``src[p]``."""
    w = _u(src[p]) | (_u(src[p + _u(1)]) << _u(8))
    c = x < _L
    y = (x << _u(16)) | w
    return (y if c else x), p + (_u(c) << _u(1))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _put_u32(buf, p, v):
    for k in range(4):
        buf[p + k] = np.uint8((v >> _u(8 * k)) & _u(0xFF))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _get_states(src, p, st):
    """Read STATES little-endian u32 states at ``p``; False if one is below RANS_L."""
    for j in range(STATES):
        v = _u(0)
        for k in range(4):
            v |= _u(src[p + 4 * j + k]) << _u(8 * k)
        if v < _L:
            return False
        st[j] = v
    return True


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _check_end(st, p, end):
    if p != end:
        return E_FINAL
    for j in range(STATES):
        if st[j] != _L:
            return E_FINAL
    return 0


# ----------------------------------------------------------------------------- rans


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _rans_header_size(freq):
    size = 1 + 32
    for s in range(256):
        if freq[s] > 0:
            size += _varint_size(freq[s] - 1)
    return size


@njit(nogil=True, cache=True)
def _rans_estimate(hist, prob_bits, freq):
    """Payload bytes of the ``rans`` codec on data with byte counts ``hist`` (at least two
    symbols present): table + states + the ideal code length under the normalised
    frequencies, which are left in ``freq`` for :func:`_rans_encode`."""
    _normalize(hist, prob_bits, freq)
    bits = 0.0
    for s in range(256):
        if hist[s] > 0:
            bits += hist[s] * (prob_bits - np.log2(freq[s]))
    return _rans_header_size(freq) + 4 * STATES + 2 * math.ceil(bits / 16)


@njit(nogil=True, cache=True)
def _rans_encode(data, freq, prob_bits, buf):
    """Write the whole payload at the end of ``buf``; returns where it starts.

    ``buf`` needs ``2 * data.size + 2 + 4 * STATES + 1 + 32 + 3 * 256`` bytes.
    """
    etab = np.zeros(4 * 256, np.uint64)
    cum = 0
    for s in range(256):
        if freq[s] > 0:
            _encoder_entry(etab, s, freq[s], cum, prob_bits, prob_bits)
            cum += freq[s]
    n = _u(data.size)
    st = np.full(STATES, _L, np.uint64)
    p = _u(buf.size)
    nmain = n - n % _u(STATES)
    i = n
    while i > nmain:  # the last n % 8 symbols, coded first
        i -= _u(1)
        j = i % _u(STATES)
        st[j], p = _enc_step(st[j], data[i], etab, buf, p)
    x0, x1, x2, x3, x4, x5, x6, x7 = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    while i > _u(0):
        i -= _u(STATES)
        x7, p = _enc_step(x7, data[i + _u(7)], etab, buf, p)
        x6, p = _enc_step(x6, data[i + _u(6)], etab, buf, p)
        x5, p = _enc_step(x5, data[i + _u(5)], etab, buf, p)
        x4, p = _enc_step(x4, data[i + _u(4)], etab, buf, p)
        x3, p = _enc_step(x3, data[i + _u(3)], etab, buf, p)
        x2, p = _enc_step(x2, data[i + _u(2)], etab, buf, p)
        x1, p = _enc_step(x1, data[i + _u(1)], etab, buf, p)
        x0, p = _enc_step(x0, data[i], etab, buf, p)
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = x0, x1, x2, x3, x4, x5, x6, x7
    p = int(p) - 4 * STATES
    for j in range(STATES):
        _put_u32(buf, p + 4 * j, st[j])
    p -= _rans_header_size(freq)
    q = p
    buf[q] = prob_bits
    q += 1
    for b in range(32):
        buf[q + b] = 0
    for s in range(256):
        if freq[s] > 0:
            buf[q + (s >> 3)] |= np.uint8(1 << (s & 7))
    q += 32
    for s in range(256):
        if freq[s] > 0:
            q = _put_varint(buf, q, freq[s] - 1)
    return p


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _rans_read_table(src, dtab):
    """Parse header and frequencies, fill the decode table; (prob_bits, position) or (err, -1).

    Decode-table entry: symbol | (slot - cum) << 8 | freq << 40.
    """
    end = src.size
    if end < 33:
        return E_HEADER, -1
    prob_bits = int(src[0])
    if prob_bits < MIN_PROB_BITS or prob_bits > MAX_PROB_BITS:
        return E_HEADER, -1
    m = 1 << prob_bits
    p = int64(33)  # typed: a bare 33 would compile _get_varint once more, for Literal[int](33)
    cum = 0
    for s in range(256):
        if (src[1 + (s >> 3)] >> (s & 7)) & 1:
            v, p = _get_varint(src, p, end)
            if p < 0:
                return E_HEADER, -1
            f = v + 1
            if f > m - cum:
                return E_TABLE, -1
            for r in range(f):
                dtab[cum + r] = _u(s) | (_u(r) << _u(8)) | (_u(f) << _u(40))
            cum += f
    if cum != m:
        return E_TABLE, -1
    return prob_bits, p


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _dec_step(x, dtab, mask, prob_bits):
    e = dtab[x & mask]
    return (e >> _u(40)) * (x >> prob_bits) + ((e >> _u(8)) & _u(0xFFFFFFFF)), np.uint8(e)


@njit(nogil=True, cache=True)
def _rans_decode(src, out, dtab, st):
    """Decode a whole ``rans`` payload into ``out``; 0 or a negative ``E_*`` code.

    ``dtab``: uint64[2**MAX_PROB_BITS] scratch; ``st``: uint64[STATES] scratch.
    """
    prob_bits, p0 = _rans_read_table(src, dtab)
    if p0 < 0:
        return prob_bits
    if src.size - p0 < 4 * STATES:
        return E_HEADER
    if not _get_states(src, p0, st):
        return E_STATE
    p = _u(p0 + 4 * STATES)
    end = _u(src.size)
    if (end - p) % _W:
        return E_ODD
    pb = _u(prob_bits)
    mask = (_u(1) << pb) - _u(1)
    n = _u(out.size)
    nmain = n - n % _u(STATES)
    x0, x1, x2, x3, x4, x5, x6, x7 = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    i = _u(0)
    # Each group reads at most one word per state: only run it where 8 words remain.
    while i < nmain and p + _u(2 * STATES) <= end:
        x0, out[i] = _dec_step(x0, dtab, mask, pb)
        x1, out[i + _u(1)] = _dec_step(x1, dtab, mask, pb)
        x2, out[i + _u(2)] = _dec_step(x2, dtab, mask, pb)
        x3, out[i + _u(3)] = _dec_step(x3, dtab, mask, pb)
        x4, out[i + _u(4)] = _dec_step(x4, dtab, mask, pb)
        x5, out[i + _u(5)] = _dec_step(x5, dtab, mask, pb)
        x6, out[i + _u(6)] = _dec_step(x6, dtab, mask, pb)
        x7, out[i + _u(7)] = _dec_step(x7, dtab, mask, pb)
        x0, p = _refill(x0, src, p)
        x1, p = _refill(x1, src, p)
        x2, p = _refill(x2, src, p)
        x3, p = _refill(x3, src, p)
        x4, p = _refill(x4, src, p)
        x5, p = _refill(x5, src, p)
        x6, p = _refill(x6, src, p)
        x7, p = _refill(x7, src, p)
        i += _u(STATES)
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = x0, x1, x2, x3, x4, x5, x6, x7
    while i < n:  # checked tail: the last groups and the last n % 8 symbols
        j = i % _u(STATES)
        x, out[i] = _dec_step(st[j], dtab, mask, pb)
        if x < _L:
            if p + _W > end:
                return E_SHORT
            x, p = _refill(x, src, p)
        st[j] = x
        i += _u(1)
    return _check_end(st, p, end)


# ----------------------------------------------------------------------------- rans-ctx


@njit(nogil=True, cache=True)
def _ctx_header_size(n_top_bits, own, freqs):
    size = 2 + own.size
    for t in range(freqs.shape[0]):
        for h in range(1 << n_top_bits):
            size += _varint_size(freqs[t, h])
    return size


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _row_cost(row, prob_bits):
    """(code bits, table bytes) of one row of counts under its own table."""
    tot = 0
    for h in range(row.size):
        tot += row[h]
    bits = 0.0
    size = 0
    for h in range(row.size):
        if tot == 0:
            size += 1  # unused table: stored uniform, 2**(P - K) = 32 each
        elif row[h] > 0:
            bits += row[h] * math.log2(tot / row[h])
            size += _varint_size(max(1, (row[h] << prob_bits) // tot))
        else:
            size += 1
    return bits, size


@njit(nogil=True, cache=True)
def _ctx_plan(joint, n, own, tables):
    """Choose K and the contexts with own tables; returns (payload bytes, K, T).

    ``joint[c, h]``: count of context c with top-4-bit value h (int64[256, 16]). For each K
    the contexts are ranked by count (ties: lower byte first); the T most frequent get a
    table each and the rest share table 0. Every (K, T) is scored as code length + table
    bytes (estimated from the counts) and the smallest wins. Fills ``own[:T]`` (sorted) and
    ``tables[:T + 1, :2**K]`` (counts of table 0, then of each own context).
    """
    best = np.inf
    best_k = 0
    best_t = 0
    best_order = np.zeros(256, np.int64)
    for k in range(1, 5):
        nsym = 1 << k
        prob_bits = 5 + k
        jk = np.zeros((256, nsym), np.int64)
        cnt = np.zeros(256, np.int64)
        for c in range(256):
            for h in range(16):
                jk[c, h >> (4 - k)] += joint[c, h]
                cnt[c] += joint[c, h]
        order = np.argsort(-cnt, kind="mergesort")  # stable: ties keep byte order
        m = 0
        while m < 256 and cnt[order[m]] > 0:
            m += 1
        own_cost = np.zeros(m + 1)  # own_cost[t]: the t most frequent contexts, own tables
        for t in range(m):
            bits, size = _row_cost(jk[order[t]], prob_bits)
            own_cost[t + 1] = own_cost[t] + bits + 8 * (1 + size)
        pool = np.zeros(nsym, np.int64)
        for t in range(m, -1, -1):  # pool = rows t.. summed
            if t < m:
                pool += jk[order[t]]
            if t > 255:
                continue
            bits, size = _row_cost(pool, prob_bits)
            total = (own_cost[t] + bits + 8 * size + (8 - k) * n) / 8 + 2 + 4 * STATES
            if total < best or (total == best and k == best_k):  # ties: smaller K, T
                best, best_k, best_t = total, k, t
                for i in range(order.size):  # a loop: slice assignment compiles string code
                    best_order[i] = order[i]
    k, t = best_k, best_t
    nsym = 1 << k
    chosen = np.sort(best_order[:t])
    for i in range(t):
        own[i] = chosen[i]
    tables[: t + 1, :nsym] = 0
    for c in range(256):
        r = 0
        for q in range(t):
            if own[q] == c:
                r = q + 1
        for h in range(16):
            tables[r, h >> (4 - k)] += joint[c, h]
    return best, k, t


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _ctx_enc_step(x, i, data, ctx, cmap, etab, buf, p, lb, lmask):
    """Code byte i: its top bits through the context's table, then its low bits raw."""
    v = _u(data[i])
    x, p = _enc_step(x, cmap[ctx[i]] + (v >> lb), etab, buf, p)
    return (x << lb) | (v & lmask), p


@njit(nogil=True, cache=True)
def _ctx_encode(data, ctx, n_top_bits, own, freqs, buf):
    """Write the whole rans-ctx payload at the end of ``buf``; returns where it starts.

    ``own``: sorted context bytes with their own table (table 1 + index); other contexts use
    table 0. ``freqs[t]``: the 2**K frequencies of table t (sum 2**(CTX_SCALE - 8 + K)).
    ``buf`` needs ``2 * data.size + 2 + 4 * STATES + header`` bytes.
    """
    low_bits = 8 - n_top_bits
    prob_bits = CTX_SCALE - low_bits
    ntab = freqs.shape[0]
    nsym = 1 << n_top_bits
    etab = np.zeros(4 * 16 * ntab, np.uint64)
    for t in range(ntab):
        cum = 0
        for h in range(nsym):
            if freqs[t, h] > 0:
                _encoder_entry(etab, 16 * t + h, freqs[t, h], cum, prob_bits, int64(CTX_SCALE))
                cum += freqs[t, h]
    cmap = np.zeros(256, np.uint64)  # context byte -> 16 * its table
    for r in range(own.size):
        cmap[own[r]] = 16 * (r + 1)
    lb = _u(low_bits)
    lm = (_u(1) << lb) - _u(1)
    n = _u(data.size)
    st = np.full(STATES, _L, np.uint64)
    p = _u(buf.size)
    nmain = n - n % _u(STATES)
    i = n
    while i > nmain:
        i -= _u(1)
        j = i % _u(STATES)
        st[j], p = _ctx_enc_step(st[j], i, data, ctx, cmap, etab, buf, p, lb, lm)
    x0, x1, x2, x3, x4, x5, x6, x7 = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    while i > _u(0):
        i -= _u(STATES)
        x7, p = _ctx_enc_step(x7, i + _u(7), data, ctx, cmap, etab, buf, p, lb, lm)
        x6, p = _ctx_enc_step(x6, i + _u(6), data, ctx, cmap, etab, buf, p, lb, lm)
        x5, p = _ctx_enc_step(x5, i + _u(5), data, ctx, cmap, etab, buf, p, lb, lm)
        x4, p = _ctx_enc_step(x4, i + _u(4), data, ctx, cmap, etab, buf, p, lb, lm)
        x3, p = _ctx_enc_step(x3, i + _u(3), data, ctx, cmap, etab, buf, p, lb, lm)
        x2, p = _ctx_enc_step(x2, i + _u(2), data, ctx, cmap, etab, buf, p, lb, lm)
        x1, p = _ctx_enc_step(x1, i + _u(1), data, ctx, cmap, etab, buf, p, lb, lm)
        x0, p = _ctx_enc_step(x0, i, data, ctx, cmap, etab, buf, p, lb, lm)
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = x0, x1, x2, x3, x4, x5, x6, x7
    p = int(p) - 4 * STATES
    for j in range(STATES):
        _put_u32(buf, p + 4 * j, st[j])
    p -= _ctx_header_size(n_top_bits, own, freqs)
    q = p
    buf[q] = n_top_bits
    buf[q + 1] = own.size
    q += 2
    for r in range(own.size):
        buf[q + r] = own[r]
    q += own.size
    for t in range(ntab):
        for h in range(nsym):
            q = _put_varint(buf, q, freqs[t, h])
    return p


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _ctx_read_tables(src, dtab, cmap):
    """Parse the rans-ctx header, fill decode tables and the context map.

    Returns (n_top_bits, position) or (error, -1). Table t occupies dtab[t << P :][: 2**P];
    entry: (top bits << low_bits) | (slot - cum) << 8 | freq << 20. ``cmap[c]`` is the
    offset of context c's table.
    """
    end = src.size
    if end < 2:
        return E_HEADER, -1
    k = int(src[0])
    if k < 1 or k > 4:
        return E_HEADER, -1
    low_bits = 8 - k
    prob_bits = CTX_SCALE - low_bits
    m = 1 << prob_bits
    nown = int(src[1])
    p = 2 + nown
    if p > end:
        return E_HEADER, -1
    cmap[:] = 0
    for r in range(nown):
        c = src[2 + r]
        if r > 0 and c <= src[1 + r]:
            return E_TABLE, -1
        cmap[c] = (r + 1) << prob_bits
    for t in range(nown + 1):
        cum = 0
        for h in range(1 << k):
            f, p = _get_varint(src, p, end)
            if p < 0:
                return E_HEADER, -1
            if f > m - cum:
                return E_TABLE, -1
            base = (t << prob_bits) + cum
            for r in range(f):
                dtab[base + r] = np.uint32((h << low_bits) | (r << 8) | (f << 20))
            cum += f
        if cum != m:
            return E_TABLE, -1
    return k, p


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _ctx_step(x, c, cmap, dtab, lb, lmask):
    slot = x & _u((1 << CTX_SCALE) - 1)
    e = _u(dtab[cmap[c] + (slot >> lb)])
    sym = np.uint8((e & _u(0xFF)) | (slot & lmask))
    return (e >> _u(20)) * (x >> _u(CTX_SCALE)) + ((e >> _u(8)) & _u(0xFFF)), sym


@njit(nogil=True, cache=True)
def _ctx_decode(src, ctx, out, dtab, cmap, st):
    """Decode a whole rans-ctx payload into ``out`` (``ctx``: same length); 0 or ``E_*``.

    ``dtab``: uint32[256 << 9] scratch; ``cmap``: uint64[256]; ``st``: uint64[STATES].
    """
    k, p0 = _ctx_read_tables(src, dtab, cmap)
    if p0 < 0:
        return k
    if src.size - p0 < 4 * STATES:
        return E_HEADER
    if not _get_states(src, p0, st):
        return E_STATE
    p = _u(p0 + 4 * STATES)
    end = _u(src.size)
    if (end - p) % _W:
        return E_ODD
    lb = _u(8 - k)
    lmask = (_u(1) << lb) - _u(1)
    n = _u(out.size)
    nmain = n - n % _u(STATES)
    x0, x1, x2, x3, x4, x5, x6, x7 = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    i = _u(0)
    while i < nmain and p + _u(2 * STATES) <= end:
        x0, out[i] = _ctx_step(x0, ctx[i], cmap, dtab, lb, lmask)
        x1, out[i + _u(1)] = _ctx_step(x1, ctx[i + _u(1)], cmap, dtab, lb, lmask)
        x2, out[i + _u(2)] = _ctx_step(x2, ctx[i + _u(2)], cmap, dtab, lb, lmask)
        x3, out[i + _u(3)] = _ctx_step(x3, ctx[i + _u(3)], cmap, dtab, lb, lmask)
        x4, out[i + _u(4)] = _ctx_step(x4, ctx[i + _u(4)], cmap, dtab, lb, lmask)
        x5, out[i + _u(5)] = _ctx_step(x5, ctx[i + _u(5)], cmap, dtab, lb, lmask)
        x6, out[i + _u(6)] = _ctx_step(x6, ctx[i + _u(6)], cmap, dtab, lb, lmask)
        x7, out[i + _u(7)] = _ctx_step(x7, ctx[i + _u(7)], cmap, dtab, lb, lmask)
        x0, p = _refill(x0, src, p)
        x1, p = _refill(x1, src, p)
        x2, p = _refill(x2, src, p)
        x3, p = _refill(x3, src, p)
        x4, p = _refill(x4, src, p)
        x5, p = _refill(x5, src, p)
        x6, p = _refill(x6, src, p)
        x7, p = _refill(x7, src, p)
        i += _u(STATES)
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = x0, x1, x2, x3, x4, x5, x6, x7
    while i < n:
        j = i % _u(STATES)
        x, out[i] = _ctx_step(st[j], ctx[i], cmap, dtab, lb, lmask)
        if x < _L:
            if p + _W > end:
                return E_SHORT
            x, p = _refill(x, src, p)
        st[j] = x
        i += _u(1)
    return _check_end(st, p, end)
