"""ggml block quantizers (Q8_0, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) and their dequantizers.

Blocks are byte-exact ggml (``block_q4_K`` etc. of ggml-common.h): fp16 super-block scales,
6-bit packed sub-block scales/mins, bit-planed quants. ``gguf.quants.dequantize`` of our
blocks equals our dequantizers bit for bit (``tests/test_kquant.py``): the dequantizers do
their arithmetic in float32 in the order gguf-py and ggml do (``(d*sc)*q - dmin*m``).

The search is ours, not ggml's ``*_ref`` (which map the block maximum to the grid end and
round): it minimises the (optionally weighted) squared error of what is actually stored.

1. Each sub-block gets its best continuous scale (and min, for Q4_K/Q5_K) over a grid of
   candidate scales, each refitted by least squares, then a few Lloyd steps (assign levels,
   refit).
2. The super-block scale ``d`` (and ``dmin``) is chosen among candidates by the true error
   after rounding ``d`` to fp16 and every sub-block scale to its integer, each sub-block
   trying the integer scales next to the rounded one (and re-assigning its levels).
3. ``d`` (and ``dmin``) are refitted by least squares given all integers, rounded to fp16,
   with their fp16 neighbours tried, until the error stops falling.

Every step keeps the best so far, starting from the all-zero block, so a block is never worse
than zero. ``w`` (one weight per element, or an empty array for uniform weights) weights the
squared error, as an importance matrix would. ``effort`` (0, 1, 2) sets the candidate counts
and refinement rounds.

Compile time is part of the product: helpers take typed constants (``float64(0.5)``,
``int64(4)``), never bare literals; one generic symmetric path serves Q8_0, Q3_K, Q6_K and
IQ4_XS, one asymmetric path Q4_K and Q5_K. Input must be finite (the Python wrapper checks);
a super-block scale that would overflow fp16 is clamped to 65504.
"""

from __future__ import annotations

import math

import numpy as np
from numba import float64, int64, njit, uint8

_H = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}

# grid values, ascending (the level index is what is stored)
KVALUES_IQ4NL = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float64
)
_LIN = {n: np.arange(-n // 2, n // 2, dtype=np.float64) for n in (8, 64, 256)}
VALUES_Q3 = _LIN[8]  # -4..3
VALUES_Q6 = _LIN[64]  # -32..31
VALUES_Q8 = _LIN[256]  # -128..127
VALUES_IQ4 = KVALUES_IQ4NL
_F16_MAX = 65504.0


# ---------------------------------------------------------------------------------------
# fp16


@njit(**_H)
def f16_bits(v):
    """fp16 bits of the finite float64 ``v`` (round to nearest even; |v| >= 65520 -> 65504)."""
    s = int64(0)
    if v < 0.0:
        s = int64(0x8000)
        v = -v
    if v >= _F16_MAX:
        return s | int64(0x7BFF)
    if v < 6.103515625e-05:  # 2**-14: subnormal (or zero); h == 1024 is the smallest normal
        return s | int64(np.rint(v * 16777216.0))
    m, e = math.frexp(v)  # v = m * 2**e, 0.5 <= m < 1
    h = int64(np.rint(m * 2048.0))  # 1024..2048 (2048 carries into the exponent)
    return s | (((int64(e) + int64(14)) << int64(10)) + h - int64(1024))


@njit(**_H)
def f16_value(h):
    """The value of fp16 bits ``h`` as float64 (exact)."""
    h = int64(h)
    e = (h >> int64(10)) & int64(31)
    m = h & int64(1023)
    if e == 0:
        v = math.ldexp(float64(m), -24)
    elif e == 31:
        v = np.inf if m == 0 else np.nan
    else:
        v = math.ldexp(float64(m + int64(1024)), int(e) - 25)
    return -v if h & int64(0x8000) else v


@njit(**_H)
def _put16(out, pos, h):
    out[pos] = uint8(h & int64(255))
    out[pos + int64(1)] = uint8((h >> int64(8)) & int64(255))


@njit(**_H)
def _get16(b, pos):
    return int64(b[pos]) | (int64(b[pos + int64(1)]) << int64(8))


# ---------------------------------------------------------------------------------------
# shared search pieces


@njit(**_H)
def _wt(w, i):
    if w.size == 0:
        return 1.0
    return float64(w[i])


@njit(**_H)
def _index(values, nv, linear, t):
    """Index of the grid value nearest ``t`` (ties to the upper one for a non-linear grid)."""
    if linear:
        if t > 1e9:
            t = 1e9
        elif t < -1e9:
            t = -1e9
        k = int64(np.rint(t)) - int64(values[0])
        if k < 0:
            return int64(0)
        if k > nv - 1:
            return nv - int64(1)
        return k
    t2 = t + t
    idx = int64(0)
    step = nv >> int64(1)
    while step > 0:
        j = idx + step
        if t2 >= values[j - int64(1)] + values[j]:
            idx = j
        step >>= int64(1)
    return idx


@njit(**_H)
def _sym_assign(x, w, base, bs, values, nv, linear, zero_idx, scale, L, lo):
    """Levels of ``x[base:base+bs]`` at ``scale`` into ``L[lo:lo+bs]``; returns the weighted
    squared error and the least-squares sums (sum w*x*v, sum w*v*v)."""
    err = 0.0
    sxv = 0.0
    svv = 0.0
    if scale == 0.0:
        for i in range(bs):
            xi = float64(x[base + i])
            err += _wt(w, base + i) * xi * xi
            L[lo + i] = uint8(zero_idx)
        return err, sxv, svv
    inv = 1.0 / scale
    for i in range(bs):
        xi = float64(x[base + i])
        k = _index(values, nv, linear, xi * inv)
        L[lo + i] = uint8(k)
        v = values[k]
        wi = _wt(w, base + i)
        d = xi - scale * v
        err += wi * d * d
        sxv += wi * xi * v
        svv += wi * v * v
    return err, sxv, svv


@njit(**_H)
def _sub_scale(x, w, base, bs, values, nv, linear, zero_idx, nk, fmin, fmax, Lt):
    """Best continuous scale of one sub-block: candidates map its extreme to either grid end
    times a factor in [fmin, fmax], each refitted by least squares, then Lloyd steps."""
    amax = 0.0
    mx = 0.0
    sxx = 0.0
    for i in range(bs):
        xi = float64(x[base + i])
        sxx += _wt(w, base + i) * xi * xi
        if abs(xi) > amax:
            amax = abs(xi)
            mx = xi
    if amax < 1e-30 or sxx <= 0.0:
        return 0.0
    best = sxx
    best_s = 0.0
    for e in range(2):
        end = values[0] if e == 0 else values[nv - 1]
        for k in range(nk):
            f = fmin + (fmax - fmin) * k / max(nk - 1, 1)
            s = mx / (end * f)
            if not (s != 0.0 and math.isfinite(s)):
                continue
            err, sxv, svv = _sym_assign(x, w, base, bs, values, nv, linear, zero_idx, s, Lt,
                                        int64(0))  # fmt: skip
            if svv > 0.0:
                e2 = sxx - sxv * sxv / svv
                if e2 < best:
                    best = e2
                    best_s = sxv / svv
            if err < best:
                best = err
                best_s = s
    for _ in range(3):
        if best_s == 0.0:
            break
        err, sxv, svv = _sym_assign(x, w, base, bs, values, nv, linear, zero_idx, best_s, Lt,
                                    int64(0))  # fmt: skip
        if svv <= 0.0:
            break
        e2 = sxx - sxv * sxv / svv
        if e2 < best * (1.0 - 1e-12):
            best = e2
            best_s = sxv / svv
        else:
            break
    return best_s


@njit(**_H)
def _sym_eval(x, w, base, nsub, bs, values, nv, linear, zero_idx, smin, smax, sj, d, q, L):
    """Total error of the super-block at fp16-exact ``d``: each sub-block tries the integer
    scales next to round(sj/d) (clamped to [smin, smax]), re-assigning its levels; the best
    integers go to ``q`` and levels to ``L``."""
    tot = 0.0
    for j in range(nsub):
        lo = int64(j) * bs
        if d == 0.0:
            err, _, _ = _sym_assign(x, w, base + lo, bs, values, nv, linear, zero_idx, 0.0, L, lo)
            q[j] = 0
            tot += err
            continue
        r = sj[j] / d
        if r > 1e6:
            r = 1e6
        elif r < -1e6:
            r = -1e6
        r0 = int64(np.rint(r))
        best = np.inf
        bq = int64(0)
        last = int64(0)
        for dq in range(-1, 2):
            qq = r0 + dq
            if qq < smin or qq > smax:
                continue
            last = qq
            err, _, _ = _sym_assign(x, w, base + lo, bs, values, nv, linear, zero_idx,
                                    d * float64(qq), L, lo)  # fmt: skip
            if err < best:
                best = err
                bq = qq
        if best == np.inf:  # round(sj/d) far outside the range: clamp
            bq = smin if r0 < smin else smax
            best, _, _ = _sym_assign(x, w, base + lo, bs, values, nv, linear, zero_idx,
                                     d * float64(bq), L, lo)  # fmt: skip
        elif bq != last:  # L holds the last tried; redo the best one
            _sym_assign(x, w, base + lo, bs, values, nv, linear, zero_idx, d * float64(bq), L, lo)
        q[j] = bq
        tot += best
    return tot


@njit(**_H)
def _sym_block(x, w, base, nsub, bs, values, linear, smin, smax, effort, fmin, fmax,
               sj, q, L, qt, Lt, Ls):  # fmt: skip
    """Quantize one super-block of a symmetric type. Returns the fp16 bits of ``d``; integer
    sub-block scales in ``q``, level indices in ``L``."""
    nv = int64(values.size)
    zero_idx = _index(values, nv, linear, 0.0)
    nk = int64(12) + int64(12) * effort
    for j in range(nsub):
        sj[j] = _sub_scale(x, w, base + int64(j) * bs, bs, values, nv, linear, zero_idx, nk,
                           fmin, fmax, Ls)  # fmt: skip
    # start from the all-zero block
    best = _sym_eval(x, w, base, nsub, bs, values, nv, linear, zero_idx, smin, smax, sj, 0.0,
                     q, L)  # fmt: skip
    best_h = int64(0)
    big = 0.0
    for j in range(nsub):
        if abs(sj[j]) > abs(big):
            big = sj[j]
    if big == 0.0:
        return best_h
    nd = int64(4) + int64(4) * effort
    for e in range(2):
        end = float64(smin) if e == 0 else float64(smax)
        if smin == smax and e == 1:
            break
        for k in range(nd):
            f = 0.9 + 0.2 * k / max(nd - 1, 1)
            if smin == smax:
                f = 1.0 - 0.02 * (nd // 2) + 0.02 * k  # Q8_0: d is the scale itself
            h = f16_bits(big / (end * f))
            d = f16_value(h)
            if d == 0.0:
                continue
            err = _sym_eval(x, w, base, nsub, bs, values, nv, linear, zero_idx, smin, smax, sj,
                            d, qt, Lt)  # fmt: skip
            if err < best:
                best = err
                best_h = h
                for j in range(nsub):
                    q[j] = qt[j]
                for i in range(nsub * bs):
                    L[i] = Lt[i]
    # least-squares d given the integers, and its fp16 neighbours
    for _ in range(int64(2) + int64(2) * effort):
        if best_h == 0:
            break
        num = 0.0
        den = 0.0
        for j in range(nsub):
            for i in range(bs):
                k = int64(j) * bs + i
                u = float64(q[j]) * values[L[k]]
                wi = _wt(w, base + k)
                num += wi * float64(x[base + k]) * u
                den += wi * u * u
        if den <= 0.0:
            break
        h0 = f16_bits(num / den)
        improved = False
        for dh in range(-1, 2):
            h = h0 + dh
            if h == best_h or (h & int64(0x7FFF)) == 0 or (h & int64(0x7C00)) == int64(0x7C00):
                continue
            d = f16_value(h)
            err = _sym_eval(x, w, base, nsub, bs, values, nv, linear, zero_idx, smin, smax, sj,
                            d, qt, Lt)  # fmt: skip
            if err < best:
                best = err
                best_h = h
                improved = True
                for j in range(nsub):
                    q[j] = qt[j]
                for i in range(nsub * bs):
                    L[i] = Lt[i]
        if not improved:
            break
    return best_h


@njit(**_H)
def _asym_assign(x, w, base, bs, nmax, A, B, L, lo):
    """Levels of ``x`` at ``A*l - B`` (l in 0..nmax) into ``L``; returns the squared error."""
    err = 0.0
    if A == 0.0:
        for i in range(bs):
            L[lo + i] = uint8(0)
            dd = float64(x[base + i]) + B
            err += _wt(w, base + i) * dd * dd
        return err
    inv = 1.0 / A
    for i in range(bs):
        xi = float64(x[base + i])
        t = (xi + B) * inv
        if t > 1e6:
            t = 1e6
        k = int64(np.rint(t))
        if k < 0:
            k = int64(0)
        elif k > nmax:
            k = nmax
        L[lo + i] = uint8(k)
        dd = xi - (A * float64(k) - B)
        err += _wt(w, base + i) * dd * dd
    return err


@njit(**_H)
def _asym_fit(x, w, base, bs, L, lo):
    """Least-squares (a, c) of x ~ a*L + c with c <= 0."""
    sw = 0.0
    sx = 0.0
    sl = 0.0
    sl2 = 0.0
    sxl = 0.0
    for i in range(bs):
        wi = _wt(w, base + i)
        xi = float64(x[base + i])
        li = float64(L[lo + i])
        sw += wi
        sx += wi * xi
        sl += wi * li
        sl2 += wi * li * li
        sxl += wi * xi * li
    D = sw * sl2 - sl * sl
    if D > 0.0:
        a = (sw * sxl - sx * sl) / D
        c = (sl2 * sx - sl * sxl) / D
        if c > 0.0:
            c = 0.0
            a = sxl / sl2
        return a, c
    if sl2 > 0.0:  # every level equal (a constant sub-block): no min
        return sxl / sl2, 0.0
    return 0.0, 0.0


@njit(**_H)
def _asym_sub(x, w, base, bs, nmax, nstep, Lt):
    """Best continuous (scale, min) of one sub-block (dequantized as scale*l - min, min >= 0):
    make_qkx2_quants' candidate grid, each refitted by least squares, then Lloyd steps."""
    mn = float64(x[base])
    mx = mn
    for i in range(1, bs):
        xi = float64(x[base + i])
        mn = min(mn, xi)
        mx = max(mx, xi)
    if mn > 0.0:
        mn = 0.0
    if mx == mn:
        return 0.0, -mn
    best = _asym_assign(x, w, base, bs, nmax, 0.0, 0.0, Lt, int64(0))  # the zero sub-block
    ba = 0.0
    bb = 0.0
    for s in range(nstep + 1):
        iscale = (float64(nmax) - 1.0 + 2.0 * s / max(nstep, 1)) / (mx - mn)
        if iscale <= 0.0:
            continue
        for i in range(bs):
            k = int64(np.rint(iscale * (float64(x[base + i]) - mn)))
            Lt[i] = uint8(max(int64(0), min(nmax, k)))
        a, c = _asym_fit(x, w, base, bs, Lt, int64(0))
        if a <= 0.0:
            continue
        err = 0.0
        for i in range(bs):
            dd = a * float64(Lt[i]) + c - float64(x[base + i])
            err += _wt(w, base + i) * dd * dd
        if err < best:
            best = err
            ba = a
            bb = -c
    for _ in range(3):
        if ba <= 0.0:
            break
        _asym_assign(x, w, base, bs, nmax, ba, bb, Lt, int64(0))
        a, c = _asym_fit(x, w, base, bs, Lt, int64(0))
        if a <= 0.0:
            break
        err = _asym_assign(x, w, base, bs, nmax, a, -c, Lt, int64(0))
        if err < best * (1.0 - 1e-12):
            best = err
            ba = a
            bb = -c
        else:
            break
    return ba, bb


@njit(**_H)
def _asym_eval(x, w, base, bs, nmax, sa, sb, d, dm, sc, mm, L):
    """Total error of a Q4_K/Q5_K super-block at fp16-exact ``d``, ``dm``: each sub-block
    tries the 6-bit scale and min next to the rounded ones."""
    tot = 0.0
    for j in range(8):
        lo = int64(j) * bs
        r0 = int64(0)
        if d > 0.0:
            r0 = int64(np.rint(min(sa[j] / d, 1e6)))
        m0 = int64(0)
        if dm > 0.0:
            m0 = int64(np.rint(min(sb[j] / dm, 1e6)))
        best = np.inf
        bs_ = int64(0)
        bm = int64(0)
        for ds in range(-1, 2):
            s_ = min(max(r0 + ds, int64(0)), int64(63))
            if ds != -1 and s_ == min(max(r0 + ds - 1, int64(0)), int64(63)):
                continue
            for dmi in range(-1, 2):
                m_ = min(max(m0 + dmi, int64(0)), int64(63))
                if dmi != -1 and m_ == min(max(m0 + dmi - 1, int64(0)), int64(63)):
                    continue
                err = _asym_assign(x, w, base + lo, bs, nmax, d * float64(s_), dm * float64(m_),
                                   L, lo)  # fmt: skip
                if err < best:
                    best = err
                    bs_ = s_
                    bm = m_
        _asym_assign(x, w, base + lo, bs, nmax, d * float64(bs_), dm * float64(bm), L, lo)
        sc[j] = bs_
        mm[j] = bm
        tot += best
    return tot


@njit(**_H)
def _asym_block(x, w, base, nmax, effort, sa, sb, sc, mm, L, sct, mmt, Lt, Ls, hs):
    """Quantize one Q4_K/Q5_K super-block (8 sub-blocks of 32). fp16 bits of d and dmin go to
    ``hs[0]``, ``hs[1]``; 6-bit scales and mins to ``sc``, ``mm``; levels to ``L``."""
    bs = int64(32)
    nstep = int64(20) + int64(20) * effort
    amax = 0.0
    bmax = 0.0
    for j in range(8):
        a, b = _asym_sub(x, w, base + int64(j) * bs, bs, nmax, nstep, Ls)
        sa[j] = a
        sb[j] = b
        amax = max(amax, a)
        bmax = max(bmax, b)
    best = _asym_eval(x, w, base, bs, nmax, sa, sb, 0.0, 0.0, sc, mm, L)
    hd = int64(0)
    hm = int64(0)
    if amax == 0.0 and bmax == 0.0:
        hs[0] = hd
        hs[1] = hm
        return
    hm0 = f16_bits(bmax / 63.0)
    nd = int64(4) + int64(4) * effort
    # d with dmin at max/63, then dmin at the best d
    for pas in range(2):
        for k in range(nd):
            f = 0.92 + 0.2 * k / max(nd - 1, 1)
            if pas == 0:
                h1 = f16_bits(amax / 63.0 / f) if amax > 0.0 else int64(0)
                h2 = hm0
            else:
                h1 = hd
                h2 = f16_bits(bmax / 63.0 / f)
            err = _asym_eval(x, w, base, bs, nmax, sa, sb, f16_value(h1), f16_value(h2), sct,
                             mmt, Lt)  # fmt: skip
            if err < best:
                best = err
                hd = h1
                hm = h2
                for j in range(8):
                    sc[j] = sct[j]
                    mm[j] = mmt[j]
                for i in range(256):
                    L[i] = Lt[i]
    # joint least squares of (d, dmin) given the integers; fp16 neighbours
    for _ in range(int64(2) + int64(2) * effort):
        s11 = 0.0
        s12 = 0.0
        s22 = 0.0
        r1 = 0.0
        r2 = 0.0
        for j in range(8):
            for i in range(32):
                k = int64(j) * bs + i
                u = float64(sc[j]) * float64(L[k])
                v = -float64(mm[j])
                xi = float64(x[base + k])
                wi = _wt(w, base + k)
                s11 += wi * u * u
                s12 += wi * u * v
                s22 += wi * v * v
                r1 += wi * u * xi
                r2 += wi * v * xi
        det = s11 * s22 - s12 * s12
        if s22 > 0.0 and det > 1e-300 * max(s11 * s22, 1e-300):
            dls = (r1 * s22 - r2 * s12) / det
            mls = (s11 * r2 - s12 * r1) / det
        elif s11 > 0.0:
            dls = r1 / s11
            mls = 0.0
        else:
            break
        if dls <= 0.0:
            break
        mls = max(mls, 0.0)
        h10 = f16_bits(dls)
        h20 = f16_bits(mls)
        improved = False
        for t in range(5):
            h1 = h10 + (int64(t) - 1 if t < 3 else 0)
            h2 = h20 + (int64(t) * 2 - 7 if t >= 3 else 0)
            if h1 <= 0 or h2 < 0 or h1 >= 0x7C00 or h2 >= 0x7C00 or (h1 == hd and h2 == hm):
                continue
            err = _asym_eval(x, w, base, bs, nmax, sa, sb, f16_value(h1), f16_value(h2), sct,
                             mmt, Lt)  # fmt: skip
            if err < best:
                best = err
                hd = h1
                hm = h2
                improved = True
                for j in range(8):
                    sc[j] = sct[j]
                    mm[j] = mmt[j]
                for i in range(256):
                    L[i] = Lt[i]
        if not improved:
            break
    hs[0] = hd
    hs[1] = hm


# ---------------------------------------------------------------------------------------
# packing


@njit(**_H)
def _pack_scales_k4(out, o, sc, mm):
    """Q4_K/Q5_K's 12 bytes of 6-bit scales and mins (get_scale_min_k4's inverse)."""
    for j in range(12):
        out[o + j] = uint8(0)
    for j in range(8):
        ls = sc[j]
        lm = mm[j]
        if j < 4:
            out[o + j] = uint8(ls)
            out[o + j + 4] = uint8(lm)
        else:
            out[o + j + 4] = uint8((ls & 0xF) | ((lm & 0xF) << 4))
            out[o + j - 4] = uint8(out[o + j - 4] | ((ls >> 4) << 6))
            out[o + j] = uint8(out[o + j] | ((lm >> 4) << 6))


@njit(**_H)
def _scale_min_k4(b, o, j):
    if j < 4:
        return int64(b[o + j]) & 63, int64(b[o + j + 4]) & 63
    s = (int64(b[o + j + 4]) & 0xF) | ((int64(b[o + j - 4]) >> 6) << 4)
    m = (int64(b[o + j + 4]) >> 4) | ((int64(b[o + j]) >> 6) << 4)
    return s, m


@njit(**_H)
def _scratch(nsub, bs):
    return (
        np.zeros(nsub, np.float64),
        np.zeros(nsub, np.float64),
        np.zeros(nsub, np.int64),
        np.zeros(nsub, np.int64),
        np.zeros(nsub, np.int64),
        np.zeros(nsub, np.int64),
        np.zeros(nsub * bs, np.uint8),
        np.zeros(nsub * bs, np.uint8),
        np.zeros(bs, np.uint8),
    )


# ---------------------------------------------------------------------------------------
# kernels: x float32 1-D (whole blocks), w float32 1-D (same size, or empty), out uint8 1-D


@njit(nogil=True, cache=True)
def quantize_q8_0(x, w, out, effort):
    nb = x.size // 32
    sj, _, q, _, qt, _, L, Lt, Ls = _scratch(int64(1), int64(32))
    for b in range(nb):
        h = _sym_block(x, w, int64(b) * 32, int64(1), int64(32), VALUES_Q8, int64(1), int64(1),
                       int64(1), effort, float64(0.9), float64(1.05), sj, q, L, qt, Lt, Ls)  # fmt: skip
        o = int64(b) * 34
        _put16(out, o, h)
        for i in range(32):
            out[o + 2 + i] = uint8(int64(L[i]) ^ 128)  # int8 q = L - 128


@njit(nogil=True, cache=True)
def quantize_q6_k(x, w, out, effort):
    nb = x.size // 256
    sj, _, q, _, qt, _, L, Lt, Ls = _scratch(int64(16), int64(16))
    for b in range(nb):
        h = _sym_block(x, w, int64(b) * 256, int64(16), int64(16), VALUES_Q6, int64(1), int64(-128),
                       int64(127), effort, float64(0.75), float64(1.1), sj, q, L, qt, Lt, Ls)  # fmt: skip
        o = int64(b) * 210
        for j in range(0, 256, 128):
            ql = o + j // 2
            qh = o + 128 + j // 4
            for ll in range(32):
                q1 = int64(L[j + ll])
                q2 = int64(L[j + ll + 32])
                q3 = int64(L[j + ll + 64])
                q4 = int64(L[j + ll + 96])
                out[ql + ll] = uint8((q1 & 0xF) | ((q3 & 0xF) << 4))
                out[ql + ll + 32] = uint8((q2 & 0xF) | ((q4 & 0xF) << 4))
                out[qh + ll] = uint8(
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6)
                )
        for j in range(16):
            out[o + 192 + j] = uint8(q[j] & 255)
        _put16(out, o + 208, h)


@njit(nogil=True, cache=True)
def quantize_q3_k(x, w, out, effort):
    nb = x.size // 256
    sj, _, q, _, qt, _, L, Lt, Ls = _scratch(int64(16), int64(16))
    for b in range(nb):
        h = _sym_block(x, w, int64(b) * 256, int64(16), int64(16), VALUES_Q3, int64(1), int64(-32),
                       int64(31), effort, float64(0.45), float64(1.1), sj, q, L, qt, Lt, Ls)  # fmt: skip
        o = int64(b) * 110
        for i in range(32):
            out[o + i] = uint8(0)
        for j in range(256):  # hmask: bit j//32 of byte j%32 is the level's high bit
            if L[j] > 3:
                out[o + (j % 32)] = uint8(out[o + (j % 32)] | (1 << (j // 32)))
        for j in range(0, 256, 128):
            for ll in range(32):
                out[o + 32 + j // 4 + ll] = uint8(
                    (int64(L[j + ll]) & 3)
                    | ((int64(L[j + ll + 32]) & 3) << 2)
                    | ((int64(L[j + ll + 64]) & 3) << 4)
                    | ((int64(L[j + ll + 96]) & 3) << 6)
                )
        s = o + 96
        for j in range(12):
            out[s + j] = uint8(0)
        for j in range(16):
            lv = q[j] + 32
            if j < 8:
                out[s + j] = uint8(lv & 0xF)
            else:
                out[s + j - 8] = uint8(out[s + j - 8] | ((lv & 0xF) << 4))
            out[s + 8 + j % 4] = uint8(out[s + 8 + j % 4] | ((lv >> 4) << (2 * (j // 4))))
        _put16(out, o + 108, h)


@njit(nogil=True, cache=True)
def quantize_iq4_xs(x, w, out, effort):
    nb = x.size // 256
    sj, _, q, _, qt, _, L, Lt, Ls = _scratch(int64(8), int64(32))
    for b in range(nb):
        h = _sym_block(x, w, int64(b) * 256, int64(8), int64(32), VALUES_IQ4, int64(0), int64(-32),
                       int64(31), effort, float64(0.75), float64(1.1), sj, q, L, qt, Lt, Ls)  # fmt: skip
        o = int64(b) * 136
        _put16(out, o, h)
        sh = int64(0)
        for j in range(4):
            out[o + 4 + j] = uint8(0)
        for j in range(8):
            lv = q[j] + 32
            if j % 2 == 0:
                out[o + 4 + j // 2] = uint8(lv & 0xF)
            else:
                out[o + 4 + j // 2] = uint8(out[o + 4 + j // 2] | ((lv & 0xF) << 4))
            sh |= (lv >> 4) << (2 * j)
        _put16(out, o + 2, sh)
        for i in range(8):
            for j in range(16):
                out[o + 8 + 16 * i + j] = uint8(
                    int64(L[32 * i + j]) | (int64(L[32 * i + 16 + j]) << 4)
                )


@njit(**_H)
def _quantize_qk(x, w, out, effort, nmax, nbytes):
    nb = x.size // 256
    sa, sb, sc, mm, sct, mmt, L, Lt, Ls = _scratch(int64(8), int64(32))
    hs = np.zeros(2, np.int64)
    for b in range(nb):
        _asym_block(x, w, int64(b) * 256, nmax, effort, sa, sb, sc, mm, L, sct, mmt, Lt, Ls, hs)
        o = int64(b) * nbytes
        _put16(out, o, hs[0])
        _put16(out, o + 2, hs[1])
        _pack_scales_k4(out, o + 4, sc, mm)
        if nmax == 15:
            for j in range(0, 256, 64):
                for ll in range(32):
                    out[o + 16 + j // 2 + ll] = uint8(
                        int64(L[j + ll]) | (int64(L[j + ll + 32]) << 4)
                    )
        else:
            for i in range(32):
                out[o + 16 + i] = uint8(0)
            for n in range(0, 256, 64):
                sh = n // 32  # bit of qh for the first 32 of this 64
                for ll in range(32):
                    l1 = int64(L[n + ll])
                    l2 = int64(L[n + ll + 32])
                    hb = (l1 >> 4) << sh | (l2 >> 4) << (sh + 1)
                    out[o + 16 + ll] = uint8(out[o + 16 + ll] | hb)
                    out[o + 48 + n // 2 + ll] = uint8((l1 & 0xF) | ((l2 & 0xF) << 4))


@njit(nogil=True, cache=True)
def quantize_q4_k(x, w, out, effort):
    _quantize_qk(x, w, out, effort, int64(15), int64(144))


@njit(nogil=True, cache=True)
def quantize_q5_k(x, w, out, effort):
    _quantize_qk(x, w, out, effort, int64(31), int64(176))


# ---------------------------------------------------------------------------------------
# dequantizers: blocks uint8 1-D, out float32 1-D; float32 arithmetic as ggml / gguf-py


@njit(nogil=True, cache=True)
def dequantize_q8_0(b, out):
    for k in range(out.size // 32):
        o = int64(k) * 34
        d = np.float32(f16_value(_get16(b, o)))
        for i in range(32):
            v = int64(b[o + 2 + i])
            out[k * 32 + i] = d * np.float32(v - 256 if v > 127 else v)


@njit(nogil=True, cache=True)
def dequantize_q6_k(b, out):
    for k in range(out.size // 256):
        o = int64(k) * 210
        y = int64(k) * 256
        d = np.float32(f16_value(_get16(b, o + 208)))
        for n in range(0, 256, 128):
            ql = o + n // 2
            qh = o + 128 + n // 4
            for ll in range(32):
                h = int64(b[qh + ll])
                a0 = int64(b[ql + ll])
                a1 = int64(b[ql + ll + 32])
                qv = ((a0 & 0xF) | ((h & 3) << 4), (a1 & 0xF) | (((h >> 2) & 3) << 4),
                      (a0 >> 4) | (((h >> 4) & 3) << 4), (a1 >> 4) | (((h >> 6) & 3) << 4))  # fmt: skip
                for t in range(4):
                    s = int64(b[o + 192 + n // 16 + ll // 16 + 2 * t])
                    s = s - 256 if s > 127 else s
                    out[y + n + ll + 32 * t] = (d * np.float32(s)) * np.float32(qv[t] - 32)


@njit(nogil=True, cache=True)
def dequantize_q3_k(b, out):
    for k in range(out.size // 256):
        o = int64(k) * 110
        y = int64(k) * 256
        d = np.float32(f16_value(_get16(b, o + 108)))
        for j in range(16):
            s = o + 96
            lv = (int64(b[s + j]) & 0xF) if j < 8 else (int64(b[s + j - 8]) >> 4)
            lv |= ((int64(b[s + 8 + j % 4]) >> (2 * (j // 4))) & 3) << 4
            dl = d * np.float32(lv - 32)
            for i in range(16):
                e = 16 * j + i
                n = e // 128
                r = e % 128
                shift = 2 * (r // 32)
                ll = r % 32
                ql = (int64(b[o + 32 + 32 * n + ll]) >> shift) & 3
                hb = (int64(b[o + ll]) >> (e // 32)) & 1
                out[y + e] = dl * np.float32(ql - (0 if hb else 4))


@njit(nogil=True, cache=True)
def dequantize_iq4_xs(b, out):
    for k in range(out.size // 256):
        o = int64(k) * 136
        y = int64(k) * 256
        d = np.float32(f16_value(_get16(b, o)))
        sh = _get16(b, o + 2)
        for ib in range(8):
            lv = ((int64(b[o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF) | (
                ((sh >> (2 * ib)) & 3) << 4
            )
            dl = d * np.float32(lv - 32)
            for j in range(16):
                c = int64(b[o + 8 + 16 * ib + j])
                out[y + 32 * ib + j] = dl * np.float32(KVALUES_IQ4NL[c & 0xF])
                out[y + 32 * ib + 16 + j] = dl * np.float32(KVALUES_IQ4NL[c >> 4])


@njit(**_H)
def _dequantize_qk(b, out, nmax, nbytes):
    for k in range(out.size // 256):
        o = int64(k) * nbytes
        y = int64(k) * 256
        d = np.float32(f16_value(_get16(b, o)))
        dm = np.float32(f16_value(_get16(b, o + 2)))
        for j in range(8):
            s, m = _scale_min_k4(b, o + 4, int64(j))
            dl = d * np.float32(s)
            ml = dm * np.float32(m)
            half = j // 2
            shift = 4 * (j % 2)
            for ll in range(32):
                if nmax == 15:
                    qv = (int64(b[o + 16 + 32 * half + ll]) >> shift) & 0xF
                else:
                    qv = (int64(b[o + 48 + 32 * half + ll]) >> shift) & 0xF
                    qv |= ((int64(b[o + 16 + ll]) >> j) & 1) << 4
                out[y + 32 * j + ll] = dl * np.float32(qv) - ml


@njit(nogil=True, cache=True)
def dequantize_q4_k(b, out):
    _dequantize_qk(b, out, int64(15), int64(144))


@njit(nogil=True, cache=True)
def dequantize_q5_k(b, out):
    _dequantize_qk(b, out, int64(31), int64(176))
