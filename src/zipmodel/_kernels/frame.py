"""One Numba call that decodes a whole chunk frame (the fast path of ``pipeline.decode_chunk``),
and one that codes a float chunk into a frame (:func:`encode_frame`, the fast path of
``pipeline.encode_chunk``).

The common frames (identity or a float split; each stream ``raw``, ``huffman`` or ``rans``
without a context) are parsed, checked, entropy-decoded, merged and verified here, in one
call that does not hold the GIL. Before it, a chunk cost about six kernel calls and ~100 us of
Python under the GIL (frame parse, codec headers, table cache, views), 25-40% of a 1-thread
decode and worse on 2 threads, where the GIL serialises it.

The kernel never raises and never decides what an error means: on anything it does not
handle (another codec or transform, a context stream) or does not accept (any check of the
Python path failing) it returns nonzero with the frame buffer as it found it, and the caller
runs the Python path, which handles the frame or raises the precise error. So the checks
below need only be at least as strict as the Python ones, and the frame's bytes decide the
output alone: a frame this kernel accepts decodes to the bytes whose XXH3 the frame records.

Layouts (``zipmodel.container.format`` and the codec modules are normative):
frame header ``<4sBBHQIIQ`` (magic, transform, streams, flags, src_offset, raw_size,
body_size, check), stream entries ``<BBHII`` (codec, context, reserved, decoded, encoded),
``<Q`` raw check, then the payloads back to back.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64, int64

from .choose import NOT_HANDLED as NOT_CHOSEN
from .choose import choose_field
from .huffman import _build_tables, _decode4, _decode4_single
from .rans import _rans_decode
from .split import (
    _merge_bf16,
    _merge_f16,
    _merge_f32,
    _merge_f32_words,
    _split_bf16,
    _split_f16,
    _split_f32,
    _split_f32_words,
)
from .xxh3 import xxh3_64 as _xxh3_64

HEADROOM = 8  # the frame sits at fb[HEADROOM:] (container.frames.HEADROOM)
_MAGIC = (90, 77, 67, 75)  # b"ZMCK"
_MAX_STREAMS = 8
_MAX_CHUNK_RAW = 64 << 20
_NO_CONTEXT = 0xFF
_RAW, _CONST, _HUFFMAN, _RANS = 0, 1, 3, 4
_HUF_FIXED = 52  # huffman payload: version, 4 stream lengths, symbol bitmap
_HUF_MAX_BITS = 12
# huffman: the multi-symbol table pays from 1.6 symbols per lookup (codecs.huffman._MULTI_PAYS)
_HUF_MULTI_MIN = 6554  # ceil(1.6 * 4096)
_U8 = uint64(8)

NOT_HANDLED = 1  # another codec, transform or a context stream: the Python path decodes it
REJECTED = 2  # a check failed: the Python path raises the precise error


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _le(b, p, n):
    """Little-endian unsigned integer of ``n`` bytes at ``b[p]``."""
    v = uint64(0)
    for k in range(n):
        v |= uint64(b[p + k]) << uint64(8 * k)
    return v


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _copy(dst, src):
    """``dst[:] = src`` at memcpy speed: Numba's slice assignment copies 512 KiB in 200-280 us
    (overlap checks, signed indices), this loop in 26 us, as fast as numpy; and the slice
    assignment compiles Numba's string formatting for its shape-mismatch message (2-3 s on a
    fresh machine's first decode)."""
    for i in range(src.size):
        k = uint64(i)
        dst[k] = src[k]


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _xxh3(a, seed):
    """``zipmodel._checksum.xxh3_64`` (the word path where the start is 8-byte aligned)."""
    n = a.size
    aligned = n >= 1024 and a.ctypes.data % 8 == 0  # a runtime flag: one compiled body
    words = a[: n - n % 8 if aligned else 0].view(np.uint64)
    return _xxh3_64(a, words, aligned, uint64(seed))


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _huffman(payload, out, tcache, hstate, lens, codes, single, multi, words):
    """``codecs.huffman.HuffmanCodec.decode``; 0, or nonzero where it would raise.

    ``tcache``/``hstate``: this thread's last table bytes, and (their length, use_multi).
    """
    size = payload.size
    if size < _HUF_FIXED:
        return 1
    if _le(payload, int64(0), int64(4)) != 1:  # version 1, reserved bytes zero
        return 1
    n_sym = 0
    for b in range(20, 52):
        x = payload[b]
        while x:
            n_sym += 1
            x &= x - 1
    tlen = 32 + (n_sym + 1) // 2
    hlen = (_HUF_FIXED + (n_sym + 1) // 2 + 7) & ~7
    if n_sym < 2 or size < hlen:
        return 1
    for b in range(20 + tlen, hlen):
        if payload[b]:
            return 1
    table = payload[20 : 20 + tlen]
    same = hstate[0] == tlen
    if same:
        for b in range(tlen):
            if tcache[b] != table[b]:
                same = False
                break
    if not same:
        hstate[0] = 0
        held = _build_tables(table, lens, codes, single, multi)
        if held < 0:
            return 1
        _copy(tcache[:tlen], table)
        hstate[0] = tlen
        hstate[1] = 1 if held >= _HUF_MULTI_MIN else 0
    n = out.size
    base, rem = n // 4, n % 4
    bounds = np.empty(5, np.uint64)
    wbounds = np.empty(5, np.uint64)
    bounds[0] = 0
    wbounds[0] = 0
    for s in range(4):
        syms = base + (1 if s < rem else 0)
        bounds[s + 1] = bounds[s] + uint64(syms)
        w = int(_le(payload, 4 + 4 * s, int64(4)))
        if not ((syms + 63) >> 6 <= w <= (syms * _HUF_MAX_BITS + 63) >> 6):
            return 1
        wbounds[s + 1] = wbounds[s] + uint64(w)
    n_words = int(wbounds[4])
    if hlen + 8 * n_words != size:
        return 1
    body = payload[hlen:]
    if body.ctypes.data % 8 == 0:
        wv = body.view(np.uint64)
    else:
        if words.size < n_words:
            return 1  # the caller sizes ``words`` for the largest chunk; cannot happen
        wv = words[:n_words]
        for i in range(n_words):
            wv[i] = _le(body, 8 * i, int64(8))
    if hstate[1]:
        err = _decode4(wv, wbounds, single, multi, out, bounds)
    else:
        err = _decode4_single(wv, wbounds, single, out, bounds)
    return err


@njit(nogil=True, cache=True)
def decode_frame(
    fb, size, out, transform, src_offset, n_streams, table, first_stream, scratch, tcache,
    hstate, lens, codes, single, multi, words, dtab, st,
):  # fmt: skip
    """Decode the frame of ``size`` bytes at ``fb[HEADROOM:]`` into ``out`` (uint8, the
    chunk's size); ``transform``/``src_offset``/``n_streams`` are the chunk's index entry,
    ``table`` the index's stream table as bytes (its 12-byte rows are laid out as the frame's
    stream entries, which must equal rows ``first_stream..``; empty: not checked).
    Returns 0 (decoded and verified), ``NOT_HANDLED`` or ``REJECTED``; ``fb`` is left as it
    was. The other arguments are this thread's scratch (see ``pipeline.fused._FrameScratch``)."""
    if size < 32 or fb.size < HEADROOM + size:
        return REJECTED
    f = fb[HEADROOM : HEADROOM + size]
    for k in range(4):
        if f[k] != _MAGIC[k]:
            return REJECTED
    t = int(f[4])
    ns = int(f[5])
    raw_size = int(_le(f, int64(16), int64(4)))
    body = int(_le(f, int64(20), int64(4)))
    if ns == 0 or ns > _MAX_STREAMS or raw_size > _MAX_CHUNK_RAW:
        return REJECTED
    if body < ns * 12 + 8 or size != 32 + body:
        return REJECTED
    if t != transform or ns != n_streams or _le(f, int64(8), int64(8)) != uint64(src_offset):
        return REJECTED
    if f[6] != 0 or f[7] != 0:  # flags: zero in format 1
        return REJECTED
    if raw_size != out.size:
        return REJECTED
    # transforms handled here: identity (0) and the float splits (1 bf16, 2 f16, 3 f32)
    if t == 0:
        want_ns, item = 1, 1
    elif t == 1 or t == 2:
        want_ns, item = 2, 2
    elif t == 3:
        want_ns, item = 4, 4
    else:
        return NOT_HANDLED
    if ns != want_ns or raw_size % item:
        return REJECTED
    per = raw_size // ns
    pos = 32 + 12 * ns + 8
    total = pos
    for j in range(ns):
        e = 32 + 12 * j
        if f[e + 2] != 0 or f[e + 3] != 0:  # reserved: zero in format 1
            return REJECTED
        if table.size:
            te = 12 * (first_stream + j)
            if te + 12 > table.size:
                return REJECTED
            for b in range(12):
                if f[e + b] != table[te + b]:
                    return REJECTED
        codec = int(f[e])
        if codec != _RAW and codec != _HUFFMAN and codec != _RANS:
            return NOT_HANDLED
        if int(f[e + 1]) != _NO_CONTEXT:
            return NOT_HANDLED
        if int(_le(f, e + 4, int64(4))) != per:
            return REJECTED
        enc = int(_le(f, e + 8, int64(4)))
        if codec == _RAW and enc != per:
            return REJECTED
        total += enc
    if total != size:
        return REJECTED
    if scratch.size < raw_size:
        return NOT_HANDLED
    # the frame checksum covers header[0:24] and the body: move the header next to the body
    # for one pass, then put the bytes back
    saved = f[8:32].copy()
    _copy(f[8:32], f[0:24].copy())
    check = _xxh3(f[8:size], int64(0))
    _copy(f[8:32], saved)
    if check != _le(f, int64(24), int64(8)):
        return REJECTED
    raw_check = _le(f, 32 + 12 * ns, int64(8))
    # decode each stream: raw ones are used in place, coded ones go to scratch (or straight
    # to ``out`` for a one-stream frame)
    s0 = f[0:0]
    s1 = f[0:0]
    s2 = f[0:0]
    s3 = f[0:0]
    for j in range(ns):
        e = 32 + 12 * j
        codec = int(f[e])
        enc = int(_le(f, e + 8, int64(4)))
        payload = f[pos : pos + enc]
        pos += enc
        if codec == _RAW:
            s = payload
        else:
            s = out if ns == 1 else scratch[j * per : (j + 1) * per]
            if codec == _HUFFMAN:
                err = _huffman(payload, s, tcache, hstate, lens, codes, single, multi, words)
            else:
                err = _rans_decode(payload, s, dtab, st)
            if err != 0:
                return REJECTED
        if j == 0:
            s0 = s
        elif j == 1:
            s1 = s
        elif j == 2:
            s2 = s
        else:
            s3 = s
    if t == 0:
        if int(f[32]) == _RAW:
            _copy(out, s0)
    elif t == 1:
        _merge_bf16(s0, s1, out)
    elif t == 2:
        _merge_f16(s0, s1, out)
    elif out.ctypes.data % 4 == 0:
        _merge_f32_words(s0, s1, s2, s3, out.view(np.uint32))
    else:
        _merge_f32(s0, s1, s2, s3, out)
    if _xxh3(out, src_offset) != raw_check:
        return REJECTED
    return 0


@njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, nogil=True, cache=True)
def _put_le(b, p, v, n):
    """Store ``v`` as an ``n``-byte little-endian unsigned integer at ``b[p]``."""
    v = uint64(v)
    for k in range(n):
        b[p + k] = np.uint8((v >> uint64(8 * k)) & uint64(0xFF))


@njit(nogil=True, cache=True)
def encode_frame(
    raw, fb, transform, src_offset, min_gain, sample, probe, w_huff, w_rans, use_rans,
    max_bits, prob_bits, streams, streams_ro, hist4, lens, work, codes, words, freq, rbuf,
    res, info,
):  # fmt: skip
    """Code the chunk ``raw`` of a float split (transform 1 bf16, 2 f16, 3 f32) into a frame
    at ``fb[HEADROOM:]``: the fast path of ``pipeline.encode_chunk`` at the levels whose
    field streams ``choose.choose_field`` codes (``fast``, ``default``).

    Split into ``streams`` (scratch; ``streams_ro`` is a read-only view of it, so the
    chooser runs on the array type it is compiled for anyway), each stream chosen and coded as
    ``codecs.select.encode_stream`` would up to the general codecs, the payloads copied in
    behind the stream table, then the content and frame checksums, as
    ``container.frames.FrameWriter`` writes them. Returns the frame's size, or -1 where the
    Python path must code the chunk (another transform, a stream too long for a payload).
    ``info[j]`` gets stream j's (codec, decoded size, encoded size, final) and ``res[j]``
    ``choose_field``'s figures: a stream that is not final may still go to zstd, if the
    caller's probe says so (then the caller codes the chunk the Python way)."""
    n = raw.size
    if transform == 1 or transform == 2:
        ns, item = 2, 2
    elif transform == 3:
        ns, item = 4, 4
    else:
        return -1
    if n % item or n > _MAX_CHUNK_RAW or streams.size < n or streams_ro.size != streams.size:
        return -1
    per = n // ns
    s0 = streams[0:per]
    s1 = streams[per : 2 * per]
    s2 = streams[2 * per : 3 * per]
    s3 = streams[3 * per : 4 * per]
    if transform == 1:
        _split_bf16(raw, s0, s1)
    elif transform == 2:
        _split_f16(raw, s0, s1)
    elif raw.ctypes.data % 4 == 0:
        _split_f32_words(raw.view(np.uint32), s0, s1, s2, s3)
    else:
        _split_f32(raw, s0, s1, s2, s3)
    t0 = HEADROOM + 32
    pos = t0 + 12 * ns + 8
    for j in range(ns):
        d = streams_ro[j * per : (j + 1) * per]
        cid, start, size, final = choose_field(
            d, min_gain, sample, probe, w_huff, w_rans, use_rans, max_bits, prob_bits,
            hist4, lens, work, codes, words, freq, rbuf, res[j],
        )  # fmt: skip
        if cid == NOT_CHOSEN:
            return -1
        if cid == _RAW:
            size = per
            if pos + size > fb.size:
                return -1
            _copy(fb[pos : pos + size], d)
        elif cid == _CONST:
            size = 1
            if pos + size > fb.size:
                return -1
            fb[pos] = d[0]
        else:
            if pos + size > fb.size:
                return -1
            if cid == _HUFFMAN:
                _copy(fb[pos : pos + size], words.view(np.uint8)[:size])
            else:
                _copy(fb[pos : pos + size], rbuf[start : start + size])
        e = t0 + 12 * j
        fb[e] = np.uint8(cid)
        fb[e + 1] = np.uint8(_NO_CONTEXT)
        fb[e + 2] = 0
        fb[e + 3] = 0
        _put_le(fb, e + 4, per, int64(4))
        _put_le(fb, e + 8, size, int64(4))
        info[j, 0] = cid
        info[j, 1] = per
        info[j, 2] = size
        info[j, 3] = 1 if final else 0
        pos += size
    _put_le(fb, t0 + 12 * ns, _xxh3(raw, src_offset), int64(8))
    # header[0:24] goes right before the body for one checksum pass (FrameWriter.finish)
    h = HEADROOM + 8
    for k in range(4):
        fb[h + k] = np.uint8(_MAGIC[k])
    fb[h + 4] = np.uint8(transform)
    fb[h + 5] = np.uint8(ns)
    fb[h + 6] = 0
    fb[h + 7] = 0
    _put_le(fb, h + 8, src_offset, int64(8))
    _put_le(fb, h + 16, n, int64(4))
    _put_le(fb, h + 20, pos - t0, int64(4))
    check = _xxh3(fb[h:pos], int64(0))
    _copy(fb[HEADROOM : HEADROOM + 24], fb[h : h + 24].copy())
    _put_le(fb, HEADROOM + 24, check, int64(8))
    return pos - HEADROOM
