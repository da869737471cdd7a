"""Kernels of the ``huffman`` codec (the format is specified in ``zipmodel.codecs.huffman``).

* :func:`_segment_hist` counts bytes per stream segment; :func:`_code_lengths` turns counts into
  optimal length-limited code lengths (package-merge); :func:`_canonical_codes` assigns the
  canonical codes; :func:`_encode4` writes the four bitstreams.
* :func:`_build_tables` makes the decode tables from code lengths: ``single[x]`` is
  ``sym | len << 8`` for the code that the 12-bit peek ``x`` starts with; ``multi[x]`` packs
  every whole code in ``x``, up to 4: ``nbits | count << 4 | sym0 << 8 | sym1 << 16 | ...``.
* :func:`_decode4` decodes the four streams in lockstep, straight into the caller's buffer;
  :func:`_decode4_single` is the one-symbol-per-lookup variant, faster when few codes are
  short enough to share a lookup (high-entropy data). Both take explicit word and output
  boundaries, so a caller can decode into any slice of a larger buffer.

Decoding trusts nothing but the boundaries it is given: the unchecked loop runs only while
every stream has at least one iteration's worth of output room (20 symbols) and input words
(60 bits plus the look-ahead word) left; the rest is decoded one checked symbol at a time.
Every lookup index is 12 bits into a fully filled 4096-entry table, so no code can read
outside it. Indices and bit arithmetic are ``uint64`` throughout: Numba adds wrap-around checks
for signed indices, and mixing signed with unsigned gives floats.
"""

from __future__ import annotations

import numpy as np
from numba import njit

TABLE_BITS = 12  # decode table index width: the longest code the format allows
_TABLE_SIZE = 1 << TABLE_BITS

_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U4 = np.uint64(4)
_U6 = np.uint64(6)
_U8 = np.uint64(8)
_U15 = np.uint64(15)
_U16 = np.uint64(16)
_U20 = np.uint64(20)
_U24 = np.uint64(24)
_U32 = np.uint64(32)
_U52 = np.uint64(64 - TABLE_BITS)
_U60 = np.uint64(60)
_U63 = np.uint64(63)
_U64 = np.uint64(64)
_U255 = np.uint64(255)
_UTB = np.uint64(TABLE_BITS)
_UMASK = np.uint64(_TABLE_SIZE - 1)


@njit(nogil=True, cache=True)
def _segment_hist(data, bounds, hist):
    """``hist[s]`` = byte counts of ``data[bounds[s]:bounds[s + 1]]`` for the 4 segments."""
    for s in range(4):
        for v in range(256):
            hist[s, v] = 0
    n = bounds[1] - bounds[0]
    for s in range(1, 4):
        n = min(n, bounds[s + 1] - bounds[s])
    b0, b1, b2, b3 = bounds[0], bounds[1], bounds[2], bounds[3]
    j = _U0
    while j < n:  # four independent counters per step: repeats do not serialise
        hist[0, data[b0 + j]] += 1
        hist[1, data[b1 + j]] += 1
        hist[2, data[b2 + j]] += 1
        hist[3, data[b3 + j]] += 1
        j += _U1
    for s in range(4):
        k = bounds[s] + n
        while k < bounds[s + 1]:
            hist[s, data[k]] += 1
            k += _U1


WORK_SIZE = 256 + (2 + TABLE_BITS) * 510  # int64 scratch of _code_lengths


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _shell_sort(a, n):
    """Sort ``a[:n]`` in place (np.sort would add seconds of compile time for 256 items)."""
    gap = 1
    while gap < n // 3:
        gap = 3 * gap + 1
    while gap > 0:
        for i in range(gap, n):
            v = a[i]
            j = i
            while j >= gap and a[j - gap] > v:
                a[j] = a[j - gap]
                j -= gap
            a[j] = v
        gap //= 3


@njit(nogil=True, cache=True)
def _code_lengths(hist, max_bits, lens, work):
    """Optimal code lengths ``<= max_bits`` for the 256 counts ``hist`` into ``lens``.

    Package-merge (Larmore and Hirschberg). Symbols are ordered by (count, symbol) and a leaf
    goes before a package of equal weight, so ties are broken the same way everywhere.
    Absent symbols get 0. Returns the number of present symbols; with fewer than 2, every
    length is 0. Needs ``2 ** max_bits >= 256``, a total count below 2**55 (package weights
    stay below 2**63) and ``WORK_SIZE`` int64 of scratch ``work``
    (passed in, like every buffer here: allocations and slices cost seconds of compile time).
    """
    n = 0
    for s in range(256):
        lens[s] = 0
        if hist[s] > 0:
            work[n] = np.int64(hist[s]) * 256 + s  # keys: (count, symbol)
            n += 1
    if n < 2:
        return n
    _shell_sort(work, n)
    cap = 2 * n - 2  # no list needs more items than the top selection
    lists = 256  # work[lists:] holds two lists of weights, used in turn, of cap items each
    leaf = 256 + 2 * cap  # work[leaf + level * cap + item]: 1 if that item is a leaf
    for i in range(n):
        work[lists + i] = work[i] >> 8
        work[leaf + i] = 1
    size = n
    for level in range(1, max_bits):  # level 0 holds codes of max_bits, the last one of 1 bit
        cur = lists + ((level - 1) & 1) * cap
        nxt = lists + (level & 1) * cap
        packages = size // 2
        a = 0
        q = 0
        k = 0
        while k < cap and (a < n or q < packages):
            leaf_w = work[a] >> 8 if a < n else 0
            pkg_w = work[cur + 2 * q] + work[cur + 2 * q + 1] if q < packages else 0
            take_leaf = q >= packages or (a < n and leaf_w <= pkg_w)
            work[nxt + k] = leaf_w if take_leaf else pkg_w
            work[leaf + level * cap + k] = 1 if take_leaf else 0
            a += 1 if take_leaf else 0
            q += 0 if take_leaf else 1
            k += 1
        size = k
    # The first 2n-2 items of the top list are the solution; a package taken at one level
    # takes the first two items per package of the level below. A leaf adds one bit to its
    # symbol's code each time it is taken.
    m = cap
    for level in range(max_bits - 1, -1, -1):
        c = 0
        for k in range(m):
            c += work[leaf + level * cap + k]
        for i in range(c):
            lens[work[i] & 255] += 1
        m = 2 * (m - c)
    return n


@njit(nogil=True, cache=True)
def _canonical_codes(lens, codes):
    """Canonical codes: ``codes[s] = len | code << 8`` for lengths 1..12 in (length, symbol)
    order. Returns the Kraft sum in units of 2**-12 (4096 for a complete code)."""
    pos = 0
    for length in range(1, TABLE_BITS + 1):
        span = 1 << (TABLE_BITS - length)
        for s in range(256):
            if lens[s] == length:
                codes[s] = length | ((pos >> (TABLE_BITS - length)) << 8)
                pos += span
    return pos


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _read_lengths(table, lens):
    """Code lengths from a header table (32-byte symbol bitmap, then one nibble per present
    symbol) into ``lens``. Returns False if a length is outside 1..12 or the nibble after
    the last one is not zero; ``table`` must hold ``32 + ceil(present / 2)`` bytes."""
    k = 0
    for s in range(256):
        if (table[s >> 3] >> (s & 7)) & 1:
            length = (table[32 + (k >> 1)] >> ((k & 1) << 2)) & 15
            if length == 0 or length > TABLE_BITS:
                return False
            lens[s] = length
            k += 1
        else:
            lens[s] = 0
    return (k & 1) == 0 or (table[32 + (k >> 1)] >> 4) == 0


@njit(nogil=True, cache=True)
def _build_tables(table, lens, codes, single, multi):
    """Decode tables from a header table (see :func:`_read_lengths`); ``lens`` and ``codes``
    are outputs too. Returns the number of symbols the 4096 multi entries hold together
    (4096 to 16384: over 4096, the mean symbols per lookup on coded data), or -1 for a
    length out of range, -2 for an incomplete code."""
    if not _read_lengths(table, lens):
        return -1
    if _canonical_codes(lens, codes) != _TABLE_SIZE:
        return -2
    for s in range(256):
        length = np.int64(lens[s])
        if length > 0:
            shift = TABLE_BITS - length
            first = np.int64(codes[s] >> 8) << shift
            v = np.uint16(s | (length << 8))
            for x in range(first, first + (1 << shift)):
                single[x] = v
    total = _U0
    for x in range(_TABLE_SIZE):
        ux = np.uint64(x)
        e = np.uint64(single[x])
        nbits = e >> _U8
        entry = (e & _U255) << _U8
        count = _U1
        while count < _U4:
            e = np.uint64(single[(ux << nbits) & _UMASK])
            length = e >> _U8
            if nbits + length > _UTB:
                break
            entry |= (e & _U255) << (_U8 + _U8 * count)
            nbits += length
            count += _U1
        multi[x] = entry | nbits | (count << _U4)
        total += count
    return np.int64(total)


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _put(words, acc, nb, wi, code, length):
    """Append ``length`` (1..64) bits to a stream: ``acc`` holds its ``nb`` (< 64) pending bits
    from the top; word ``wi`` is (re)written every time, so nothing is left to flush but
    the bits that spill into the next word."""
    g = code << (_U64 - length)
    acc |= g >> nb
    words[wi] = acc
    spill = (g << _U1) << (_U63 - nb)
    nb += length
    full = nb >> _U6
    wi += full
    nb &= _U63
    acc = spill if full else acc  # a select, not a branch: word ends are unpredictable
    return acc, nb, wi


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _put4(data, k, codes, words, acc, nb, wi):
    """Append the codes of ``data[k:k+4]`` (at most 48 bits) as one group."""
    e0 = np.uint64(codes[data[k]])
    e1 = np.uint64(codes[data[k + _U1]])
    e2 = np.uint64(codes[data[k + _U1 + _U1]])
    e3 = np.uint64(codes[data[k + _U4 - _U1]])
    l1 = e1 & _U255
    l2 = e2 & _U255
    l3 = e3 & _U255
    g = (e0 >> _U8) << l1 | (e1 >> _U8)
    g = g << l2 | (e2 >> _U8)
    g = g << l3 | (e3 >> _U8)
    return _put(words, acc, nb, wi, g, (e0 & _U255) + l1 + l2 + l3)


@njit(nogil=True, cache=True)
def _encode4(data, bounds, codes, words, wbounds):
    """Code ``data[bounds[s]:bounds[s+1]]`` into ``words[wbounds[s]:wbounds[s+1]]``, s = 0..3.

    The word ranges must be exactly the streams' sizes (the caller computes them from the
    segment histograms); every word is written, the last one zero-padded.
    """
    n = bounds[1] - bounds[0]
    for s in range(1, 4):
        n = min(n, bounds[s + 1] - bounds[s])
    n -= n & (_U4 - _U1)
    a0 = a1 = a2 = a3 = _U0
    n0 = n1 = n2 = n3 = _U0
    w0, w1, w2, w3 = wbounds[0], wbounds[1], wbounds[2], wbounds[3]
    b0, b1, b2, b3 = bounds[0], bounds[1], bounds[2], bounds[3]
    j = _U0
    while j < n:  # the four streams interleaved: independent dependency chains
        a0, n0, w0 = _put4(data, b0 + j, codes, words, a0, n0, w0)
        a1, n1, w1 = _put4(data, b1 + j, codes, words, a1, n1, w1)
        a2, n2, w2 = _put4(data, b2 + j, codes, words, a2, n2, w2)
        a3, n3, w3 = _put4(data, b3 + j, codes, words, a3, n3, w3)
        j += _U4
    _finish(data, b0 + n, bounds[1], codes, words, a0, n0, w0)
    _finish(data, b1 + n, bounds[2], codes, words, a1, n1, w1)
    _finish(data, b2 + n, bounds[3], codes, words, a2, n2, w2)
    _finish(data, b3 + n, bounds[4], codes, words, a3, n3, w3)


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _finish(data, k, end, codes, words, acc, nb, wi):
    """Code ``data[k:end]`` one symbol at a time, then store the bits still pending."""
    while k < end:
        e = np.uint64(codes[data[k]])
        acc, nb, wi = _put(words, acc, nb, wi, e >> _U8, e & _U255)
        k += _U1
    if nb > _U0:
        words[wi] = acc


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _window(words, p):
    """The 64 stream bits from bit ``p`` on; needs words ``p >> 6`` and the one after."""
    i = p >> _U6
    s = p & _U63
    return (words[i] << s) | ((words[i + _U1] >> _U1) >> (_U63 - s))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _multi5(words, multi, out, p, o):
    """Five multi-symbol lookups from one window: at most 60 bits in, 20 symbols out (up to
    3 bytes past the last symbol are scratch, overwritten later)."""
    win = _window(words, p)
    used = _U0
    for _ in range(5):
        e = multi[win >> _U52]
        out[o] = np.uint8((e >> _U8) & _U255)
        out[o + _U1] = np.uint8((e >> _U16) & _U255)
        out[o + _U1 + _U1] = np.uint8((e >> _U24) & _U255)
        out[o + _U4 - _U1] = np.uint8((e >> _U32) & _U255)
        nbits = e & _U15
        win <<= nbits
        used += nbits
        o += (e >> _U4) & _U15
    return p + used, o


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _single5(words, single, out, p, o):
    """Five one-symbol lookups from one window (at most 60 bits, 5 symbols)."""
    win = _window(words, p)
    used = _U0
    for _ in range(5):
        e = np.uint64(single[win >> _U52])
        out[o] = np.uint8(e & _U255)
        nbits = e >> _U8
        win <<= nbits
        used += nbits
        o += _U1
    return p + used, o


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _room(w_end, p, o, end, per_step):
    """Unchecked steps a stream at bit ``p`` and output ``o`` can take before ``w_end``
    (words) and ``end`` (bytes): each step reads < 60 bits plus a look-ahead word and writes
    < ``per_step`` bytes. (Stream bounds are passed as values, never as literal stream
    numbers: Numba would compile a copy per literal.)"""
    if w_end == _U0 or o >= end:
        return _U0
    last_bit = (w_end << _U6) - _U64  # a window from bit p needs p < last_bit
    if p >= last_bit:
        return _U0
    return min((last_bit - p + _U60 - _U1) // _U60, (end - o) // per_step)


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _tail(words, w_end, single, out, end, p, o):
    """Finish a stream one checked symbol at a time; returns 0 or an error code."""
    bit_end = w_end << _U6
    while o < end:
        i = p >> _U6
        if i >= w_end:
            return 1  # the stream ends before its symbols do
        sh = p & _U63
        nxt = words[i + _U1] if i + _U1 < w_end else _U0
        win = (words[i] << sh) | ((nxt >> _U1) >> (_U63 - sh))
        e = np.uint64(single[win >> _U52])
        p += e >> _U8
        if p > bit_end:
            return 1
        out[o] = np.uint8(e & _U255)
        o += _U1
    if (p + _U63) >> _U6 != w_end:
        return 2  # whole words left over
    if p & _U63 and (words[p >> _U6] << (p & _U63)) != _U0:
        return 3  # padding bits are not zero
    return 0


@njit(nogil=True, cache=True)
def _decode4(words, wbounds, single, multi, out, bounds):
    """Decode stream s (``words[wbounds[s]:wbounds[s+1]]``, bits from the top of each word)
    into ``out[bounds[s]:bounds[s+1]]`` for s = 0..3. Returns 0, or a nonzero error code
    when a stream is too short, too long or badly padded (``out`` is then partly written)."""
    p0, p1, p2, p3 = wbounds[0] << _U6, wbounds[1] << _U6, wbounds[2] << _U6, wbounds[3] << _U6
    o0, o1, o2, o3 = bounds[0], bounds[1], bounds[2], bounds[3]
    e0, e1, e2, e3 = bounds[1], bounds[2], bounds[3], bounds[4]
    w0, w1, w2, w3 = wbounds[1], wbounds[2], wbounds[3], wbounds[4]
    while True:
        steps = _room(w0, p0, o0, e0, _U20)
        steps = min(steps, _room(w1, p1, o1, e1, _U20))
        steps = min(steps, _room(w2, p2, o2, e2, _U20))
        steps = min(steps, _room(w3, p3, o3, e3, _U20))
        if steps == _U0:
            break
        while steps > _U0:
            p0, o0 = _multi5(words, multi, out, p0, o0)
            p1, o1 = _multi5(words, multi, out, p1, o1)
            p2, o2 = _multi5(words, multi, out, p2, o2)
            p3, o3 = _multi5(words, multi, out, p3, o3)
            steps -= _U1
    for s in range(4):  # one loop, not four inlined copies: compile time
        if s == 0:
            p, o, end, w_end = p0, o0, e0, w0
        elif s == 1:
            p, o, end, w_end = p1, o1, e1, w1
        elif s == 2:
            p, o, end, w_end = p2, o2, e2, w2
        else:
            p, o, end, w_end = p3, o3, e3, w3
        err = _tail(words, w_end, single, out, end, p, o)
        if err:
            return err
    return 0


@njit(nogil=True, cache=True)
def _decode4_single(words, wbounds, single, out, bounds):
    """:func:`_decode4` with one symbol per lookup."""
    p0, p1, p2, p3 = wbounds[0] << _U6, wbounds[1] << _U6, wbounds[2] << _U6, wbounds[3] << _U6
    o0, o1, o2, o3 = bounds[0], bounds[1], bounds[2], bounds[3]
    e0, e1, e2, e3 = bounds[1], bounds[2], bounds[3], bounds[4]
    w0, w1, w2, w3 = wbounds[1], wbounds[2], wbounds[3], wbounds[4]
    five = _U4 + _U1
    while True:
        steps = _room(w0, p0, o0, e0, five)
        steps = min(steps, _room(w1, p1, o1, e1, five))
        steps = min(steps, _room(w2, p2, o2, e2, five))
        steps = min(steps, _room(w3, p3, o3, e3, five))
        if steps == _U0:
            break
        while steps > _U0:
            p0, o0 = _single5(words, single, out, p0, o0)
            p1, o1 = _single5(words, single, out, p1, o1)
            p2, o2 = _single5(words, single, out, p2, o2)
            p3, o3 = _single5(words, single, out, p3, o3)
            steps -= _U1
    for s in range(4):
        if s == 0:
            p, o, end, w_end = p0, o0, e0, w0
        elif s == 1:
            p, o, end, w_end = p1, o1, e1, w1
        elif s == 2:
            p, o, end, w_end = p2, o2, e2, w2
        else:
            p, o, end, w_end = p3, o3, e3, w3
        err = _tail(words, w_end, single, out, end, p, o)
        if err:
            return err
    return 0
