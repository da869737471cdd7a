"""``rans`` (id 4) and ``rans-ctx`` (id 5): order-0 rANS, and rANS with a context stream.

``rans`` codes a byte stream within ~0.001 bit/symbol of its order-0 entropy (14-bit
probabilities, frequencies normalised for minimum size) plus a table of a few dozen bytes.
``rans-ctx`` codes the top K bits of each byte with one table per value of a context byte
(the exponent, for a float's top mantissa byte) and the low 8-K bits uniformly.

Shared bitstream (both codecs). All integers are little-endian. Eight rANS states
``x[0..7]``, each in ``[2**16, 2**32)``, decode the symbols round-robin: symbol ``i`` uses
``x[i % 8]``. A decode step turns a state into a slot, the slot into a symbol, and then::

    x = f * (x >> S) + (slot_part - cum)      # f, cum: the symbol's frequency and start
    if x < 2**16: x = (x << 16) | next_word   # words are u16, read front to back

After the last symbol every word has been read and every state equals ``2**16`` (the
encoder's initial state); anything else is a corrupt payload. The encoder runs the same
steps in reverse (symbol n-1 first, words written back to front).

``rans`` payload::

    u8      P         probability bits, 8 <= P <= 14 (this encoder writes 14); S = P
    32 B    present   bit (s & 7) of byte (s >> 3) is set iff symbol s occurs
    varint  f[s] - 1  for each present s, in increasing order; f[s] >= 1, sum = 2**P
    u32[8]  x[0..7]   the initial decoder states
    u16[]   words     the rest of the payload (an even number of bytes)

    step: slot = x mod 2**P; s is the symbol with cum[s] <= slot < cum[s] + f[s]
          (cum[s] = sum of f[t] for t < s); emit s; slot_part = slot.

``rans-ctx`` payload (``decode`` also gets the context stream, one byte per symbol)::

    u8      K         modelled top bits, 1 <= K <= 4; P = 5 + K, S = P + 8 - K = 13
    u8      T         contexts with a table of their own, 0 <= T <= 255
    u8[T]   c[1..T]   those context bytes, strictly increasing
    varint  f[t][h]   tables t = 0 (shared by all other contexts), 1..T; for each, the
                      2**K frequencies of the top-bit values h = 0 .. 2**K-1; f >= 0, sum 2**P
    u32[8]  x[0..7]   the initial decoder states
    u16[]   words     the rest of the payload (an even number of bytes)

    step: t = r if ctx[i] == c[r] else 0; slot = x mod 2**13; u = slot >> (8-K);
          h is the value with cum[t][h] <= u < cum[t][h] + f[t][h];
          emit (h << (8-K)) | (slot mod 2**(8-K)); slot_part = u.

A varint is LEB128: 7 bits a byte, least significant group first, the high bit set on every
byte but the last; at most 3 bytes.
"""

from __future__ import annotations

import threading

import numpy as np

from .. import _jit
from ..errors import CorruptDataError
from .base import Codec

__all__ = ["RansCodec", "RansCtxCodec"]

PROB_BITS = 14
_STATES = 8
_local = threading.local()


def _kernels():
    return _jit.kernels("rans")  # numba: imported on first use only


def _scratch(name: str, size: int, dtype) -> np.ndarray:
    """A per-thread buffer of at least ``size`` items, reused across calls (no fresh pages)."""
    a = getattr(_local, name, None)
    if a is None or a.size < size:
        a = np.empty(size, dtype)
        setattr(_local, name, a)
    return a


def _input(data: np.ndarray, what: str) -> np.ndarray:
    if data.dtype != np.uint8 or data.ndim != 1:
        raise ValueError(f"{what} must be a 1-D uint8 array, got {data.dtype} {data.shape}")
    return _jit.readonly(np.ascontiguousarray(data))


def _source(payload) -> np.ndarray:
    return _jit.readonly(np.frombuffer(payload, np.uint8))


def _check(code: int, name: str) -> None:
    if code == 0:
        return
    k = _kernels()
    why = {
        k.E_HEADER: "header is truncated or has an invalid parameter",
        k.E_TABLE: "frequency table is invalid",
        k.E_STATE: "an initial state is out of range",
        k.E_ODD: "word stream has an odd number of bytes",
        k.E_SHORT: "word stream ends before the last symbol",
        k.E_FINAL: "stream does not end in the initial state",
    }.get(code, f"error {code}")
    raise CorruptDataError(f"{name} payload is corrupt: {why}")


def _decode_into(out: np.ndarray, run) -> None:
    """Run ``run(target)`` on ``out`` itself, or on a scratch copy if it is not contiguous."""
    if out.dtype != np.uint8 or out.ndim != 1:
        raise ValueError(f"out must be a 1-D uint8 array, got {out.dtype} {out.shape}")
    if out.flags.c_contiguous and out.flags.writeable:
        run(out)
    else:
        tmp = np.empty(out.size, np.uint8)
        run(tmp)
        out[:] = tmp


class RansCodec(Codec):
    """Order-0 rANS, 8 interleaved 32-bit states, 14-bit probabilities."""

    codec_id = 4
    name = "rans"
    compiled = True

    takes_hist4 = True  # encode() reuses the chooser's histograms

    def encode(self, data: np.ndarray, hist4: np.ndarray | None = None) -> bytes | None:
        """``hist4``: byte histograms of parts of ``data`` (summed here), if known."""
        k = _kernels()
        data = _input(data, "data")
        if hist4 is None:
            hist = np.zeros(256, np.int64)
            k._histogram(data, hist)
        else:
            hist = np.ascontiguousarray(np.asarray(hist4, np.int64).reshape(-1, 256).sum(axis=0))
        if np.count_nonzero(hist) < 2:
            return None  # empty or constant: the const codec's job
        freq = np.zeros(256, np.int64)
        k._normalize(hist, PROB_BITS, freq)
        buf = _scratch("enc", 2 * data.size + 2 + 4 * _STATES + 1 + 32 + 3 * 256, np.uint8)
        start = k._rans_encode(data, freq, PROB_BITS, buf)
        return buf[start:]  # valid until this thread's next rans encode (see codecs/base.py)

    def decode(self, payload: memoryview, out: np.ndarray) -> None:
        k = _kernels()
        src = _source(payload)
        dtab = _scratch("dtab", 1 << k.MAX_PROB_BITS, np.uint64)
        st = _scratch("st", _STATES, np.uint64)
        _decode_into(out, lambda o: _check(k._rans_decode(src, o, dtab, st), self.name))

    def estimate(self, hist: np.ndarray, n: int) -> float | None:
        """Payload bytes: table + states + the ideal code length under the normalised freqs."""
        hist = np.ascontiguousarray(hist, np.int64)
        if hist.shape != (256,):
            raise ValueError(f"hist must have 256 counts, got shape {hist.shape}")
        present = hist > 0
        if n == 0 or np.count_nonzero(present) < 2:
            return None
        freq = np.zeros(256, np.int64)
        return float(_kernels()._rans_estimate(hist, PROB_BITS, freq))


class RansCtxCodec(Codec):
    """rANS of a byte stream's top K bits, one table per context byte; low bits uniform."""

    codec_id = 5
    name = "rans-ctx"
    compiled = True
    uses_context = True

    def _plan(self, data: np.ndarray, context: np.ndarray):
        if context.size != data.size:
            raise ValueError(f"context has {context.size} bytes, data {data.size}")
        kern = _kernels()
        joint = np.empty((256, 16), np.int64)
        kern._joint_histogram(data, context, joint.reshape(-1))
        own = np.zeros(256, np.uint8)
        tables = np.zeros((256, 16), np.int64)
        size, k, t = kern._ctx_plan(joint, data.size, own, tables)
        return size, k, own[:t], tables[: t + 1, : 1 << k]

    def estimate_ctx(self, data: np.ndarray, context: np.ndarray) -> float | None:
        """Expected payload bytes (one pass over the data, no coding)."""
        data, context = _input(data, "data"), _input(context, "context")
        return self._plan(data, context)[0] if data.size else None

    def encode(self, data: np.ndarray, context: np.ndarray) -> bytes | None:
        data, context = _input(data, "data"), _input(context, "context")
        if data.size == 0:
            return None
        size, k, own, tables = self._plan(data, context)
        if size >= data.size:
            return None  # no better than raw
        return self._encode(data, context, k, own, tables)

    def _encode(self, data, context, k, own, tables) -> bytes:
        kern = _kernels()
        freqs = np.zeros((tables.shape[0], 1 << k), np.int64)
        for t, row in enumerate(tables):
            kern._normalize(row if row.any() else np.ones_like(row), 5 + k, freqs[t])
        header = kern._ctx_header_size(k, own, freqs)
        buf = _scratch("enc_ctx", 2 * data.size + 2 + 4 * _STATES + header, np.uint8)
        start = kern._ctx_encode(data, context, k, own, freqs, buf)
        return buf[start:]  # valid until this thread's next rans-ctx encode

    def decode(self, payload: memoryview, out: np.ndarray, context: np.ndarray) -> None:
        kern = _kernels()
        context = _input(context, "context")
        if context.size != out.size:
            raise ValueError(f"context has {context.size} bytes, out {out.size}")
        src = _source(payload)
        dtab = _scratch("ctx_dtab", 256 << 9, np.uint32)
        cmap = _scratch("ctx_cmap", 256, np.uint64)
        st = _scratch("st", _STATES, np.uint64)
        _decode_into(
            out,
            lambda o: _check(kern._ctx_decode(src, context, o, dtab, cmap, st), self.name),
        )
