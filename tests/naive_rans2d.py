"""Textbook rans-2d on Python ints: the reference for the rans-2d kernels.

Same payload format as ``zipmodel.codecs.rans2d`` (see its docstring), written from the spec:
one symbol at a time, a division per symbol, a linear search for the decoded symbol, the
context of every symbol computed from its row and column.
"""

from __future__ import annotations

import math

from naive_rans import _coder, _read_varint, _run_decoder, _varint, normalize


def contexts(n: int, row_len: int, first_col: int, rowcls, colcls, lkr: int, lkc: int):
    """The context of each of the n symbols."""
    out = []
    for i in range(n):
        row, col = divmod(first_col + i, row_len)
        out.append(((rowcls[row] if lkr else 0) << lkc) | (colcls[col] if lkc else 0))
    return out


def tables(counts, prob_bits: int) -> list[list[int]]:
    """Normalised frequency table (256 entries) of each context's counts (256 entries each);
    every table gets at least two symbols: 2**P - 1 and 1 when a context has one symbol (the
    other: the lowest present symbol of the union other than it), (2**P - 1, 1) on the two
    lowest present symbols when it has none."""
    m = 1 << prob_bits
    union = [s for s in range(256) if any(c[s] for c in counts)]
    out = []
    for c in counts:
        have = [s for s in range(256) if c[s]]
        f = [0] * 256
        if not have:
            f[union[0]], f[union[1]] = m - 1, 1
        elif len(have) == 1:
            f[have[0]] = m - 1
            f[union[1] if have[0] == union[0] else union[0]] = 1
        else:
            f = normalize(c, prob_bits)
        out.append(f)
    return out


def _zigzag(d: int) -> int:
    return 2 * d if d >= 0 else -2 * d - 1


def cost_bits(counts, freqs, prob_bits: int) -> float:
    """Code bits under the tables plus the coded tables' bits."""
    union = [s for s in range(256) if any(f[s] for f in freqs)]
    code = sum(
        c[s] * (prob_bits - math.log2(f[s])) for c, f in zip(counts, freqs) for s in union if c[s]
    )
    w = BitWriter()
    for f in freqs:
        w.table([f[s] for s in union])
    return code + len(w.bits)


class BitWriter:
    def __init__(self):
        self.bits: list[int] = []

    def put(self, v: int, nb: int) -> None:
        self.bits += [(v >> k) & 1 for k in range(nb)]

    def gamma(self, v: int) -> None:
        b = v.bit_length()
        self.put(0, b - 1)
        self.put(1, 1)
        self.put(v, b - 1)

    def table(self, freqs) -> None:
        """Bit lengths as zigzag deltas (gamma-coded), then the bits below each leading one."""
        prev = 0
        for f in freqs:
            b = f.bit_length()
            self.gamma(_zigzag(b - prev) + 1)
            self.put(f, max(b - 1, 0))
            prev = b

    def tobytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(sum(bits[i + k] << k for k in range(8)) for i in range(0, len(bits), 8))


class BitReader:
    def __init__(self, b: bytes, p: int):
        self.b, self.pos = b, 8 * p

    def get(self, nb: int) -> int:
        if self.pos + nb > 8 * len(self.b):
            raise ValueError("bits run past the payload")
        v = sum(((self.b[(self.pos + k) >> 3] >> ((self.pos + k) & 7)) & 1) << k for k in range(nb))
        self.pos += nb
        return v

    def gamma(self, max_zeros: int) -> int:
        z = 0
        while self.get(1) == 0:
            z += 1
            if z > max_zeros:
                raise ValueError("gamma code too long")
        return (1 << z) | self.get(z)

    def table(self, count: int, prob_bits: int) -> list[int]:
        freqs, prev = [], 0
        for _ in range(count):
            z = self.gamma(4) - 1
            b = prev + (z // 2 if z % 2 == 0 else -(z + 1) // 2)
            if not 0 <= b <= prob_bits:
                raise ValueError("bit length out of range")
            freqs.append((1 << (b - 1)) | self.get(b - 1) if b else 0)
            prev = b
        return freqs


def encode(data: bytes, row_len, first_col, prob_bits, lkr, lkc, rowcls, colcls, freqs) -> bytes:
    """``freqs[t]``: the 256 frequencies of context t (t = row class << lkc | column class)."""
    n = len(data)
    present = [s for s in range(256) if any(f[s] for f in freqs)]
    head = bytes([prob_bits, lkr << 4 | lkc]) + _varint(row_len) + _varint(first_col)
    head += bytes(sum(1 << b for b in range(8) if 8 * k + b in present) for k in range(32))
    w = BitWriter()
    nrows = -(-(first_col + n) // row_len)
    for r in range(nrows if lkr else 0):
        w.put(rowcls[r], lkr)
    for c in range(row_len if lkc else 0):
        w.put(colcls[c], lkc)
    for f in freqs:
        w.table([f[s] for s in present])
    head += w.tobytes()
    ctx = contexts(n, row_len, first_col, rowcls, colcls, lkr, lkc)
    cums = [[sum(f[:s]) for s in range(256)] for f in freqs]

    def tables_of(i):
        t, s = ctx[i], data[i]
        return freqs[t][s], cums[t][s], 0, 0, prob_bits

    return head + _coder(data, tables_of)


def read_header(payload: bytes, n: int):
    """(P, lkr, lkc, row_len, first_col, rowcls, colcls, freqs, position of the states)."""
    if len(payload) < 2:
        raise ValueError("bad header")
    prob_bits, lkr, lkc = payload[0], payload[1] >> 4, payload[1] & 15
    if not 8 <= prob_bits <= 12 or lkr > 3 or lkc > 6 or not 1 <= lkr + lkc <= 6:
        raise ValueError("bad header")
    row_len, p = _read_varint(payload, 2, 8)
    first_col, p = _read_varint(payload, p, 8)
    if row_len < 2 or first_col >= row_len or (lkc and row_len > n):
        raise ValueError("bad layout")
    if len(payload) < p + 32:
        raise ValueError("truncated bitmap")
    present = [s for s in range(256) if payload[p + s // 8] >> (s % 8) & 1]
    if len(present) < 2:
        raise ValueError("fewer than two symbols")
    rd = BitReader(payload, p + 32)
    nrows = -(-(first_col + n) // row_len)
    rowcls = [rd.get(lkr) for _ in range(nrows if lkr else 0)]
    colcls = [rd.get(lkc) for _ in range(row_len if lkc else 0)]
    m = 1 << prob_bits
    freqs = []
    for _ in range(1 << (lkr + lkc)):
        f = [0] * 256
        for s, v in zip(present, rd.table(len(present), prob_bits)):
            f[s] = v
            if f[s] >= m:
                raise ValueError("frequency out of range")
        if sum(f) != m:
            raise ValueError("frequencies do not sum to 2**P")
        freqs.append(f)
    while rd.pos % 8:
        if rd.get(1):
            raise ValueError("nonzero padding")
    return prob_bits, lkr, lkc, row_len, first_col, rowcls, colcls, freqs, rd.pos // 8


def decode(payload: bytes, n: int) -> bytes:
    """Decode a rans-2d payload of n symbols; ValueError if it is not valid."""
    prob_bits, lkr, lkc, row_len, first_col, rowcls, colcls, freqs, p = read_header(payload, n)
    m = 1 << prob_bits
    ctx = contexts(n, row_len, first_col, rowcls, colcls, lkr, lkc)

    def step(i, x):
        f = freqs[ctx[i]]
        slot = x % m
        cum = 0
        for s in range(256):
            if cum <= slot < cum + f[s]:
                return s, f[s] * (x >> prob_bits) + slot - cum
            cum += f[s]
        raise AssertionError("frequencies sum to 2**P")

    return _run_decoder(payload[p:], n, step)
