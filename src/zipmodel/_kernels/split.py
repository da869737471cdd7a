"""Kernels of the float field split and of byte histograms (see zipmodel.stages.split).

Byte-wise loads and stores, so any alignment works (tensor data may start at an odd offset);
LLVM vectorises these loops. Indices are cast to uint64: Numba emits wrap-around checks for
signed indices in hot loops.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint8, uint32, uint64


@njit(nogil=True, cache=True)
def _hist(data):  # pragma: no cover (compiled)
    """Byte histogram; four sub-histograms break the store-to-load dependency on repeats."""
    h0 = np.zeros(256, np.uint32)
    h1 = np.zeros(256, np.uint32)
    h2 = np.zeros(256, np.uint32)
    h3 = np.zeros(256, np.uint32)
    n = uint64(data.size)
    m = n - n % uint64(4)
    i = uint64(0)
    while i < m:
        h0[data[i]] += uint32(1)
        h1[data[i + uint64(1)]] += uint32(1)
        h2[data[i + uint64(2)]] += uint32(1)
        h3[data[i + uint64(3)]] += uint32(1)
        i += uint64(4)
    while i < n:
        h0[data[i]] += uint32(1)
        i += uint64(1)
    out = np.empty(256, np.int64)
    for k in range(256):
        out[k] = np.int64(h0[k]) + np.int64(h1[k]) + np.int64(h2[k]) + np.int64(h3[k])
    return out


@njit(nogil=True, cache=True)
def _entropy_bytes(hist):  # pragma: no cover (compiled)
    """Order-0 entropy of a byte histogram, in bytes (the chooser calls this per stream)."""
    n = 0.0
    for k in range(hist.size):
        n += hist[k]
    if n == 0.0:
        return 0.0
    bits = 0.0
    for k in range(hist.size):
        c = float(hist[k])
        if c > 0.0:
            bits -= c * np.log2(c / n)
    return bits / 8.0


@njit(nogil=True, cache=True)
def _split_bf16(raw, exp, sm):  # pragma: no cover
    for i in range(exp.size):
        j = uint64(i)
        lo = uint32(raw[j + j])
        hi = uint32(raw[j + j + uint64(1)])
        exp[j] = uint8(((hi << uint32(1)) | (lo >> uint32(7))) & uint32(0xFF))
        sm[j] = uint8(((lo << uint32(1)) | (hi >> uint32(7))) & uint32(0xFF))


@njit(nogil=True, cache=True)
def _merge_bf16(exp, sm, out):  # pragma: no cover
    for i in range(exp.size):
        j = uint64(i)
        e = uint32(exp[j])
        s = uint32(sm[j])
        out[j + j + uint64(1)] = uint8(((s << uint32(7)) | (e >> uint32(1))) & uint32(0xFF))
        out[j + j] = uint8((((e & uint32(1)) << uint32(7)) | (s >> uint32(1))) & uint32(0xFF))


@njit(nogil=True, cache=True)
def _split_f16(raw, hi, lo):  # pragma: no cover
    for i in range(hi.size):
        j = uint64(i)
        lo[j] = raw[j + j]
        hi[j] = raw[j + j + uint64(1)]


@njit(nogil=True, cache=True)
def _merge_f16(hi, lo, out):  # pragma: no cover
    for i in range(hi.size):
        j = uint64(i)
        out[j + j] = lo[j]
        out[j + j + uint64(1)] = hi[j]


@njit(nogil=True, cache=True)
def _split_f32(raw, s0, s1, s2, s3):  # pragma: no cover
    for i in range(s0.size):
        j = uint64(4) * uint64(i)
        w = (
            uint32(raw[j])
            | (uint32(raw[j + uint64(1)]) << uint32(8))
            | (uint32(raw[j + uint64(2)]) << uint32(16))
            | (uint32(raw[j + uint64(3)]) << uint32(24))
        )
        r = (w << uint32(1)) | (w >> uint32(31))
        k = uint64(i)
        s0[k] = uint8(r >> uint32(24))
        s1[k] = uint8((r >> uint32(16)) & uint32(0xFF))
        s2[k] = uint8((r >> uint32(8)) & uint32(0xFF))
        s3[k] = uint8(r & uint32(0xFF))


@njit(nogil=True, cache=True)
def _merge_f32(s0, s1, s2, s3, out):  # pragma: no cover
    for i in range(s0.size):
        k = uint64(i)
        r = (
            (uint32(s0[k]) << uint32(24))
            | (uint32(s1[k]) << uint32(16))
            | (uint32(s2[k]) << uint32(8))
            | uint32(s3[k])
        )
        w = (r >> uint32(1)) | (r << uint32(31))
        j = uint64(4) * k
        out[j] = uint8(w & uint32(0xFF))
        out[j + uint64(1)] = uint8((w >> uint32(8)) & uint32(0xFF))
        out[j + uint64(2)] = uint8((w >> uint32(16)) & uint32(0xFF))
        out[j + uint64(3)] = uint8(w >> uint32(24))


@njit(nogil=True, cache=True)
def _split_f32_words(raw, s0, s1, s2, s3):  # pragma: no cover
    """``_split_f32`` over a uint32 view (4-byte aligned, little-endian): LLVM vectorises the
    word loads, about 4x the byte version."""
    for i in range(s0.size):
        k = uint64(i)
        w = raw[k]
        r = (w << uint32(1)) | (w >> uint32(31))
        s0[k] = uint8(r >> uint32(24))
        s1[k] = uint8((r >> uint32(16)) & uint32(0xFF))
        s2[k] = uint8((r >> uint32(8)) & uint32(0xFF))
        s3[k] = uint8(r & uint32(0xFF))


@njit(nogil=True, cache=True)
def _merge_f32_words(s0, s1, s2, s3, out):  # pragma: no cover
    """``_merge_f32`` into a uint32 view (4-byte aligned, little-endian): about 4x faster."""
    for i in range(s0.size):
        k = uint64(i)
        r = (
            (uint32(s0[k]) << uint32(24))
            | (uint32(s1[k]) << uint32(16))
            | (uint32(s2[k]) << uint32(8))
            | uint32(s3[k])
        )
        out[k] = (r >> uint32(1)) | (r << uint32(31))
