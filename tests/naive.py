"""Slow, obviously correct references for the fast paths (one element at a time)."""

from __future__ import annotations

import struct


def split_bf16(raw: bytes) -> list[bytes]:
    exp, sm = bytearray(), bytearray()
    for (w,) in struct.iter_unpack("<H", raw):
        sign, e, m = w >> 15, (w >> 7) & 0xFF, w & 0x7F
        exp.append(e)
        sm.append((m << 1) | sign)
    return [bytes(exp), bytes(sm)]


def split_f32(raw: bytes) -> list[bytes]:
    out = [bytearray() for _ in range(4)]
    for (w,) in struct.iter_unpack("<I", raw):
        sign, e, m = w >> 31, (w >> 23) & 0xFF, w & 0x7FFFFF
        lowword = (m << 1) | sign  # 24 bits: mantissa then sign
        out[0].append(e)
        out[1].append((lowword >> 16) & 0xFF)
        out[2].append((lowword >> 8) & 0xFF)
        out[3].append(lowword & 0xFF)
    return [bytes(o) for o in out]


def split_f16(raw: bytes) -> list[bytes]:
    return [raw[1::2], raw[0::2]]
