"""Slow, obviously correct references for zipmodel._kernels.kquant.

Dequantizers: one element at a time, transcribed from ggml-quants.c's ``dequantize_row_*``
(pointer walks and all), with numpy float32 scalars so every product rounds to float32 as
ggml's C does. Quantizer: our Q8_0 search (``_sym_block`` with one sub-block of 32 and the
integer scale fixed at 1) in plain Python floats, the same float64 operations in the same
order, so the bytes must agree exactly.
"""

from __future__ import annotations

import math

import numpy as np

F32 = np.float32
QK_K = 256
KVALUES_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def f16(b: bytes | np.ndarray, pos: int) -> np.float32:
    return F32(np.frombuffer(bytes(b[pos : pos + 2]), np.float16)[0])


def i8(v: int) -> int:
    return v - 256 if v > 127 else v


def get_scale_min_k4(j: int, q) -> tuple[int, int]:
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


def dequantize(blocks: np.ndarray, qtype: str) -> np.ndarray:
    b = [int(v) for v in np.asarray(blocks, np.uint8).reshape(-1)]
    return np.array(_DEQ[qtype](b), np.float32)


def _q8_0(b):
    y = []
    for o in range(0, len(b), 34):
        d = f16(bytes(b), o)
        y += [d * F32(i8(b[o + 2 + j])) for j in range(32)]
    return y


def _q3_k(b):
    y = []
    for o in range(0, len(b), 110):
        hm, q, sb = o, o + 32, o + 96
        d_all = f16(bytes(b), o + 108)
        # the 16 6-bit scales (ggml unpacks them with kmask1/kmask2 on 32-bit words)
        scales = []
        for j in range(16):
            low = (b[sb + j] & 0xF) if j < 8 else (b[sb + j - 8] >> 4)
            high = (b[sb + 8 + j % 4] >> (2 * (j // 4))) & 3
            scales.append((low | (high << 4)) - 32)
        is_, m = 0, 1
        for _n in range(0, QK_K, 128):
            shift = 0
            for _j in range(4):
                for half in (0, 16):
                    dl = d_all * F32(scales[is_])
                    is_ += 1
                    for ll in range(16):
                        ql = (b[q + ll + half] >> shift) & 3
                        y.append(dl * F32(ql - (0 if b[hm + ll + half] & m else 4)))
                shift += 2
                m <<= 1
            q += 32
    return y


def _qk(b, nbytes, five):
    y = []
    for o in range(0, len(b), nbytes):
        d, mn = f16(bytes(b), o), f16(bytes(b), o + 2)
        sc = b[o + 4 : o + 16]
        qh = o + 16
        ql = o + 48 if five else o + 16
        is_, u1, u2 = 0, 1, 2
        for _j in range(0, QK_K, 64):
            s, m = get_scale_min_k4(is_, sc)
            d1, m1 = d * F32(s), mn * F32(m)
            s, m = get_scale_min_k4(is_ + 1, sc)
            d2, m2 = d * F32(s), mn * F32(m)
            for ll in range(32):
                v = (b[ql + ll] & 0xF) + ((16 if b[qh + ll] & u1 else 0) if five else 0)
                y.append(d1 * F32(v) - m1)
            for ll in range(32):
                v = (b[ql + ll] >> 4) + ((16 if b[qh + ll] & u2 else 0) if five else 0)
                y.append(d2 * F32(v) - m2)
            ql += 32
            is_ += 2
            u1 <<= 2
            u2 <<= 2
    return y


def _q6_k(b):
    y = []
    for o in range(0, len(b), 210):
        d = f16(bytes(b), o + 208)
        ql, qh, sc = o, o + 128, o + 192
        out = [F32(0)] * QK_K
        yo = 0
        for _n in range(0, QK_K, 128):
            for ll in range(32):
                is_ = ll // 16
                q1 = ((b[ql + ll] & 0xF) | (((b[qh + ll] >> 0) & 3) << 4)) - 32
                q2 = ((b[ql + ll + 32] & 0xF) | (((b[qh + ll] >> 2) & 3) << 4)) - 32
                q3 = ((b[ql + ll] >> 4) | (((b[qh + ll] >> 4) & 3) << 4)) - 32
                q4 = ((b[ql + ll + 32] >> 4) | (((b[qh + ll] >> 6) & 3) << 4)) - 32
                out[yo + ll] = d * F32(i8(b[sc + is_])) * F32(q1)
                out[yo + ll + 32] = d * F32(i8(b[sc + is_ + 2])) * F32(q2)
                out[yo + ll + 64] = d * F32(i8(b[sc + is_ + 4])) * F32(q3)
                out[yo + ll + 96] = d * F32(i8(b[sc + is_ + 6])) * F32(q4)
            yo += 128
            ql += 64
            qh += 32
            sc += 8
        y += out
    return y


def _iq4_xs(b):
    y = []
    for o in range(0, len(b), 136):
        d = f16(bytes(b), o)
        scales_h = b[o + 2] | (b[o + 3] << 8)
        qs = o + 8
        for ib in range(QK_K // 32):
            ls = ((b[o + 4 + ib // 2] >> 4 * (ib % 2)) & 0xF) | (((scales_h >> 2 * ib) & 3) << 4)
            dl = d * F32(ls - 32)
            lo = [dl * F32(KVALUES_IQ4NL[b[qs + j] & 0xF]) for j in range(16)]
            hi = [dl * F32(KVALUES_IQ4NL[b[qs + j] >> 4]) for j in range(16)]
            y += lo + hi
            qs += 16
    return y


_DEQ = {
    "q8_0": _q8_0,
    "q3_k": _q3_k,
    "q4_k": lambda b: _qk(b, 144, False),
    "q5_k": lambda b: _qk(b, 176, True),
    "q6_k": _q6_k,
    "iq4_xs": _iq4_xs,
}


# ---------------------------------------------------------------------------------------
# our Q8_0 search, in Python


def f16_bits(v: float) -> int:
    """fp16 bits, round to nearest even, finite: |v| >= 65504 saturates to 65504."""
    if abs(v) >= 65504.0:
        return 0xFBFF if v < 0 else 0x7BFF
    return int(np.array(v, np.float64).astype(np.float16).view(np.uint16))


def f16_value(h: int) -> float:
    return float(np.array(h, np.uint16).view(np.float16))


def _assign_q8(xs, s):
    """(err, sxv, svv, levels) at scale s: the nearest of -128..127 to x/s."""
    err = sxv = svv = 0.0
    levels = []
    if s == 0.0:
        return sum(1.0 * x * x for x in xs), 0.0, 0.0, [128] * len(xs)
    inv = 1.0 / s
    for x in xs:
        t = min(max(x * inv, -1e9), 1e9)
        k = min(max(round(t) + 128, 0), 255)  # round(): half to even, as np.rint
        levels.append(k)
        v = float(k - 128)
        d = x - s * v
        err += 1.0 * d * d
        sxv += 1.0 * x * v
        svv += 1.0 * v * v
    return err, sxv, svv, levels


def quantize_q8_0_block(x: np.ndarray, effort: int = 1) -> bytes:
    """One Q8_0 block (34 bytes) of 32 float32 values, by our search."""
    xs = [float(v) for v in np.asarray(x, np.float32)]
    # 1. best continuous scale
    amax = mx = sxx = 0.0
    for v in xs:
        sxx += 1.0 * v * v
        if abs(v) > amax:
            amax, mx = abs(v), v
    s_best = 0.0
    if not (amax < 1e-30 or sxx <= 0.0):
        best = sxx
        nk = 12 + 12 * effort
        for end in (-128.0, 127.0):
            for k in range(nk):
                f = 0.9 + (1.05 - 0.9) * k / max(nk - 1, 1)
                s = mx / (end * f)
                if not (s != 0.0 and math.isfinite(s)):
                    continue
                err, sxv, svv, _ = _assign_q8(xs, s)
                if svv > 0.0:
                    e2 = sxx - sxv * sxv / svv
                    if e2 < best:
                        best, s_best = e2, sxv / svv
                if err < best:
                    best, s_best = err, s
        for _ in range(3):
            if s_best == 0.0:
                break
            _, sxv, svv, _ = _assign_q8(xs, s_best)
            if svv <= 0.0:
                break
            e2 = sxx - sxv * sxv / svv
            if e2 < best * (1.0 - 1e-12):
                best, s_best = e2, sxv / svv
            else:
                break
    # 2. the fp16 scale by the true error (the zero block first)
    best, _, _, levels = _assign_q8(xs, 0.0)
    best_h = 0
    if s_best != 0.0:
        nd = 4 + 4 * effort
        for k in range(nd):
            f = 1.0 - 0.02 * (nd // 2) + 0.02 * k
            h = f16_bits(s_best / (1.0 * f))
            d = f16_value(h)
            if d == 0.0:
                continue
            err, _, _, lv = _assign_q8(xs, d * 1.0)
            if err < best:
                best, best_h, levels = err, h, lv
        # 3. least-squares refit and fp16 neighbours
        for _ in range(2 + 2 * effort):
            if best_h == 0:
                break
            num = den = 0.0
            for x, k in zip(xs, levels):
                u = 1.0 * float(k - 128)
                num += 1.0 * x * u
                den += 1.0 * u * u
            if den <= 0.0:
                break
            h0 = f16_bits(num / den)
            improved = False
            for dh in (-1, 0, 1):
                h = h0 + dh
                if h == best_h or (h & 0x7FFF) == 0 or (h & 0x7C00) == 0x7C00:
                    continue
                err, _, _, lv = _assign_q8(xs, f16_value(h) * 1.0)
                if err < best:
                    best, best_h, levels, improved = err, h, lv, True
            if not improved:
                break
    return bytes([best_h & 255, best_h >> 8]) + bytes(k ^ 128 for k in levels)
