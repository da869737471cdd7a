"""``huffman``: canonical Huffman in four interleaved streams, for near-i.i.d. byte streams.

Payload, format version 1 (all integers little-endian):

* byte 0: format version, 1; bytes 1-3: zero (reserved);
* bytes 4-19: four ``u32``, the length of streams 0-3 in 64-bit words;
* bytes 20-51: the symbol bitmap: symbol ``s`` is present iff bit ``s % 8`` (LSB first) of
  byte ``20 + s // 8`` is set; at least 2 symbols are present;
* then ``ceil(k / 2)`` bytes holding the code length (1..12) of each of the ``k`` present
  symbols in increasing symbol order, two per byte, the first in the low nibble (an unused
  last nibble is zero), then zero bytes up to a multiple of 8: the header;
* then streams 0, 1, 2, 3, back to back, exactly filling the payload.

The ``n`` decoded bytes (``n`` is recorded by the container) are cut into 4 contiguous parts;
part ``s`` has ``n // 4 + (s < n % 4)`` bytes and is coded by stream ``s``. Codes are
canonical: symbols sorted by (code length, symbol value) get consecutive codes, as in
DEFLATE, and must form a complete prefix code (Kraft sum exactly 1). A stream is a sequence
of 64-bit words stored little-endian; its bits are read from the most significant bit of
word 0 down to bit 0, then word 1, and so on; each code is written most significant bit
first. A stream holds exactly ``ceil(bits / 64)`` words, the unused low bits of its last
word zero. Decoding is therefore independent of the host's byte order.

Code lengths are optimal under the 12-bit limit (package-merge), so one 12-bit table lookup
decodes one code, and a multi-symbol table decodes up to 4 (see ``zipmodel._kernels.huffman``).
"""

from __future__ import annotations

import struct
import sys
import threading

import numpy as np

from .. import _jit
from ..errors import CorruptDataError
from .base import Codec

__all__ = ["HuffmanCodec"]

VERSION = 1
MAX_CODE_BITS = 12  # 11 measured 0.0004 of BF16 bytes larger at the same decode speed
_FIXED = 52  # version, reserved, stream lengths, bitmap
# Below this many symbols per lookup on average (codes of 6+ bits: high-entropy data), the
# one-symbol decoder is faster (measured: break-even near 1.55 on normal-shaped data).
_MULTI_PAYS = 1.6
_LITTLE = sys.byteorder == "little"
_local = threading.local()


def _k():
    return _jit.kernels("huffman")


class _Scratch:
    """Per-thread buffers, reused across calls (fresh memory costs page faults)."""

    def __init__(self) -> None:
        self.hist = np.zeros((4, 256), np.int64)
        self.lens = np.zeros(256, np.uint8)
        self.work = np.zeros(_k().WORK_SIZE, np.int64)
        self.codes = np.zeros(256, np.uint32)
        self.single = np.zeros(1 << 12, np.uint16)
        self.multi = np.zeros(1 << 12, np.uint64)
        self.table = b""  # the header table that single/multi were built from
        self.use_multi = True  # whether multi-symbol lookups pay for that table
        self.words = np.zeros(0, np.uint64)  # for payloads not 8-byte aligned
        self.payload = np.zeros(0, np.uint64)  # the encoder's output before it becomes bytes


def _scratch() -> _Scratch:
    s = getattr(_local, "scratch", None)
    if s is None:
        s = _local.scratch = _Scratch()
    return s


def split_bounds(n: int) -> list[int]:
    """The 5 boundaries of the 4 stream parts of ``n`` symbols."""
    base, rem = divmod(n, 4)
    b = [0]
    for s in range(4):
        b.append(b[-1] + base + (s < rem))
    return b


def header_size(k: int) -> int:
    """Header bytes for ``k`` present symbols."""
    return (_FIXED + (k + 1) // 2 + 7) & ~7


def _u64(values: list[int]) -> np.ndarray:
    return np.array(values, np.uint64)


class HuffmanCodec(Codec):
    codec_id = 3
    name = "huffman"
    compiled = True

    def __init__(self, max_code_bits: int = MAX_CODE_BITS):
        if not 8 <= max_code_bits <= 12:
            raise ValueError(f"max_code_bits must be 8..12, got {max_code_bits}")
        self.max_code_bits = max_code_bits

    takes_hist4 = True  # encode() reuses the chooser's per-part histograms

    def encode(self, data: np.ndarray, hist4: np.ndarray | None = None) -> np.ndarray | None:
        """``hist4``: the byte histograms of the 4 parts (:func:`split_bounds`), if known."""
        k, s = _k(), _scratch()
        data = _jit.readonly(np.ascontiguousarray(data, np.uint8).reshape(-1))
        bounds = split_bounds(data.size)
        if hist4 is None:
            k._segment_hist(data, _u64(bounds), s.hist)
        else:
            s.hist[:] = hist4
        present = k._code_lengths(s.hist.sum(axis=0), self.max_code_bits, s.lens, s.work)
        if present < 2:
            return None
        lens = s.lens
        nwords = [(bits + 63) >> 6 for bits in (s.hist @ lens.astype(np.int64)).tolist()]
        if max(nwords) >= 1 << 32:
            raise ValueError(f"huffman streams of {data.size} bytes are too long for the format")
        hlen = header_size(present)
        wbounds = [hlen // 8]
        for w in nwords:
            wbounds.append(wbounds[-1] + w)
        if s.payload.size < wbounds[-1]:
            s.payload = np.empty(wbounds[-1], np.uint64)
        payload = s.payload[: wbounds[-1]]  # the kernel writes every word of the streams
        payload[: hlen // 8] = 0
        head = payload[: hlen // 8].view(np.uint8)
        head[:20] = np.frombuffer(struct.pack("<B3x4I", VERSION, *nwords), np.uint8)
        head[20:_FIXED] = np.packbits(lens > 0, bitorder="little")
        nib = np.append(lens[lens > 0], np.uint8(0))  # a zero nibble pads an odd count
        head[_FIXED : _FIXED + (present + 1) // 2] = nib[0:present:2] | (
            nib[1 : present + 1 : 2] << 4
        )
        k._canonical_codes(lens, s.codes)
        k._encode4(data, _u64(bounds), s.codes, payload, _u64(wbounds))
        if not _LITTLE:
            payload[hlen // 8 :].byteswap(inplace=True)
        return payload.view(np.uint8)  # valid until this thread's next encode (base.py)

    def decode(self, payload: memoryview, out: np.ndarray) -> None:
        k, s = _k(), _scratch()
        payload = memoryview(payload).cast("B")
        size = payload.nbytes
        if size < _FIXED:
            raise CorruptDataError(f"huffman payload of {size} bytes is shorter than its header")
        version, *nwords = struct.unpack_from("<I4I", payload)
        if version != VERSION:  # also rejects nonzero reserved bytes
            raise CorruptDataError(f"huffman payload has unknown version/flags {version:#x}")
        table = bytes(payload[20 : _FIXED + 128])
        n_sym = int.from_bytes(table[:32], "little").bit_count()
        hlen = header_size(n_sym)
        table = table[: 32 + (n_sym + 1) // 2]
        if n_sym < 2 or size < hlen or any(payload[20 + len(table) : hlen]):
            raise CorruptDataError(f"huffman header of {n_sym} symbols is truncated or invalid")
        if table != s.table:
            s.table = b""
            held = k._build_tables(
                np.frombuffer(table, np.uint8), s.lens, s.codes, s.single, s.multi
            )
            if held < 0:
                what = ("lengths out of range", "an incomplete code")[-held - 1]
                raise CorruptDataError(f"huffman table holds {what}")
            s.table, s.use_multi = table, held >= _MULTI_PAYS * 4096
        bounds = split_bounds(out.size)
        for i, w in enumerate(nwords):
            syms = bounds[i + 1] - bounds[i]
            if not (syms + 63) >> 6 <= w <= (syms * MAX_CODE_BITS + 63) >> 6:
                raise CorruptDataError(
                    f"huffman stream {i} of {w} words cannot hold {syms} symbols"
                )
        n_words = sum(nwords)
        if hlen + 8 * n_words != size:
            raise CorruptDataError(
                f"huffman payload has {size} bytes, its header says {hlen + 8 * n_words}"
            )
        words = np.frombuffer(payload, np.uint64, n_words, hlen)
        if not (_LITTLE and words.flags.aligned):  # copy into reused scratch
            if s.words.size < n_words:
                s.words = np.empty(n_words, np.uint64)
            copy = s.words[:n_words]
            copy[:] = words
            words = copy
            if not _LITTLE:
                words.byteswap(inplace=True)
        wbounds = [0]
        for w in nwords:
            wbounds.append(wbounds[-1] + w)
        if s.use_multi:
            err = k._decode4(
                _jit.readonly(words), _u64(wbounds), s.single, s.multi, out, _u64(bounds)
            )
        else:
            err = k._decode4_single(
                _jit.readonly(words), _u64(wbounds), s.single, out, _u64(bounds)
            )
        if err:
            what = ("ends early", "has words left over", "has nonzero padding")[err - 1]
            raise CorruptDataError(f"huffman stream {what}")

    def estimate(self, hist: np.ndarray, n: int) -> float | None:
        s = _scratch()
        hist = np.asarray(hist, np.int64)
        present = _k()._code_lengths(hist, self.max_code_bits, s.lens, s.work)
        if present < 2 or n <= 0:
            return None
        bits = int(hist @ s.lens.astype(np.int64))
        streams = min(n, 4)
        per_stream = bits / streams
        # each stream pads to whole 64-bit words: half a word on average, one word when tiny
        words = per_stream / 64 + 0.5 if per_stream >= 32 else 1.0
        return header_size(present) + 8 * streams * words
