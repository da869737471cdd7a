"""XXH3-64 (xxHash 0.8) as a Numba kernel, so chunk checksums run without the GIL.

Compile time is part of the product (a fresh machine compiles this on first use): helpers are
called with typed arguments (``uint64(24)``, never a bare ``24``, which Numba would compile as
one more ``Literal[int]`` specialisation of the helper), and the aligned and byte-wise loops
share one body chosen by a runtime flag.

Bit-exact with ``xxhash.xxh3_64_intdigest(data, seed)`` for every length and seed (checked by
``tests/test_xxh3.py``). It is the checksum inside the one-call frame coders
(``frame.py``); a checksum on its own is python-xxhash's (``zipmodel._checksum``), which is
faster. Input is read byte-wise (any alignment).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

_SECRET = np.array(
    [
        0xB8, 0xFE, 0x6C, 0x39, 0x23, 0xA4, 0x4B, 0xBE, 0x7C, 0x01, 0x81, 0x2C, 0xF7, 0x21, 0xAD, 0x1C,
        0xDE, 0xD4, 0x6D, 0xE9, 0x83, 0x90, 0x97, 0xDB, 0x72, 0x40, 0xA4, 0xA4, 0xB7, 0xB3, 0x67, 0x1F,
        0xCB, 0x79, 0xE6, 0x4E, 0xCC, 0xC0, 0xE5, 0x78, 0x82, 0x5A, 0xD0, 0x7D, 0xCC, 0xFF, 0x72, 0x21,
        0xB8, 0x08, 0x46, 0x74, 0xF7, 0x43, 0x24, 0x8E, 0xE0, 0x35, 0x90, 0xE6, 0x81, 0x3A, 0x26, 0x4C,
        0x3C, 0x28, 0x52, 0xBB, 0x91, 0xC3, 0x00, 0xCB, 0x88, 0xD0, 0x65, 0x8B, 0x1B, 0x53, 0x2E, 0xA3,
        0x71, 0x64, 0x48, 0x97, 0xA2, 0x0D, 0xF9, 0x4E, 0x38, 0x19, 0xEF, 0x46, 0xA9, 0xDE, 0xAC, 0xD8,
        0xA8, 0xFA, 0x76, 0x3F, 0xE3, 0x9C, 0x34, 0x3F, 0xF9, 0xDC, 0xBB, 0xC7, 0xC7, 0x0B, 0x4F, 0x1D,
        0x8A, 0x51, 0xE0, 0x4B, 0xCD, 0xB4, 0x59, 0x31, 0xC8, 0x9F, 0x7E, 0xC9, 0xD9, 0x78, 0x73, 0x64,
        0xEA, 0xC5, 0xAC, 0x83, 0x34, 0xD3, 0xEB, 0xC3, 0xC5, 0x81, 0xA0, 0xFF, 0xFA, 0x13, 0x63, 0xEB,
        0x17, 0x0D, 0xDD, 0x51, 0xB7, 0xF0, 0xDA, 0x49, 0xD3, 0x16, 0x55, 0x26, 0x29, 0xD4, 0x68, 0x9E,
        0x2B, 0x16, 0xBE, 0x58, 0x7D, 0x47, 0xA1, 0xFC, 0x8F, 0xF8, 0xB8, 0xD1, 0x7A, 0xD0, 0x31, 0xCE,
        0x45, 0xCB, 0x3A, 0x8F, 0x95, 0x16, 0x04, 0x28, 0xAF, 0xD7, 0xFB, 0xCA, 0xBB, 0x4B, 0x40, 0x7E,
    ],
    dtype=np.uint8,
)  # fmt: skip

P32_1 = uint64(0x9E3779B1)
P32_2 = uint64(0x85EBCA77)
P32_3 = uint64(0xC2B2AE3D)
P64_1 = uint64(0x9E3779B185EBCA87)
P64_2 = uint64(0xC2B2AE3D27D4EB4F)
P64_3 = uint64(0x165667B19E3779F9)
P64_4 = uint64(0x85EBCA77C2B2AE63)
P64_5 = uint64(0x27D4EB2F165667C5)
PMX1 = uint64(0x165667919E3779F9)
PMX2 = uint64(0x9FB21C651E98DF25)
M32 = uint64(0xFFFFFFFF)


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _r64(a, i):
    i = uint64(i)
    v = uint64(0)
    for k in range(8):
        v |= uint64(a[i + uint64(k)]) << uint64(8 * k)
    return v


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _r32(a, i):
    i = uint64(i)
    return (
        uint64(a[i])
        | (uint64(a[i + uint64(1)]) << uint64(8))
        | (uint64(a[i + uint64(2)]) << uint64(16))
        | (uint64(a[i + uint64(3)]) << uint64(24))
    )


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _mul128_fold64(a, b):
    a_lo, a_hi = a & M32, a >> uint64(32)
    b_lo, b_hi = b & M32, b >> uint64(32)
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    hi_hi = a_hi * b_hi
    cross = (lo_lo >> uint64(32)) + (hi_lo & M32) + lo_hi
    upper = (hi_lo >> uint64(32)) + (cross >> uint64(32)) + hi_hi
    lower = (cross << uint64(32)) | (lo_lo & M32)
    return lower ^ upper


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _avalanche(h):
    h ^= h >> uint64(37)
    h *= PMX1
    h ^= h >> uint64(32)
    return h


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _xxh64_avalanche(h):
    h ^= h >> uint64(33)
    h *= P64_2
    h ^= h >> uint64(29)
    h *= P64_3
    h ^= h >> uint64(32)
    return h


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _rotl(x, r):
    return (x << r) | (x >> (uint64(64) - r))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _swap32(x):
    return (
        ((x << uint64(24)) & uint64(0xFF000000))
        | ((x << uint64(8)) & uint64(0x00FF0000))
        | ((x >> uint64(8)) & uint64(0x0000FF00))
        | ((x >> uint64(24)) & uint64(0x000000FF))
    )


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _swap64(x):
    return (_swap32(x & M32) << uint64(32)) | _swap32(x >> uint64(32))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _mix16(data, i, sec, s, seed):
    lo = _r64(data, i)
    hi = _r64(data, uint64(i) + uint64(8))
    return _mul128_fold64(
        lo ^ (_r64(sec, s) + seed), hi ^ (_r64(sec, uint64(s) + uint64(8)) - seed)
    )


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _accumulate_512(acc, data, i, sec, s):
    for k in range(8):
        dv = _r64(data, uint64(i) + uint64(8 * k))
        dk = dv ^ _r64(sec, uint64(s) + uint64(8 * k))
        acc[k ^ 1] += dv
        acc[k] += (dk & M32) * (dk >> uint64(32))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _lane(a, dv, key):
    dk = dv ^ key
    return a + (dk & M32) * (dk >> uint64(32))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _acc8(a0, a1, a2, a3, a4, a5, a6, a7, d0, d1, d2, d3, d4, d5, d6, d7, secw, w):
    # acc[i ^ 1] += data[i]; acc[i] += lo32(data[i] ^ key[i]) * hi32(...); keys from word w
    n0 = _lane(a0, d0, secw[w]) + d1
    n1 = _lane(a1, d1, secw[w + uint64(1)]) + d0
    n2 = _lane(a2, d2, secw[w + uint64(2)]) + d3
    n3 = _lane(a3, d3, secw[w + uint64(3)]) + d2
    n4 = _lane(a4, d4, secw[w + uint64(4)]) + d5
    n5 = _lane(a5, d5, secw[w + uint64(5)]) + d4
    n6 = _lane(a6, d6, secw[w + uint64(6)]) + d7
    n7 = _lane(a7, d7, secw[w + uint64(7)]) + d6
    return n0, n1, n2, n3, n4, n5, n6, n7


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _scr(a, key):
    a ^= a >> uint64(47)
    a ^= key
    return a * P32_1


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _scramble8(a0, a1, a2, a3, a4, a5, a6, a7, secw):
    return (
        _scr(a0, secw[16]),
        _scr(a1, secw[17]),
        _scr(a2, secw[18]),
        _scr(a3, secw[19]),
        _scr(a4, secw[20]),
        _scr(a5, secw[21]),
        _scr(a6, secw[22]),
        _scr(a7, secw[23]),
    )


@njit(nogil=True, cache=True)
def xxh3_64(data, words, aligned, seed):  # pragma: no cover (compiled)
    """XXH3-64 of ``data`` (a uint8 array) with ``seed``. When ``aligned`` (a runtime bool, so
    one compiled body serves both paths), ``words`` views the same memory as uint64 from an
    8-byte aligned start and the long-input loop reads words; else ``words`` is unused."""
    return _xxh3_64_impl(data, words, aligned, seed)


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)
def _xxh3_64_impl(data, words, aligned, seed):
    seed = uint64(seed)
    n = uint64(data.size)
    sec = _SECRET
    if n <= uint64(16):
        if n > uint64(8):
            bf1 = (_r64(sec, uint64(24)) ^ _r64(sec, uint64(32))) + seed
            bf2 = (_r64(sec, uint64(40)) ^ _r64(sec, uint64(48))) - seed
            lo = _r64(data, uint64(0)) ^ bf1
            hi = _r64(data, n - uint64(8)) ^ bf2
            acc = n + _swap64(lo) + hi + _mul128_fold64(lo, hi)
            return _avalanche(acc)
        if n >= uint64(4):
            s2 = seed ^ (_swap32(seed & M32) << uint64(32))
            in1 = _r32(data, uint64(0))
            in2 = _r32(data, n - uint64(4))
            bf = (_r64(sec, uint64(8)) ^ _r64(sec, uint64(16))) - s2
            keyed = (in2 + (in1 << uint64(32))) ^ bf
            h = keyed ^ _rotl(keyed, uint64(49)) ^ _rotl(keyed, uint64(24))
            h *= PMX2
            h ^= (h >> uint64(35)) + n
            h *= PMX2
            h ^= h >> uint64(28)
            return h
        if n > uint64(0):
            c1 = uint64(data[0])
            c2 = uint64(data[n >> uint64(1)])
            c3 = uint64(data[n - uint64(1)])
            combined = (c1 << uint64(16)) | (c2 << uint64(24)) | c3 | (n << uint64(8))
            bf = ((_r32(sec, uint64(0)) ^ _r32(sec, uint64(4))) & M32) + seed
            return _xxh64_avalanche(combined ^ bf)
        return _xxh64_avalanche(seed ^ (_r64(sec, uint64(56)) ^ _r64(sec, uint64(64))))
    if n <= uint64(128):
        acc = n * P64_1
        if n > uint64(32):
            if n > uint64(64):
                if n > uint64(96):
                    acc += _mix16(data, uint64(48), sec, uint64(96), seed)
                    acc += _mix16(data, n - uint64(64), sec, uint64(112), seed)
                acc += _mix16(data, uint64(32), sec, uint64(64), seed)
                acc += _mix16(data, n - uint64(48), sec, uint64(80), seed)
            acc += _mix16(data, uint64(16), sec, uint64(32), seed)
            acc += _mix16(data, n - uint64(32), sec, uint64(48), seed)
        acc += _mix16(data, uint64(0), sec, uint64(0), seed)
        acc += _mix16(data, n - uint64(16), sec, uint64(16), seed)
        return _avalanche(acc)
    if n <= uint64(240):
        acc = n * P64_1
        rounds = n // uint64(16)
        for i in range(8):
            acc += _mix16(data, uint64(16 * i), sec, uint64(16 * i), seed)
        acc = _avalanche(acc)
        for i in range(8, rounds):
            acc += _mix16(data, uint64(16 * i), sec, uint64(16 * (i - 8) + 3), seed)
        acc += _mix16(data, n - uint64(16), sec, uint64(136 - 17), seed)
        return _avalanche(acc)
    # long input: derive the secret from the seed, then stripes of 64 bytes in blocks of 1024
    if seed != uint64(0):
        custom = np.empty(192, np.uint8)
        for i in range(12):
            lo = _r64(sec, 16 * i) + seed
            hi = _r64(sec, 16 * i + 8) - seed
            for k in range(8):
                custom[16 * i + k] = (lo >> uint64(8 * k)) & uint64(0xFF)
                custom[16 * i + 8 + k] = (hi >> uint64(8 * k)) & uint64(0xFF)
        sec = custom
    # The secret as words (its offsets below are multiples of 8) and eight accumulators in locals
    # (registers) rather than an array: together about 3x faster than byte-wise reads.
    secw = np.empty(24, np.uint64)
    for i in range(24):
        secw[i] = _r64(sec, 8 * i)
    a0, a1, a2, a3, a4, a5, a6, a7 = P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1
    block = uint64(1024)
    nb = (n - uint64(1)) // block
    for b in range(nb):
        base = uint64(b) * block
        for s in range(16):
            p = base + uint64(64 * s)
            if aligned:
                w = p >> uint64(3)
                d0 = words[w]
                d1 = words[w + uint64(1)]
                d2 = words[w + uint64(2)]
                d3 = words[w + uint64(3)]
                d4 = words[w + uint64(4)]
                d5 = words[w + uint64(5)]
                d6 = words[w + uint64(6)]
                d7 = words[w + uint64(7)]
            else:
                d0 = _r64(data, p)
                d1 = _r64(data, p + uint64(8))
                d2 = _r64(data, p + uint64(16))
                d3 = _r64(data, p + uint64(24))
                d4 = _r64(data, p + uint64(32))
                d5 = _r64(data, p + uint64(40))
                d6 = _r64(data, p + uint64(48))
                d7 = _r64(data, p + uint64(56))
            a0, a1, a2, a3, a4, a5, a6, a7 = _acc8(
                a0, a1, a2, a3, a4, a5, a6, a7, d0, d1, d2, d3, d4, d5, d6, d7, secw, uint64(s)
            )
        a0, a1, a2, a3, a4, a5, a6, a7 = _scramble8(a0, a1, a2, a3, a4, a5, a6, a7, secw)
    acc = np.empty(8, np.uint64)
    acc[0], acc[1], acc[2], acc[3] = a0, a1, a2, a3
    acc[4], acc[5], acc[6], acc[7] = a4, a5, a6, a7
    base = nb * block
    stripes = ((n - uint64(1)) - base) // uint64(64)
    for s in range(stripes):
        _accumulate_512(acc, data, base + uint64(64) * uint64(s), sec, uint64(8 * s))
    _accumulate_512(acc, data, n - uint64(64), sec, uint64(192 - 64 - 7))
    result = n * P64_1
    for i in range(4):
        result += _mul128_fold64(
            acc[2 * i] ^ _r64(sec, 11 + 16 * i), acc[2 * i + 1] ^ _r64(sec, 11 + 16 * i + 8)
        )
    return _avalanche(result)
