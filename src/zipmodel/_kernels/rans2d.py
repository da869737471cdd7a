"""Numba kernels of the ``rans-2d`` codec (payload format: :mod:`zipmodel.codecs.rans2d`).

The encoder's search, in passes over one chunk (R = row length, F = first column):

1. byte histogram, then per-row and per-column histograms over a reduced alphabet (the
   CLUSTER_SYMS - 1 most frequent symbols and one bin for the rest);
2. divisive 2-means (rows: 3 levels, columns: 6): each class splits at the median of its
   members' mean symbol value, then members move to the half whose pooled histogram codes
   them in fewer bits (Lloyd rounds until settled). Classes of every K are nested, so
3. one pass counts (row leaf, column leaf, symbol) over the full alphabet (8 x 64 leaves), and
   every candidate (Kr, Kc) is scored from sums of those counts: conditional entropy, the
   coded tables' bits and the class maps (the encoder compares with order-0 ``rans``);
4. the winner's frequency tables are normalised at each allowed precision (10..12 bits),
   the smallest payload wins; a pass writes each symbol's context, and the rANS pass codes
   the chunk.

The codec calls the passes one by one (``_prepare``, ``_cluster`` for rows and for columns,
``_choose``, ``_tables``, ``_encode``): a Numba function is compiled with everything it
calls; pieces keep each compile small.

Payload bytes are untrusted: the decoder checks every read against the payload end and
returns a negative ``E_*`` code instead of raising.

Choices, measured on the 1 MiB chunks of minilm_bf16 / minilm_fp32 exponents and whisper
(CTranslate2 F16) high bytes (benches/kernels_rans2d.py has the end-to-end table):

* class maps: k-means on row / column histograms beats quantiles of the mean symbol value
  by 0.005 (bf16) and 0.1 (whisper) bits/symbol; divisive (nested) 2-means beats flat
  k-means (by 0.001 and 0.014) and lets one pass score every (Kr, Kc); refining the winner
  by co-clustering rows against column classes gained 0.0005 and 0.005: not done;
* clustering alphabet: the 63 most frequent symbols + 1 bin (32: +0.02 bits/symbol on
  whisper, 256: -0.002 for 1.6x the clustering time); splits run until settled (at most 16
  rounds; 6 rounds cost +0.003 on whisper); integer 16.16 dot products vectorise (3x
  faster than float64 sums) and are exact, whatever the vector width;
* tables: bit lengths as gamma-coded zigzag deltas + mantissas take 24-27 % fewer bits
  than gamma codes of the frequencies (whisper: 0.033 -> 0.024 bits/symbol); quantised
  mantissas and an implicit largest entry were estimated to save <= 0.0005 (bf16) and
  0.004 (whisper) more: not done; class maps are stored raw (entropy-coding them would save
  7 % of rows' and 13 % of columns' map bits, 0.0004-0.0008 bits/symbol);
* P in 10..12 with contexts x 2**P <= 2**16 (256 KiB of u32 decode entries): the three
  choices differ by <= 0.0008 bits/symbol in all, but 64 contexts at P = 12 (1 MiB of
  table) decoded 270 M symbols/s against 420 at P = 10 (which is also the smallest there);
* small njit functions without slice assignment or np.argsort: both made the cold compile
  2.5x slower (38 s -> 15 s for encode + decode).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, int64

from .rans import (
    E_FINAL,
    E_HEADER,
    E_ODD,
    E_SHORT,
    E_STATE,
    E_TABLE,
    STATES,
    _check_end,
    _enc_step,
    _encoder_entry,
    _get_states,
    _get_varint_max,
    _histogram,
    _normalize,
    _put_u32,
    _put_varint,
    _refill,
    _varint_size,
)

__all__ = ["E_FINAL", "E_HEADER", "E_MAP", "E_ODD", "E_SHORT", "E_STATE", "E_TABLE"]

E_MAP = -7  # class maps: bad shape, row_len / first_col out of range, nonzero padding

MIN_PROB_BITS = 8
MAX_PROB_BITS = 12  # decode entries are u32: sym | (slot - cum) << 8 | f << 20, f < 2**12
MAX_TABLE = 1 << 16  # the encoder's P: contexts x 2**P <= this (256 KiB of decode table)
FALLBACK_BITS = 10  # ... 64 contexts fit at P = 10
MAX_LKR = 3  # Kr <= 8
MAX_LKC = 6  # Kc <= 64
MAX_LCTX = 6  # Kr * Kc <= 64
MAX_CTX = 1 << MAX_LCTX
MAX_VARINT = 8  # row_len, first_col < 2**56
MAX_GAMMA_ZEROS = 4  # table entries: |bit length delta| <= 12, zigzag + 1 <= 25
MAX_ROW_LEN = 1 << 56
MIN_ROW_LEN = 32  # row classes only for rows of at least this many elements
MIN_COL_SAMPLES = 32  # column classes only when every column has this many samples (mean)
CLUSTER_SYMS = 64  # alphabet of the clustering histograms (63 symbols + "other")
SMOOTH = 0.02  # added to every centroid count before taking logs

_u = np.uint64
_L = np.uint64(1 << 16)
_W = np.uint64(2)


# ----------------------------------------------------------------------------- small helpers


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _bitlen(v):
    b = 0
    while v > 0:
        b += 1
        v >>= 1
    return b


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _gamma_len(v):
    """Bits of the gamma code of ``v >= 1``."""
    return 2 * _bitlen(v) - 1


@njit(nogil=True, cache=True)
def _zigzag(d):
    return 2 * d if d >= 0 else -2 * d - 1


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _entry_bits(f, prev_b):
    """(bits, bit length of f) of one table entry after an entry of bit length prev_b."""
    b = _bitlen(f)
    return _gamma_len(_zigzag(b - prev_b) + 1) + max(b - 1, 0), b


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _table_bits(freqs, u, nctx):
    """Bits of the coded tables ``freqs[t * u + d]``."""
    bits = 0
    for t in range(nctx):
        prev = np.int64(0)
        for d in range(u):
            e, prev = _entry_bits(freqs[t * u + d], prev)
            bits += e
    return bits


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _get_varint(src, p, end):
    """A row length or first column: at most MAX_VARINT bytes."""
    return _get_varint_max(src, p, end, int64(MAX_VARINT))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _n_rows(n, row_len, first_col):
    return (first_col + n + row_len - 1) // row_len


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _fill_ctx(ctx, n, row_len, first_col, rowcls, colcls, lkr, lkc):
    """ctx[i] = rowcls[row] << lkc | colcls[col] for the n elements of the chunk."""
    nrows = _n_rows(n, row_len, first_col)
    if lkc == 0:
        for r in range(nrows):
            a = max(r * row_len - first_col, 0)
            b = min((r + 1) * row_len - first_col, n)
            v = np.uint8(rowcls[r]) if lkr > 0 else np.uint8(0)
            for i in range(_u(a), _u(b)):
                ctx[i] = v
        return
    sh = np.uint8(lkc)
    for r in range(nrows):
        base = _u(r * row_len - first_col + (first_col if r == 0 else 0))
        t0 = _u(first_col if r == 0 else 0)
        t1 = _u(min(row_len, first_col + n - r * row_len))
        v = np.uint8(rowcls[r] << sh) if lkr > 0 else np.uint8(0)
        for t in range(t0, t1):
            ctx[base + t - t0] = v | colcls[t]


# ----------------------------------------------------------------------------- the search


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _sort_by(key, idx, tmp):
    """Sort ``idx`` in place by (key[idx], idx): bottom-up merge sort (np.argsort compiles
    slowly); ``tmp``: scratch of at least idx.size."""
    k = idx.size
    w = 1
    while w < k:
        for lo in range(0, k, 2 * w):
            mid = min(lo + w, k)
            hi = min(lo + 2 * w, k)
            i = lo
            j = mid
            for o in range(lo, hi):
                if j >= hi:
                    take = True
                elif i >= mid:
                    take = False
                else:
                    a = idx[i]
                    b = idx[j]
                    take = not (key[b] < key[a] or (key[b] == key[a] and b < a))
                if take:
                    tmp[o] = idx[i]
                    i += 1
                else:
                    tmp[o] = idx[j]
                    j += 1
        for o in range(k):  # (slice assignment compiles slowly)
            idx[o] = tmp[o]
        w *= 2


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _row_col_hists(data, row_len, first_col, red, m, use_r, use_c, rh, ch):
    """Per-row / per-column histograms over the reduced alphabet."""
    n = data.size
    nrows = _n_rows(n, row_len, first_col)
    mu = _u(m)
    for r in range(nrows):
        t0 = first_col if r == 0 else 0
        t1 = min(row_len, first_col + n - r * row_len)
        base = _u(r * row_len - first_col + t0)  # element of column t0
        rb = _u(r) * mu
        if use_r and use_c:
            for t in range(_u(t0), _u(t1)):
                d = _u(red[data[base + t - _u(t0)]])
                rh[rb + d] += 1
                ch[t * mu + d] += 1
        elif use_r:
            for t in range(_u(t0), _u(t1)):
                rh[rb + _u(red[data[base + t - _u(t0)]])] += 1
        else:
            for t in range(_u(t0), _u(t1)):
                ch[t * mu + _u(red[data[base + t - _u(t0)]])] += 1


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _split(hist, m, stat, cls, level, iters, settle, members, sorted_, tmp, side, cnt, dl):
    """Split every class of ``cls`` (labels < 2**level) in two: labels become 2c + side.

    Lloyd rounds: each member goes to the half whose pooled histogram codes it in fewer bits,
    then the pools are updated with the moves. ``cnt``: int64[2 * m], ``dl``: int32[m] (the
    per-count bit difference in 16.16 fixed point: |dl| < 2**26).
    """
    nitem = cls.size
    mu = _u(m)
    for c in range((1 << level) - 1, -1, -1):  # downwards: new labels 2c, 2c+1 >= c
        k = 0
        for it in range(nitem):
            if cls[it] == c:
                members[k] = it
                k += 1
        if k == 0:
            continue
        idx = members[:k]
        order = sorted_[:k]
        for q in range(k):
            order[q] = idx[q]
        _sort_by(stat, order, tmp)
        for q in range(2 * m):
            cnt[q] = 0
        for q in range(k):
            it = order[q]
            sd = 1 if 2 * q >= k else 0
            side[it] = sd
            off = _u(it) * mu
            cb = _u(sd) * mu
            for s in range(mu):
                cnt[cb + s] += hist[off + s]
        for _ in range(iters):
            t0 = 0
            t1 = 0
            for s in range(m):
                t0 += cnt[s]
                t1 += cnt[m + s]
            for s in range(m):  # bits of one count in half 0 minus bits in half 1, 16.16
                v = math.log2((t0 + SMOOTH * m) / (cnt[s] + SMOOTH)) - math.log2(
                    (t1 + SMOOTH * m) / (cnt[m + s] + SMOOTH)
                )
                dl[s] = math.floor(v * 65536.0 + 0.5)
            moved = 0
            for q in range(k):
                it = idx[q]
                off = _u(it) * mu
                acc = np.int64(0)  # integer sums vectorise (and are exact: deterministic)
                for s in range(_u(0), mu):
                    acc += np.int64(hist[off + s]) * np.int64(dl[s])
                nb = 1 if acc > 0 else 0
                if nb != side[it]:
                    side[it] = nb | 2  # moved: pools updated below
                    moved += 1
            if moved == 0:
                break
            for q in range(k):
                it = idx[q]
                if side[it] & 2:
                    sd = side[it] & 1
                    side[it] = sd
                    off = _u(it) * mu
                    to = _u(sd) * mu
                    fr = _u(1 - sd) * mu
                    for s in range(mu):
                        h = hist[off + s]
                        cnt[to + s] += h
                        cnt[fr + s] -= h
            if settle > 0 and moved * settle <= k:  # almost settled
                break
        for q in range(k):
            it = idx[q]
            cls[it] = 2 * c + side[it]


@njit(nogil=True, cache=True)
def _cluster(hist, m, value, levels, iters, settle, cls):
    """Nested classes of ``levels`` binary splits; ``cls`` gets the leaves (< 2**levels).

    ``value[d]``: the symbol value of reduced symbol d (the mean one for the 'other' bin):
    classes first split at the median of their members' mean value.
    """
    nitem = cls.size
    stat = np.empty(nitem)
    for it in range(nitem):
        tot = np.int64(0)
        acc = 0.0
        for d in range(m):
            h = hist[it * m + d]
            tot += h
            acc += h * value[d]
        stat[it] = acc / tot if tot > 0 else 0.0
    for it in range(nitem):
        cls[it] = 0
    members = np.empty(nitem, np.int64)
    sorted_ = np.empty(nitem, np.int64)
    tmp = np.empty(nitem, np.int64)
    side = np.zeros(nitem, np.uint8)
    cnt = np.zeros(2 * m, np.int64)
    dl = np.empty(m, np.int32)
    for level in range(levels):
        _split(hist, m, stat, cls, level, iters, settle, members, sorted_, tmp, side, cnt, dl)


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _leaf_joint(data, row_len, first_col, rleaf, cleaf, use_c, dsym, u, joint):
    """joint[(row leaf << 6 | column leaf) * u + dense symbol] += 1 over the chunk."""
    n = data.size
    nrows = _n_rows(n, row_len, first_col)
    uu = _u(u)
    for r in range(nrows):
        t0 = first_col if r == 0 else 0
        t1 = min(row_len, first_col + n - r * row_len)
        base = _u(r * row_len - first_col + t0)  # element of column t0
        rb = _u(rleaf[r]) << _u(6)
        if use_c:
            for t in range(_u(t0), _u(t1)):
                leaf = rb | _u(cleaf[t])
                joint[leaf * uu + _u(dsym[data[base + t - _u(t0)]])] += 1
        else:
            for t in range(_u(t0), _u(t1)):
                joint[rb * uu + _u(dsym[data[base + t - _u(t0)]])] += 1


XLOG_LUT = 4096  # c * log2(c) looked up below this count


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _luts():
    """(c * log2 c for c < XLOG_LUT, bit length of v <= 2**MAX_PROB_BITS, gamma bits of
    zigzag + 1 for zigzag values up to 2 * MAX_PROB_BITS + 1)."""
    xl = np.zeros(XLOG_LUT)
    for c in range(1, XLOG_LUT):
        xl[c] = c * math.log2(c)
    bl = np.zeros((1 << MAX_PROB_BITS) + 1, np.int64)
    for v in range(1, bl.size):
        bl[v] = _bitlen(v)
    gz = np.zeros(2 * MAX_PROB_BITS + 2, np.int64)
    for z in range(gz.size):
        gz[z] = _gamma_len(z + 1)
    return xl, bl, gz


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _xlog(c, xl):
    return xl[c] if c < XLOG_LUT else c * math.log2(c)


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _score(agg, nctx, u, xl, bl, gz, min_bits):
    """Estimated bits of coding counts ``agg[t * u + d]``: their conditional entropy, plus
    for the best P that ``_prob_bits_ok`` allows the coded tables (frequencies rounded from
    the counts) and the rounding loss (about T / (24 ln 2 * 2**P) * sum 1 / f over a
    table's f: the expected divergence of frequencies off by a uniform rounding error)."""
    np_ = MAX_PROB_BITS - FALLBACK_BITS + 1
    tb = np.zeros(np_)
    inv = np.zeros(np_)
    prev = np.zeros(np_, np.int64)
    s_inv = np.zeros(np_)
    bits = 0.0
    for t in range(nctx):
        off = t * u
        tot = np.int64(0)
        for d in range(u):
            tot += agg[off + d]
        if tot == 0:  # stored as (2**P - 1, 1, 0, ...)
            for k in range(np_):
                tb[k] += 2 * (FALLBACK_BITS + k) + u + 10
            continue
        b = _xlog(tot, xl)
        for k in range(np_):
            prev[k] = 0
            s_inv[k] = 0.0
        for d in range(u):
            c = np.int64(agg[off + d])
            if c == 0:
                for k in range(np_):
                    tb[k] += gz[_zigzag(-prev[k])]
                    prev[k] = 0
            else:
                b -= _xlog(c, xl)
                for k in range(np_):
                    fmax = (1 << (FALLBACK_BITS + k)) - 1
                    f = min(max(int(c * ((fmax + 1) / tot) + 0.5), 1), fmax)
                    bf = bl[f]
                    tb[k] += gz[_zigzag(bf - prev[k])] + bf - 1
                    prev[k] = bf
                    s_inv[k] += 1.0 / f
        bits += b
        for k in range(np_):
            inv[k] += tot * s_inv[k]
    loss = 1.0 / (24.0 * math.log(2.0))
    best = np.inf
    for k in range(np_):
        pb = FALLBACK_BITS + k
        if _prob_bits_ok(nctx, pb, min_bits):
            best = min(best, tb[k] + inv[k] * loss / (1 << pb))
    return bits + best


@njit(nogil=True, cache=True)
def _prob_bits_ok(nctx, prob_bits, min_bits):
    """Whether the encoder may use P = prob_bits: P >= min_bits and decode tables (contexts x
    2**P u32 entries) within MAX_TABLE, or P = FALLBACK_BITS if no such P exists."""
    if nctx << min_bits > MAX_TABLE:
        return prob_bits == FALLBACK_BITS
    return prob_bits >= min_bits and nctx << prob_bits <= MAX_TABLE


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _aggregate(joint, u, lkr, lkc, agg):
    """Add the leaf counts into the counts per context of candidate (lkr, lkc)."""
    for lr in range(8):
        for lc in range(64):
            leaf = (lr << 6) | lc
            t = ((lr >> (MAX_LKR - lkr)) << lkc) | (lc >> (MAX_LKC - lkc))
            for s in range(u):
                agg[t * u + s] += joint[leaf * u + s]


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _order0_bits(hist):
    """Estimated payload bits of order-0 ``rans`` (14-bit table)."""
    n = np.int64(0)
    for s in range(256):
        n += hist[s]
    bits = n * math.log2(n)
    head = 33 + 32
    for s in range(256):
        c = hist[s]
        if c > 0:
            bits -= c * math.log2(c)
            f = max(1, ((c << 14) + n // 2) // n)
            head += 1 if f - 1 < 128 else 2
    return bits + 8 * head


@njit(nogil=True, cache=True)
def _prepare(data, row_len, first_col):
    """The search's first pass: histograms and what the clustering needs.

    Returns (present, dsym, order-0 payload bits, use_r, use_c, m, rh, ch, value):
    ``present`` the symbols that occur (increasing), ``dsym[s]`` the index of s in it;
    use_r / use_c: whether row / column classes apply; ``rh`` / ``ch``: per-row /
    per-column histograms over a reduced alphabet of m bins (the most frequent symbols,
    the last real bin holding the rest, padding to a multiple of 4); ``value[d]``: the
    symbol value of bin d (the mean one for the rest). Only ``present`` and the order-0
    bits are meaningful when neither use_r nor use_c.
    """
    n = data.size
    hist = np.zeros(256, np.int64)
    _histogram(data, hist)
    u = np.int64(0)
    dsym = np.zeros(256, np.uint8)
    present = np.zeros(256, np.uint8)
    for s in range(256):
        if hist[s] > 0:
            dsym[s] = u
            present[u] = s
            u += 1
    present = present[:u]
    base0 = _order0_bits(hist)
    nrows = _n_rows(n, row_len, first_col)
    use_r = row_len >= MIN_ROW_LEN and nrows >= 2 and u >= 2
    use_c = row_len * MIN_COL_SAMPLES <= n and u >= 2
    if not (use_r or use_c):
        nothing = np.zeros(0, np.int32)
        return present, dsym, base0, use_r, use_c, 0, nothing, nothing, np.zeros(0)
    # reduced alphabet: the mu - 1 most frequent symbols, the rest in bin mu - 1
    order = np.empty(256, np.int64)  # symbols by decreasing count (ties: lower first)
    neg = np.empty(256)
    for q in range(256):
        order[q] = q
        neg[q] = -hist[q]
    _sort_by(neg, order, np.empty(256, np.int64))
    mu = min(u, CLUSTER_SYMS)
    red = np.empty(256, np.uint8)
    for q in range(256):
        red[q] = mu - 1
    for q in range(mu - 1):
        red[order[q]] = q
    m = (mu + 3) & ~3  # padded with empty bins for vectorised sums
    value = np.zeros(m)
    other = np.int64(0)
    for q in range(u):
        s = order[q]
        if q < mu - 1:
            value[q] = s
        else:
            value[mu - 1] += hist[s] * s
            other += hist[s]
    if other > 0:
        value[mu - 1] /= other
    rh = np.zeros((nrows if use_r else 0) * m, np.int32)
    ch = np.zeros((row_len if use_c else 0) * m, np.int32)
    _row_col_hists(data, row_len, first_col, red, m, use_r, use_c, rh, ch)
    return present, dsym, base0, use_r, use_c, m, rh, ch, value


@njit(nogil=True, cache=True)
def _choose(data, row_len, first_col, rleaf, cleaf, use_r, use_c, dsym, u, min_bits):
    """Score every (Kr, Kc) from the leaf classes; returns (lkr, lkc, rowcls, colcls,
    counts, estimated bits of symbols + tables + maps); lkr = lkc = 0 if none applies.

    ``rleaf[row]`` < 8, ``cleaf[col]`` < 64 (only read if use_c): nested classes, the class
    of a row among 2**lkr being rleaf >> (3 - lkr). ``counts[t * u + d]``: count of the d-th
    present symbol in context t.
    """
    nrows = _n_rows(data.size, row_len, first_col)
    joint = np.zeros(512 * u, np.int32)  # counts < 2**31 (chunks are smaller)
    _leaf_joint(data, row_len, first_col, rleaf, cleaf, use_c, dsym, u, joint)
    # every candidate from the leaf counts, merging sibling classes level by level:
    # context t = row class << lkc | column class, so merging the last column split maps
    # t to t >> 1, and (at lkc = 6) merging the last row split maps r << 6 | c to
    # (r >> 1) << 6 | c; both fold in place from the front.
    xl, bl, gz = _luts()
    rows_a = np.empty(joint.size, np.int32)
    for q in range(joint.size):
        rows_a[q] = joint[q]
    cols_b = np.empty(joint.size, np.int32)
    best = np.inf
    best_r = np.int64(0)
    best_c = np.int64(0)
    for lkr in range(MAX_LKR, -1, -1):
        if lkr < MAX_LKR:
            for t in range(1 << (lkr + MAX_LKC)):
                t0 = (((t >> MAX_LKC) << 1) << MAX_LKC) | (t & 63)
                for d in range(u):
                    rows_a[t * u + d] = rows_a[t0 * u + d] + rows_a[(t0 + 64) * u + d]
        if lkr > 0 and not use_r:
            continue
        nb = (1 << (lkr + MAX_LKC)) * u
        for q in range(nb):
            cols_b[q] = rows_a[q]
        for lkc in range(MAX_LKC, -1, -1):
            if lkc < MAX_LKC:
                for t in range(1 << (lkr + lkc)):
                    for d in range(u):
                        cols_b[t * u + d] = cols_b[2 * t * u + d] + cols_b[(2 * t + 1) * u + d]
            if lkr + lkc == 0 or lkr + lkc > MAX_LCTX or (lkc > 0 and not use_c):
                continue
            bits = float(nrows * lkr + row_len * lkc)
            bits += _score(cols_b, 1 << (lkr + lkc), u, xl, bl, gz, min_bits)
            if bits < best or (bits == best and lkr + lkc < best_r + best_c):
                best, best_r, best_c = bits, lkr, lkc
    rowcls = np.zeros(nrows if best_r else 0, np.uint8)
    for r in range(rowcls.size):
        rowcls[r] = rleaf[r] >> (MAX_LKR - best_r)
    colcls = np.zeros(row_len if best_c else 0, np.uint8)
    for t in range(colcls.size):
        colcls[t] = cleaf[t] >> (MAX_LKC - best_c)
    counts = np.zeros(u << (best_r + best_c), np.int64)
    _aggregate(joint, u, best_r, best_c, counts)
    return best_r, best_c, rowcls, colcls, counts, best


@njit(nogil=True, cache=True)
def _tables(counts, u, nctx, prob_bits, freqs):
    """Normalise every context's counts to ``2**prob_bits``; returns (code bits, table bits).

    A context with one symbol gives it 2**P - 1 and 1 to another present symbol (every table
    needs two: a decode entry holds f < 2**P); an unused context gets (2**P - 1, 1).
    """
    mtot = 1 << prob_bits
    code = 0.0
    for t in range(nctx):
        row = counts[t * u : (t + 1) * u]
        f = freqs[t * u : (t + 1) * u]
        k = 0
        one = np.int64(0)
        for s in range(u):
            if row[s] > 0:
                k += 1
                one = s
        if k == 0:
            for s in range(u):
                f[s] = 0
            f[0] = mtot - 1
            f[1] = 1
        elif k == 1:
            for s in range(u):
                f[s] = 0
            f[one] = mtot - 1
            f[1 if one == 0 else 0] = 1
        else:
            _normalize(row, prob_bits, f)
        for s in range(u):
            if row[s] > 0:
                code += row[s] * (prob_bits - math.log2(f[s]))
    return code, _table_bits(freqs, u, nctx)


# ----------------------------------------------------------------------------- encode


@njit(nogil=True, cache=True)
def _header_bits(nrows, row_len, lkr, lkc, freqs, u):
    return nrows * lkr + row_len * lkc + _table_bits(freqs, u, 1 << (lkr + lkc))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _put_bits(buf, bp, v, nb):
    """Write the nb low bits of v at bit position bp (LSB first; buf bytes start zeroed)."""
    for k in range(nb):
        if (v >> k) & 1:
            buf[bp >> 3] |= np.uint8(1 << (bp & 7))
        bp += 1
    return bp


@njit(nogil=True, cache=True)
def _encode(
    data, row_len, first_col, prob_bits, lkr, lkc, rowcls, colcls, present, freqs, buf, ctx, etab
):
    """Write the whole payload at the end of ``buf``; returns where it starts.

    ``present``: the symbols with a frequency (increasing); ``freqs[t * u + d]``: frequency of
    present[d] in context t. ``ctx``: uint8 scratch of data.size; ``etab``: uint64 scratch of
    4 * 256 * MAX_CTX (only the present entries are written).
    """
    n = data.size
    u = present.size
    nctx = 1 << (lkr + lkc)
    for t in range(nctx):
        cum = np.int64(0)
        for d in range(u):
            f = freqs[t * u + d]
            if f > 0:
                _encoder_entry(etab, (t << 8) | np.int64(present[d]), f, cum, prob_bits, prob_bits)
                cum += f
    _fill_ctx(ctx, n, row_len, first_col, rowcls, colcls, lkr, lkc)
    st = np.empty(STATES, np.uint64)
    for j in range(STATES):
        st[j] = _L
    p = _u(buf.size)
    nn = _u(n)
    nmain = nn - nn % _u(STATES)
    i = nn
    while i > nmain:
        i -= _u(1)
        j = i % _u(STATES)
        st[j], p = _enc_step(st[j], (_u(ctx[i]) << _u(8)) | _u(data[i]), etab, buf, p)
    x0, x1, x2, x3, x4, x5, x6, x7 = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    e8 = _u(8)
    while i > _u(0):
        i -= _u(STATES)
        x7, p = _enc_step(x7, (_u(ctx[i + _u(7)]) << e8) | _u(data[i + _u(7)]), etab, buf, p)
        x6, p = _enc_step(x6, (_u(ctx[i + _u(6)]) << e8) | _u(data[i + _u(6)]), etab, buf, p)
        x5, p = _enc_step(x5, (_u(ctx[i + _u(5)]) << e8) | _u(data[i + _u(5)]), etab, buf, p)
        x4, p = _enc_step(x4, (_u(ctx[i + _u(4)]) << e8) | _u(data[i + _u(4)]), etab, buf, p)
        x3, p = _enc_step(x3, (_u(ctx[i + _u(3)]) << e8) | _u(data[i + _u(3)]), etab, buf, p)
        x2, p = _enc_step(x2, (_u(ctx[i + _u(2)]) << e8) | _u(data[i + _u(2)]), etab, buf, p)
        x1, p = _enc_step(x1, (_u(ctx[i + _u(1)]) << e8) | _u(data[i + _u(1)]), etab, buf, p)
        x0, p = _enc_step(x0, (_u(ctx[i]) << e8) | _u(data[i]), etab, buf, p)
    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7] = x0, x1, x2, x3, x4, x5, x6, x7
    p = int(p) - 4 * STATES
    for j in range(STATES):
        _put_u32(buf, p + 4 * j, st[j])
    nrows = _n_rows(n, row_len, first_col)
    nbits = _header_bits(nrows, row_len, lkr, lkc, freqs, u)
    nbytes = (nbits + 7) >> 3
    p -= nbytes
    for q in range(p, p + nbytes):
        buf[q] = 0
    bp = p * 8
    if lkr > 0:
        for r in range(nrows):
            bp = _put_bits(buf, bp, np.int64(rowcls[r]), lkr)
    if lkc > 0:
        for t in range(row_len):
            bp = _put_bits(buf, bp, np.int64(colcls[t]), lkc)
    for t in range(nctx):
        prev = np.int64(0)
        for d in range(u):
            f = freqs[t * u + d]
            b = _bitlen(f)
            v = _zigzag(b - prev) + 1
            g = _bitlen(v)
            bp += g - 1  # gamma(v): g - 1 zeros, a one, the g - 1 low bits of v
            buf[bp >> 3] |= np.uint8(1 << (bp & 7))
            bp += 1
            bp = _put_bits(buf, bp, v, g - 1)
            if b > 1:  # f below its leading one
                bp = _put_bits(buf, bp, f, b - 1)
            prev = b
    p -= 32
    for q in range(p, p + 32):
        buf[q] = 0
    for d in range(u):
        s = np.int64(present[d])
        buf[p + (s >> 3)] |= np.uint8(1 << (s & 7))
    p -= _varint_size(row_len) + _varint_size(first_col) + 2
    buf[p] = prob_bits
    buf[p + 1] = (lkr << 4) | lkc
    q = _put_varint(buf, p + 2, row_len)
    _put_varint(buf, q, first_col)
    return p


# ----------------------------------------------------------------------------- decode


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _get_bits(src, bp, nb):
    v = np.int64(0)
    for k in range(nb):
        v |= ((np.int64(src[bp >> 3]) >> (bp & 7)) & 1) << k
        bp += 1
    return v


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _read_header(src, n, dtab):
    """Parse everything before the states; fill ``dtab`` (table t at t << P).

    Returns (code, P, lkr, lkc, row_len, first_col, rowcls, colcls, position of the states);
    code < 0 on error. The maps it allocates (a byte per class) are checked against the
    payload's bits first: at most 8 bytes per payload byte, and at most n + n / 2 + 2.
    """
    end = src.size
    empty = np.zeros(0, np.uint8)
    if end < 2:
        return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
    prob_bits = np.int64(src[0])
    lkr = np.int64(src[1]) >> 4
    lkc = np.int64(src[1]) & 15
    if prob_bits < MIN_PROB_BITS or prob_bits > MAX_PROB_BITS:
        return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
    if lkr > MAX_LKR or lkc > MAX_LKC or lkr + lkc == 0 or lkr + lkc > MAX_LCTX:
        return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
    row_len, p = _get_varint(src, np.int64(2), end)
    if p < 0:
        return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
    first_col, p = _get_varint(src, p, end)
    if p < 0:
        return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
    if row_len < 2 or first_col >= row_len or (lkc > 0 and row_len > n):
        return E_MAP, 0, 0, 0, 0, 0, empty, empty, 0
    if end - p < 32:
        return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
    present = np.zeros(256, np.uint8)
    u = np.int64(0)
    for s in range(256):
        if (src[p + (s >> 3)] >> (s & 7)) & 1:
            present[u] = s
            u += 1
    p += 32
    if u < 2:
        return E_TABLE, 0, 0, 0, 0, 0, empty, empty, 0
    nrows = _n_rows(n, row_len, first_col)
    ebits = end * 8
    bp = p * 8
    if (nrows * lkr if lkr > 0 else 0) + row_len * lkc > ebits - bp:
        return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
    rowcls = np.zeros(nrows if lkr > 0 else 0, np.uint8)
    for r in range(rowcls.size):
        rowcls[r] = _get_bits(src, bp, lkr)
        bp += lkr
    colcls = np.zeros(row_len if lkc > 0 else 0, np.uint8)
    for t in range(colcls.size):
        colcls[t] = _get_bits(src, bp, lkc)
        bp += lkc
    m = 1 << prob_bits
    for t in range(1 << (lkr + lkc)):
        cum = np.int64(0)
        prev = np.int64(0)
        for d in range(u):
            z = np.int64(0)
            while True:  # gamma(zigzag(b - prev) + 1): zeros, a one, z low bits
                if bp >= ebits:
                    return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
                bit = (np.int64(src[bp >> 3]) >> (bp & 7)) & 1
                bp += 1
                if bit:
                    break
                z += 1
                if z > MAX_GAMMA_ZEROS:
                    return E_TABLE, 0, 0, 0, 0, 0, empty, empty, 0
            if ebits - bp < z:
                return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
            zz = ((1 << z) | _get_bits(src, bp, z)) - 1
            bp += z
            b = prev + ((zz >> 1) if (zz & 1) == 0 else -((zz + 1) >> 1))
            if b < 0 or b > prob_bits:
                return E_TABLE, 0, 0, 0, 0, 0, empty, empty, 0
            prev = b
            f = np.int64(0)
            if b > 0:
                if ebits - bp < b - 1:
                    return E_HEADER, 0, 0, 0, 0, 0, empty, empty, 0
                f = (1 << (b - 1)) | _get_bits(src, bp, b - 1)
                bp += b - 1
            if f >= m or f > m - cum:
                return E_TABLE, 0, 0, 0, 0, 0, empty, empty, 0
            base = (t << prob_bits) + cum
            e = np.int64(present[d]) | (f << 20)
            for r in range(f):
                dtab[base + r] = np.uint32(e | (r << 8))
            cum += f
        if cum != m:
            return E_TABLE, 0, 0, 0, 0, 0, empty, empty, 0
    while bp & 7:  # zero padding to the byte boundary
        if (np.int64(src[bp >> 3]) >> (bp & 7)) & 1:
            return E_MAP, 0, 0, 0, 0, 0, empty, empty, 0
        bp += 1
    return 0, prob_bits, lkr, lkc, row_len, first_col, rowcls, colcls, bp >> 3


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _dec_step(x, c, dtab, pb, mask):
    e = _u(dtab[(_u(c) << pb) | (x & mask)])
    return (e >> _u(20)) * (x >> pb) + ((e >> _u(8)) & _u(0xFFF)), np.uint8(e & _u(0xFF))


@njit(nogil=True, cache=True)
def _decode(src, out, dtab, ctx, st):
    """Decode a whole rans-2d payload into ``out``; 0 or a negative ``E_*`` code.

    ``dtab``: uint32[MAX_CTX << MAX_PROB_BITS] scratch; ``ctx``: uint8[out.size] scratch;
    ``st``: uint64[STATES].
    """
    n = out.size
    code, prob_bits, lkr, lkc, row_len, first_col, rowcls, colcls, p0 = _read_header(src, n, dtab)
    if code < 0:
        return code
    if src.size - p0 < 4 * STATES:
        return E_HEADER
    if not _get_states(src, p0, st):
        return E_STATE
    p = _u(p0 + 4 * STATES)
    end = _u(src.size)
    if (end - p) % _W:
        return E_ODD
    _fill_ctx(ctx, n, row_len, first_col, rowcls, colcls, lkr, lkc)
    pb = _u(prob_bits)
    mask = (_u(1) << pb) - _u(1)
    nn = _u(n)
    nmain = nn - nn % _u(STATES)
    x0, x1, x2, x3, x4, x5, x6, x7 = st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7]
    i = _u(0)
    while i < nmain and p + _u(2 * STATES) <= end:
        x0, out[i] = _dec_step(x0, ctx[i], dtab, pb, mask)
        x1, out[i + _u(1)] = _dec_step(x1, ctx[i + _u(1)], dtab, pb, mask)
        x2, out[i + _u(2)] = _dec_step(x2, ctx[i + _u(2)], dtab, pb, mask)
        x3, out[i + _u(3)] = _dec_step(x3, ctx[i + _u(3)], dtab, pb, mask)
        x4, out[i + _u(4)] = _dec_step(x4, ctx[i + _u(4)], dtab, pb, mask)
        x5, out[i + _u(5)] = _dec_step(x5, ctx[i + _u(5)], dtab, pb, mask)
        x6, out[i + _u(6)] = _dec_step(x6, ctx[i + _u(6)], dtab, pb, mask)
        x7, out[i + _u(7)] = _dec_step(x7, ctx[i + _u(7)], dtab, pb, mask)
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
    while i < nn:
        j = i % _u(STATES)
        x, out[i] = _dec_step(st[j], ctx[i], dtab, pb, mask)
        if x < _L:
            if p + _W > end:
                return E_SHORT
            x, p = _refill(x, src, p)
        st[j] = x
        i += _u(1)
    return _check_end(st, p, end)
