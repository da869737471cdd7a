"""``rans-2d`` (id 6): rANS whose table depends on the (row class, column class) of a symbol.

Weights have per-row (output channel) and per-column (input channel) scales, so the exponent
of a weight depends on where it sits in its matrix. The encoder gets the chunk's position in
its tensor, ``layout = (row_len, first_col)``: symbol ``i`` sits in row
``(first_col + i) // row_len`` and column ``(first_col + i) % row_len`` (a chunk starts at any
element, so its first and last rows may be partial). It sorts the rows into Kr classes and the
columns into Kc classes (nested 2-means over their symbol histograms), codes each symbol with
the table of context ``row class * Kc + column class``, and sends the class maps and the
tables in the payload. It tries every Kr in {1, 2, 4, 8} and Kc in {1, ..., 64} with
Kr * Kc <= 64 on counts, codes only the best, and returns None when none beats order-0
``rans`` (or the layout does not allow one: rows under 32 elements get no row classes,
columns with under 32 samples on average no column classes).

Bitstream: as ``rans`` (see :mod:`zipmodel.codecs.rans`): eight states, symbol ``i`` uses
``x[i % 8]``; ``x = f * (x >> P) + slot - cum``, refilled with u16 words read front to back
while ``x < 2**16``; all words read and every state back at ``2**16`` at the end.

Payload (little-endian)::

    u8      P          probability bits, 8 <= P <= 12 (this encoder: 10, 11 or 12, with
                       Kr * Kc * 2**P <= 2**16: decode tables of at most 256 KiB)
    u8      shape      lkr << 4 | lkc: Kr = 2**lkr, Kc = 2**lkc; lkr <= 3, lkc <= 6,
                       1 <= lkr + lkc <= 6
    varint  row_len R  2 <= R < 2**56; R <= n (the symbol count) when lkc > 0
    varint  first_col  F < R
    32 B    present    bit (s & 7) of byte (s >> 3) is set iff symbol s has a frequency
                       somewhere; at least 2 symbols
    bits    (LSB first in each byte, from the byte after ``present``)
            row classes     ceil((F + n) / R) values of lkr bits (none when lkr = 0)
            column classes  R values of lkc bits, column 0 first (none when lkc = 0)
            tables          for t = 0 .. Kr*Kc - 1, for each present s in increasing order:
                            b = bit length of f[t][s] (0 for f = 0) as
                            gamma(zigzag(b - b_prev) + 1), b_prev the previous entry's of
                            this table (0 for the first), then the b - 1 bits of f below its
                            leading one; every table sums to 2**P, every f < 2**P
            padding         zero bits to the next byte boundary
    u32[8]  x[0..7]    the initial decoder states
    u16[]   words      the rest of the payload (an even number of bytes)

    step: t = rowcls[row] * Kc + colcls[col]; slot = x mod 2**P; s is the present symbol
          with cum[t][s] <= slot < cum[t][s] + f[t][s]; emit s.

``gamma(v)``, v >= 1 with g bits: g - 1 zero bits, a one bit, then the g - 1 low bits of v;
``zigzag(d)`` = 2d for d >= 0, -2d - 1 below; bit fields are written least significant bit
first. A varint is LEB128 (at most 8 bytes). Bit lengths of neighbouring symbols' frequencies
are close (exponent histograms are smooth), so a table entry costs about 2 bits plus its
mantissa: 25-30 % less than gamma-coding the frequencies themselves on real tables.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CorruptDataError
from .base import Codec
from .rans import _decode_into, _input, _scratch, _source

__all__ = ["Rans2DCodec"]

_STATES = 8


def _kernels():
    from .. import _jit

    return _jit.kernels("rans2d")  # numba: imported on first use only


def _check(code: int) -> None:
    if code == 0:
        return
    k = _kernels()
    why = {
        k.E_HEADER: "header is truncated or has an invalid parameter",
        k.E_TABLE: "frequency table is invalid",
        k.E_MAP: "row length, first column or class maps are invalid",
        k.E_STATE: "an initial state is out of range",
        k.E_ODD: "word stream has an odd number of bytes",
        k.E_SHORT: "word stream ends before the last symbol",
        k.E_FINAL: "stream does not end in the initial state",
    }.get(code, f"error {code}")
    raise CorruptDataError(f"rans-2d payload is corrupt: {why}")


class Rans2DCodec(Codec):
    """rANS with one table per (row class, column class) of a matrix-shaped stream."""

    codec_id = 6
    name = "rans-2d"
    compiled = True
    uses_layout = True
    PROB_BITS = (10, 11, 12)  # P tried (contexts x 2**P <= 2**16); the smallest payload wins
    ITERS = 16  # at most this many 2-means rounds per split of a class
    SETTLE = 128  # a split also stops once at most 1/SETTLE of its members move (0: off)

    def plan(self, data: np.ndarray, layout: tuple[int, int]):
        """The encoder's choice: (lkr, lkc, rowcls, colcls, present, counts, est, est0).

        ``lkr + lkc == 0`` when no candidate applies; ``counts[t * u + d]``: the count of
        present[d] in context t; est, est0: estimated payload bits of rans-2d and of rans.
        """
        k = _kernels()
        data = _input(data, "data")
        row_len, first_col = (int(v) for v in layout)
        if not 0 <= first_col < row_len:
            raise ValueError(f"first_col {first_col} is outside 0..{row_len - 1}")
        present, dsym, est0, use_r, use_c, m, rh, ch, value = k._prepare(data, row_len, first_col)
        empty = np.zeros(0, np.uint8)
        if not (use_r or use_c):
            return 0, 0, empty, empty, present, np.zeros(0, np.int64), math.inf, est0
        nrows = (first_col + data.size + row_len - 1) // row_len
        rleaf = np.zeros(nrows, np.uint8)
        cleaf = np.zeros(row_len if use_c else 0, np.uint8)
        if use_r:
            k._cluster(rh, m, value, k.MAX_LKR, self.ITERS, self.SETTLE, rleaf)
        if use_c:
            k._cluster(ch, m, value, k.MAX_LKC, self.ITERS, self.SETTLE, cleaf)
        lkr, lkc, rowcls, colcls, counts, bits = k._choose(
            data, row_len, first_col, rleaf, cleaf, use_r, use_c, dsym, present.size,
            min(self.PROB_BITS),
        )  # fmt: skip
        if lkr + lkc == 0:
            return 0, 0, empty, empty, present, np.zeros(0, np.int64), math.inf, est0
        head = 2 + k._varint_size(row_len) + k._varint_size(first_col) + 32 + 4 * _STATES
        return lkr, lkc, rowcls, colcls, present, counts, bits + 8 * head + 7, est0

    def encode(self, data: np.ndarray, layout: tuple[int, int] | None = None) -> bytes | None:
        data = _input(data, "data")
        if layout is None or data.size == 0:
            return None
        row_len, first_col = (int(v) for v in layout)
        if row_len < 2 or row_len >= _kernels().MAX_ROW_LEN or data.size >= 1 << 31:
            return None  # (the search counts in int32)
        lkr, lkc, rowcls, colcls, present, counts, est, est0 = self.plan(data, layout)
        if lkr + lkc == 0 or est >= est0:
            return None
        return self._encode(data, row_len, first_col, lkr, lkc, rowcls, colcls, present, counts)

    def _encode(
        self, data, row_len, first_col, lkr, lkc, rowcls, colcls, present, counts, prob_bits=None
    ) -> bytes:
        """Code ``data`` with the given classes (uint8 maps); ``counts[t * u + d]``: the count
        of present[d] (increasing symbols) in context t, which shapes the tables; every symbol
        of ``data`` must have a count in its context. ``prob_bits``: else the cheaper of
        PROB_BITS."""
        k = _kernels()
        u = present.size
        nctx = 1 << (lkr + lkc)
        n = data.size
        nrows = (first_col + n + row_len - 1) // row_len
        if u < 2 or counts.size != u * nctx:
            raise ValueError(f"need >= 2 symbols and {nctx} x {u} counts, got {counts.size}")
        if lkr + lkc == 0 or lkr > k.MAX_LKR or lkc > k.MAX_LKC or lkr + lkc > k.MAX_LCTX:
            raise ValueError(f"no such class counts: 2**{lkr} x 2**{lkc}")
        if (lkr and rowcls.size < nrows) or (lkc and (colcls.size < row_len or row_len > n)):
            raise ValueError("class maps too short (or column classes with row_len > n)")
        best = None
        lo = min(self.PROB_BITS)
        candidates = [p for p in range(k.FALLBACK_BITS, 13) if k._prob_bits_ok(nctx, p, lo)]
        for p in candidates if prob_bits is None else (prob_bits,):
            freqs = np.zeros(nctx * u, np.int64)
            code, tbits = k._tables(counts, u, nctx, p, freqs)
            if best is None or code + tbits < best[0]:
                best = (code + tbits, p, freqs)
        _, p, freqs = best
        head = 2 + 16 + 32 + (k._header_bits(nrows, row_len, lkr, lkc, freqs, u) + 7) // 8
        buf = _scratch("r2d_enc", 2 * n + 2 + 4 * _STATES + head, np.uint8)
        ctx = _scratch("r2d_ctx", n, np.uint8)
        etab = _scratch("r2d_etab", 4 * 256 * k.MAX_CTX, np.uint64)
        start = k._encode(
            data, row_len, first_col, p, lkr, lkc, rowcls, colcls, present, freqs, buf, ctx, etab
        )
        return buf[start:].tobytes()

    def decode(self, payload: memoryview, out: np.ndarray) -> None:
        k = _kernels()
        src = _source(payload)
        dtab = _scratch("r2d_dtab", k.MAX_CTX << k.MAX_PROB_BITS, np.uint32)
        ctx = _scratch("r2d_ctx", out.size, np.uint8)
        st = _scratch("r2d_st", _STATES, np.uint64)
        _decode_into(out, lambda o: _check(k._decode(src, o, dtab, ctx, st)))

    def estimate(self, hist: np.ndarray, n: int) -> float | None:
        return None  # depends on the layout: the chooser tries it
