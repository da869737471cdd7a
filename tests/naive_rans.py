"""Textbook rANS on Python ints, one symbol at a time: the reference for the rans kernels.

Same payload formats as ``zipmodel.codecs.rans`` (see its docstring), written from the spec:
a division per symbol, a linear search for the decoded symbol, no tables, no unrolling.
"""

from __future__ import annotations

import itertools
import math
import struct

L = 1 << 16
STATES = 8
CTX_SCALE = 13


def normalize(hist, prob_bits: int) -> list[int]:
    """Frequencies summing to 2**prob_bits minimising sum(-h log2 f/2**P), each present f >= 1.

    Rounded proportional start; fix the sum one unit at a time (cheapest decrement / best
    increment, lowest symbol on ties); then swap units while that saves bits.
    """
    hist = [int(h) for h in hist]
    m, n = 1 << prob_bits, sum(hist)

    def step(h, f):  # bits saved when f -> f + 1
        return h * (math.log2(f + 1) - math.log2(f))

    freq = [max(1, (2 * h * m + n) // (2 * n)) if h else 0 for h in hist]
    present = [s for s, h in enumerate(hist) if h]

    def best_up():
        return max(present, key=lambda s: (step(hist[s], freq[s]), -s))

    def best_down():
        down = [s for s in present if freq[s] > 1]
        return min(down, key=lambda s: (step(hist[s], freq[s] - 1), s))

    while sum(freq) > m:
        freq[best_down()] -= 1
    while sum(freq) < m:
        freq[best_up()] += 1
    while True:
        up, down = best_up(), best_down()
        if step(hist[up], freq[up]) <= step(hist[down], freq[down] - 1):
            return freq
        freq[up] += 1
        freq[down] -= 1


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 128:
        out.append(v & 127 | 128)
        v >>= 7
    return bytes(out) + bytes([v])


def _read_varint(b: bytes, p: int, max_bytes: int = 3) -> tuple[int, int]:
    v = 0
    for k in range(max_bytes):
        if p >= len(b):
            raise ValueError("truncated varint")
        v |= (b[p] & 127) << (7 * k)
        p += 1
        if b[p - 1] < 128:
            return v, p
    raise ValueError("varint too long")


def _coder(data, tables_of):
    """Encode back to front; tables_of(i) -> (f, cum, raw low bits, their count, scale bits)."""
    x = [L] * STATES
    words = []
    for i in reversed(range(len(data))):
        f, cum, slot_low, low_bits, scale = tables_of(i)
        j = i % STATES
        x_max = ((L >> scale) << 16) * f
        if x[j] >= x_max:
            words.append(x[j] & 0xFFFF)
            x[j] >>= 16
        # x -> slots (x // f) * 2**S + ((cum + x % f) << low_bits) + slot_low
        x[j] = ((x[j] // f) << scale) + ((cum + x[j] % f) << low_bits) + slot_low
    return struct.pack("<8I", *x) + struct.pack(f"<{len(words)}H", *reversed(words))


def encode(data: bytes, freq: list[int], prob_bits: int) -> bytes:
    cum = [sum(freq[:s]) for s in range(256)]
    head = bytes([prob_bits]) + bytes(
        sum(1 << b for b in range(8) if freq[8 * k + b]) for k in range(32)
    )
    head += b"".join(_varint(f - 1) for f in freq if f)
    return head + _coder(data, lambda i: (freq[data[i]], cum[data[i]], 0, 0, prob_bits))


def _run_decoder(body: bytes, n: int, step) -> bytes:
    if len(body) < 4 * STATES or len(body) % 2:
        raise ValueError("bad stream length")
    x = list(struct.unpack_from("<8I", body))
    if min(x) < L:
        raise ValueError("state out of range")
    words = struct.unpack_from(f"<{(len(body) - 32) // 2}H", body, 32)
    p, out = 0, bytearray()
    for i in range(n):
        j = i % STATES
        sym, x[j] = step(i, x[j])
        out.append(sym)
        if x[j] < L:
            if p == len(words):
                raise ValueError("stream too short")
            x[j] = (x[j] << 16) | words[p]
            p += 1
    if p != len(words) or x != [L] * STATES:
        raise ValueError("does not end in the initial state")
    return bytes(out)


def _read_freqs(b: bytes, p: int, count: int, m: int, minimum: int) -> tuple[list[int], int]:
    freq = []
    for _ in range(count):
        v, p = _read_varint(b, p)
        freq.append(v + minimum)
    if sum(freq) != m:
        raise ValueError("frequencies do not sum to 2**P")
    return freq, p


def _find(freq: list[int], u: int) -> tuple[int, int]:
    """The symbol whose interval holds u, and that interval's start."""
    cum = 0
    for s, f in enumerate(freq):
        if cum <= u < cum + f:
            return s, cum
        cum += f
    raise AssertionError("frequencies sum to 2**P")


def decode(payload: bytes, n: int) -> bytes:
    """Decode a ``rans`` payload; ValueError if it is not valid."""
    if len(payload) < 33 or not 8 <= payload[0] <= 14:
        raise ValueError("bad header")
    prob_bits = payload[0]
    syms = [s for s in range(256) if payload[1 + s // 8] >> (s % 8) & 1]
    f_list, p = _read_freqs(payload, 33, len(syms), 1 << prob_bits, 1)
    freq = [0] * 256
    for s, f in zip(syms, f_list):
        freq[s] = f

    def step(i, x):
        slot = x % (1 << prob_bits)
        s, cum = _find(freq, slot)
        return s, freq[s] * (x >> prob_bits) + slot - cum

    return _run_decoder(payload[p:], n, step)


def ctx_encode(data: bytes, ctx: bytes, k: int, own: list[int], freqs: list[list[int]]) -> bytes:
    """``freqs[0]``: the shared table, ``freqs[1 + r]``: the table of context ``own[r]``."""
    low_bits = 8 - k
    table = {c: r + 1 for r, c in enumerate(own)}
    cums = [[sum(f[:h]) for h in range(len(f))] for f in freqs]
    head = bytes([k, len(own), *own]) + b"".join(_varint(v) for f in freqs for v in f)

    def tables_of(i):
        t, h = table.get(ctx[i], 0), data[i] >> low_bits
        return freqs[t][h], cums[t][h], data[i] & ((1 << low_bits) - 1), low_bits, CTX_SCALE

    return head + _coder(data, tables_of)


def ctx_decode(payload: bytes, ctx: bytes) -> bytes:
    """Decode a ``rans-ctx`` payload with its context bytes; ValueError if it is not valid."""
    if len(payload) < 2 or not 1 <= payload[0] <= 4:
        raise ValueError("bad header")
    k, t_own = payload[0], payload[1]
    own = list(payload[2 : 2 + t_own])
    if len(own) != t_own or any(a >= b for a, b in itertools.pairwise(own)):
        raise ValueError("bad context list")
    low_bits, p = 8 - k, 2 + t_own
    freqs = []
    for _ in range(t_own + 1):
        f, p = _read_freqs(payload, p, 1 << k, 1 << (CTX_SCALE - low_bits), 0)
        freqs.append(f)
    table = {c: r + 1 for r, c in enumerate(own)}

    def step(i, x):
        slot = x % (1 << CTX_SCALE)
        freq = freqs[table.get(ctx[i], 0)]
        h, cum = _find(freq, slot >> low_bits)
        sym = (h << low_bits) | (slot & ((1 << low_bits) - 1))
        return sym, freq[h] * (x >> CTX_SCALE) + (slot >> low_bits) - cum

    return _run_decoder(payload[p:], len(ctx), step)


def entropy_bits(data: bytes) -> float:
    """Order-0 entropy of ``data`` in bits (total)."""
    counts = [0] * 256
    for b in data:
        counts[b] += 1
    n = len(data)
    return sum(c * math.log2(n / c) for c in counts if c)
