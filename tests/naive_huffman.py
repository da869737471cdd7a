"""Slow, obviously correct reference of the ``huffman`` codec (format: zipmodel.codecs.huffman).

Code lengths by textbook package-merge on explicit lists of symbol multisets, canonical codes
as in DEFLATE (RFC 1951 §3.2.2), bitstreams as strings of '0'/'1', decoding one bit at a time
against a dictionary of codes. ``decode`` applies every rule of the format and raises
``ValueError`` where a payload breaks one.
"""

from __future__ import annotations

import heapq
import struct
from collections import Counter

MAX_BITS = 12
VERSION = 1


def huffman_cost(counts: dict[int, int]) -> int:
    """Total bits of an (unlimited) Huffman code for ``counts``: the sum of all merge weights."""
    heap = list(counts.values())
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, a + b)
    return total


def package_merge(counts: dict[int, int], max_bits: int = MAX_BITS) -> dict[int, int]:
    """Optimal code lengths of at most ``max_bits`` bits for the symbols of ``counts``.

    Items are (weight, kind, symbols): kind 0 for a leaf, 1 for a package, so a stable sort
    puts a leaf before a package of equal weight; leaves are ordered by (count, symbol).
    """
    leaves = [(c, 0, [s]) for s, c in sorted(counts.items(), key=lambda t: (t[1], t[0]))]
    n = len(leaves)
    assert 2 <= n <= 2**max_bits
    items = leaves
    for _ in range(max_bits - 1):
        packages = [
            (items[i][0] + items[i + 1][0], 1, items[i][2] + items[i + 1][2])
            for i in range(0, len(items) - 1, 2)
        ]
        items = sorted(leaves + packages, key=lambda t: (t[0], t[1]))
    return dict(Counter(s for item in items[: 2 * n - 2] for s in item[2]))


def canonical_codes(lens: dict[int, int]) -> dict[int, int]:
    """DEFLATE's canonical code assignment: symbol -> code (an integer of lens[symbol] bits)."""
    bl_count = Counter(lens.values())
    code, next_code = 0, {}
    for bits in range(1, MAX_BITS + 1):
        code = (code + bl_count.get(bits - 1, 0)) << 1
        next_code[bits] = code
    codes = {}
    for sym in sorted(lens):
        codes[sym] = next_code[lens[sym]]
        next_code[lens[sym]] += 1
    return codes


def split_sizes(n: int) -> list[int]:
    return [n // 4 + (s < n % 4) for s in range(4)]


def header(lens: dict[int, int], nwords: list[int]) -> bytes:
    bitmap = bytearray(32)
    for s in lens:
        bitmap[s // 8] |= 1 << (s % 8)
    nib = [lens[s] for s in sorted(lens)]
    if len(nib) % 2:
        nib.append(0)
    table = bytes(nib[i] | (nib[i + 1] << 4) for i in range(0, len(nib), 2))
    head = bytes([VERSION, 0, 0, 0]) + struct.pack("<4I", *nwords) + bytes(bitmap) + table
    return head + bytes(-len(head) % 8)


def encode(data: bytes, max_bits: int = MAX_BITS) -> bytes | None:
    counts = Counter(data)
    if len(counts) < 2:
        return None
    lens = package_merge(counts, max_bits)
    codes = canonical_codes(lens)
    streams, pos = [], 0
    for size in split_sizes(len(data)):
        bits = "".join(format(codes[b], f"0{lens[b]}b") for b in data[pos : pos + size])
        pos += size
        bits += "0" * (-len(bits) % 64)
        streams.append(
            b"".join(struct.pack("<Q", int(bits[i : i + 64], 2)) for i in range(0, len(bits), 64))
        )
    return header(lens, [len(s) // 8 for s in streams]) + b"".join(streams)


def decode(payload: bytes, n: int) -> bytes:
    """Decode ``n`` bytes, or raise ValueError naming the rule the payload breaks."""
    if len(payload) < 52:
        raise ValueError("short header")
    if payload[0] != VERSION or payload[1:4] != b"\0\0\0":
        raise ValueError("version or reserved bytes")
    nwords = struct.unpack_from("<4I", payload, 4)
    symbols = [s for s in range(256) if payload[20 + s // 8] >> (s % 8) & 1]
    k = len(symbols)
    table_end = 52 + (k + 1) // 2
    head_end = table_end + (-table_end % 8)
    if k < 2 or len(payload) < head_end:
        raise ValueError("too few symbols or truncated table")
    nib = []
    for b in payload[52:table_end]:
        nib += [b & 15, b >> 4]
    if k % 2 and nib[-1] != 0:
        raise ValueError("unused nibble not zero")
    if any(payload[table_end:head_end]):
        raise ValueError("header padding not zero")
    lens = dict(zip(symbols, nib[:k]))
    if not all(1 <= v <= MAX_BITS for v in lens.values()):
        raise ValueError("length out of range")
    if sum(2 ** (MAX_BITS - v) for v in lens.values()) != 2**MAX_BITS:
        raise ValueError("not a complete code")
    lookup = {(lens[s], c): s for s, c in canonical_codes(lens).items()}
    if head_end + 8 * sum(nwords) != len(payload):
        raise ValueError("payload size")
    out, pos = bytearray(), head_end
    for size, w in zip(split_sizes(n), nwords):
        words = struct.unpack_from(f"<{w}Q", payload, pos)
        pos += 8 * w
        bits = "".join(format(x, "064b") for x in words)
        i = 0
        for _ in range(size):
            code, length = 0, 0
            while (length, code) not in lookup:
                if i >= len(bits):
                    raise ValueError("stream ends early")
                code, length, i = code * 2 + int(bits[i]), length + 1, i + 1
            out.append(lookup[(length, code)])
        if (i + 63) // 64 != w:
            raise ValueError("words left over")
        if "1" in bits[i:]:
            raise ValueError("padding not zero")
    return bytes(out)
