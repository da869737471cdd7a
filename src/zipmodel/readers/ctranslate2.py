"""CTranslate2 ``model.bin`` reader (faster-whisper and other CTranslate2 models).

Layout (little-endian), binary versions 4 to 6: ``u32 version``, ``u16``-length-prefixed spec
name, ``u32 revision``, ``u32 n_variables``; per variable: ``u16``-length-prefixed name,
``u8 rank``, ``rank × u32`` dims, ``u8 type`` (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16),
``u32 nbytes``, the data. Whatever follows (aliases, config) stays verbatim.

Tensors here sit at arbitrary byte offsets (odd ones included), which is why reading the
layout beats treating the file as one fp16 buffer: each tensor is split on its own element
boundaries.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import CT2Error  # (defined there; importable from here)
from .base import TENSOR, VERBATIM, Layout, Segment

__all__ = ["CT2Error", "looks_like_ctranslate2", "read_ctranslate2"]

_TYPES = {0: "F32", 1: "I8", 2: "I16", 3: "I32", 4: "F16", 5: "BF16"}
_WIDTH = {"F32": 4, "I8": 1, "I16": 2, "I32": 4, "F16": 2, "BF16": 2}
MAX_VARIABLES = 1_000_000


def looks_like_ctranslate2(data: np.ndarray) -> bool:
    if data.size < 16:
        return False
    version, n = struct.unpack_from("<IH", data[:6].tobytes())
    if not 4 <= version <= 6 or not 1 <= n <= 256 or 6 + n > data.size:
        return False
    name = data[6 : 6 + n].tobytes().rstrip(b"\x00")
    return name.isascii() and name.endswith(b"Spec")


def read_ctranslate2(data: np.ndarray) -> Layout:
    size = int(data.size)
    buf = memoryview(data)  # read-only, zero copy

    pos = 0

    def take(fmt: str):
        nonlocal pos
        n = struct.calcsize(fmt)
        if pos + n > size:
            raise CT2Error(f"truncated at byte {pos}")
        v = struct.unpack_from(fmt, buf, pos)
        pos += n
        return v

    def string() -> str:
        nonlocal pos
        (n,) = take("<H")
        if pos + n > size:
            raise CT2Error(f"truncated string at byte {pos}")
        s = bytes(buf[pos : pos + n]).rstrip(b"\x00").decode("utf-8", "replace")
        pos += n
        return s

    (version,) = take("<I")
    if not 4 <= version <= 6:
        raise CT2Error(f"binary version {version} is not supported (4..6)")
    spec = string()
    (revision,) = take("<I")
    (count,) = take("<I")
    if count > MAX_VARIABLES:
        raise CT2Error(f"{count} variables is implausible")
    segments: list[Segment] = []
    last = 0
    for _ in range(count):
        name = string()
        (rank,) = take("<B")
        dims = take(f"<{rank}I") if rank else ()
        type_id, nbytes = take("<BI")
        dtype = _TYPES.get(type_id)
        if dtype is None:
            raise CT2Error(f"variable {name!r} has unknown type {type_id}")
        n = 1
        for d in dims:
            n *= d
        if n * _WIDTH[dtype] != nbytes:
            raise CT2Error(
                f"variable {name!r}: {dtype} {list(dims)} needs {n * _WIDTH[dtype]} bytes, not {nbytes}"
            )
        if pos + nbytes > size:
            raise CT2Error(f"variable {name!r} runs past the end of the file")
        segments.append(Segment(VERBATIM, last, pos - last))
        segments.append(Segment(TENSOR, pos, nbytes, name, dtype, tuple(dims)))
        pos += nbytes
        last = pos
    if last < size:
        segments.append(Segment(VERBATIM, last, size - last))
    segments = [s for s in segments if s.kind == TENSOR or s.size]
    return Layout(
        "ctranslate2",
        size,
        segments,
        metadata={"ctranslate2": {"version": version, "spec": spec, "revision": revision}},
    )
