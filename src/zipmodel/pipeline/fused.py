"""The one-call chunk decoder's Python side: per-thread scratch and the call itself.

``pipeline.chunk`` tries :func:`decode_frame_fused` on every chunk before its Python path; the
kernel (``zipmodel._kernels.frame``) explains what it handles and why it exists.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from .. import _jit

__all__ = ["decode_frame_fused"]

_LITTLE = sys.byteorder == "little"
_local = threading.local()
_kernels = None


def _frame_kernels():
    """``zipmodel._kernels.frame``, imported (and the JIT made ready) on first use."""
    global _kernels
    if _kernels is None:
        _kernels = _jit.kernels("frame")
    return _kernels


class _FrameScratch:
    """One thread's buffers for :func:`decode_frame_fused` (reused: no fresh pages)."""

    def __init__(self) -> None:
        self.streams = np.empty(0, np.uint8)  # decoded streams of a split chunk
        self.words = np.empty(0, np.uint64)  # huffman words of a payload not 8-byte aligned
        self.table = np.zeros(160, np.uint8)  # the huffman header table the tables hold
        self.state = np.zeros(2, np.int64)  # (its length, multi-symbol lookups pay)
        self.lens = np.zeros(256, np.uint8)
        self.codes = np.zeros(256, np.uint32)
        self.single = np.zeros(1 << 12, np.uint16)
        self.multi = np.zeros(1 << 12, np.uint64)
        self.dtab = np.zeros(1 << 14, np.uint64)  # rans decode table
        self.st = np.zeros(8, np.uint64)


_NO_TABLE = np.zeros(0, np.uint8)


def decode_frame_fused(
    fb: np.ndarray, fsize: int, buf: np.ndarray, row, table: np.ndarray | None = None
) -> bool:
    """Decode the common frames (identity or float split; raw / huffman / rans streams) in
    one GIL-free kernel call (see ``zipmodel._kernels.frame``). False: nothing decided, the
    Python path must decode the frame (another codec), or raise its precise error.
    ``table``: the index's stream table as bytes, whose rows from ``row["first_stream"]`` on
    the frame's stream entries must equal."""
    if not _LITTLE or buf.dtype != np.uint8 or not (buf.flags.c_contiguous and buf.flags.writeable):
        return False
    k = _frame_kernels()
    s = getattr(_local, "scratch", None)
    if s is None:
        s = _local.scratch = _FrameScratch()
    n = buf.size
    if s.streams.size < n:
        s.streams = np.empty(max(n, 1 << 20), np.uint8)
    if s.words.size < fsize // 8 + 1:
        s.words = np.empty(max(fsize // 8 + 1, 1 << 17), np.uint64)
    return (
        k.decode_frame(
            fb,
            fsize,
            buf,
            int(row["transform"]),
            int(row["src_offset"]),
            int(row["n_streams"]),
            _NO_TABLE if table is None else table,
            int(row["first_stream"]) if table is not None else 0,
            s.streams,
            s.table,
            s.state,
            s.lens,
            s.codes,
            s.single,
            s.multi,
            s.words,
            s.dtab,
            s.st,
        )
        == 0
    )


class _EncodeScratch:
    """One thread's buffers for :func:`encode_frame_fused` besides the codecs' own."""

    def __init__(self) -> None:
        self.streams = np.empty(0, np.uint8)  # the split streams of a chunk
        self.streams_ro = _jit.readonly(self.streams)
        self.info = np.zeros((8, 4), np.int64)
        self.res = np.zeros((8, 3), np.float64)


_elocal = threading.local()


def encode_frame_fused(raw: np.ndarray, src_offset: int, transform, policy, buf: np.ndarray):
    """Code a float chunk into a frame in ``buf`` in one GIL-free kernel call
    (``zipmodel._kernels.frame.encode_frame``): the same frame ``pipeline.encode_chunk``
    builds on its Python path, for transforms 1-3 at a level whose field streams the fused
    chooser handles (``codecs.select.frame_fusable``). Returns ``(frame, infos)``, or None
    when the Python path must code the chunk: another transform or level, or a stream the
    level's zstd probe says may have structure (rare on weights: tested on every stream)."""
    from ..codecs.select import chooser_args, frame_fusable, structure_pays
    from ..container.frames import StreamInfo

    if not _LITTLE or transform.transform_id not in (1, 2, 3) or not frame_fusable(policy):
        return None
    k = _frame_kernels()
    s = getattr(_elocal, "scratch", None)
    if s is None:
        s = _elocal.scratch = _EncodeScratch()
    n = int(raw.size)
    if s.streams.size < n:
        s.streams = np.empty(max(n, 1 << 20), np.uint8)
        s.streams_ro = _jit.readonly(s.streams)
    per = n // transform.n_streams
    args = chooser_args(policy, per)
    size = k.encode_frame(
        _jit.readonly(raw),
        buf,
        transform.transform_id,
        src_offset,
        *args[:8],
        s.streams,
        s.streams_ro,
        *args[8:],
        s.res,
        s.info,
    )
    if size < 0:
        return None
    ns = transform.n_streams
    infos = []
    for j in range(ns):
        codec, decoded, encoded, final = (int(v) for v in s.info[j])
        if not final and policy.general:
            stream = s.streams[j * per : (j + 1) * per]
            if structure_pays(stream, float(s.res[j, 1]), policy):
                return None  # zstd may win: the Python chooser decides the whole chunk
        infos.append(StreamInfo(codec, 0xFF, decoded, encoded))
    from ..container.frames import HEADROOM

    return buf[HEADROOM : HEADROOM + size], infos
