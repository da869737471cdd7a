"""The one-call chunk decoder's Python side: per-thread scratch and the call itself.

``pipeline.chunk`` tries :func:`decode_frame_fused` on every chunk before its Python path; the
kernel (``zipmodel._kernels.frame``) explains what it handles and why it exists.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

__all__ = ["decode_frame_fused"]

_LITTLE = sys.byteorder == "little"
_local = threading.local()
_kernels = None


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


def decode_frame_fused(fb: np.ndarray, fsize: int, buf: np.ndarray, row) -> bool:
    """Decode the common frames (identity or float split; raw / huffman / rans streams) in
    one GIL-free kernel call (see ``zipmodel._kernels.frame``). False: nothing decided, the
    Python path must decode the frame (another codec), or raise its precise error."""
    global _kernels
    if not _LITTLE or buf.dtype != np.uint8 or not (buf.flags.c_contiguous and buf.flags.writeable):
        return False
    k = _kernels
    if k is None:
        from .. import _jit

        _jit.ensure_ready()
        from .._kernels import frame as k

        _kernels = k
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
