"""safetensors reader: our own header parser over the mapped file, no torch or safetensors.

The 8-byte length and the JSON header are kept verbatim (key order, spacing and padding are
never regenerated); tensors become tensor segments in file order; any gap or trailing bytes
become verbatim segments, so every byte of the file is covered exactly once.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from ..dtypes import get_dtype
from ..errors import SafetensorsError  # (defined there; importable from here)
from .base import TENSOR, VERBATIM, Layout, Segment

__all__ = ["MAX_HEADER", "SafetensorsError", "looks_like_safetensors", "read_safetensors"]

MAX_HEADER = 100_000_000  # the limit the safetensors library itself enforces
MAX_RANK = 64


def looks_like_safetensors(data: np.ndarray) -> bool:
    """Cheap sniff: a plausible header length followed by ``{``."""
    if data.size < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8].tobytes())
    return 2 <= n <= min(MAX_HEADER, data.size - 8) and data[8] == ord("{")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise SafetensorsError(f"duplicate key {k!r} in the header")
        d[k] = v
    return d


def _int(v: Any, what: str) -> int:
    if type(v) is not int or v < 0:  # bool is an int subclass: excluded by the type() test
        raise SafetensorsError(f"{what} is not a non-negative integer: {v!r}")
    return v


def read_safetensors(data: np.ndarray) -> Layout:
    """Parse the header of the safetensors file held in ``data`` (uint8).

    Raises :class:`SafetensorsError` naming the first problem; the caller decides whether to
    fall back to opaque bytes.
    """
    size = int(data.size)
    if size < 8:
        raise SafetensorsError(f"file has {size} bytes, fewer than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8].tobytes())
    if n > MAX_HEADER:
        raise SafetensorsError(f"header length {n} exceeds the {MAX_HEADER}-byte limit")
    if 8 + n > size:
        raise SafetensorsError(f"header length {n} runs past the end of the {size}-byte file")
    try:
        header = json.loads(
            data[8 : 8 + n].tobytes().decode("utf-8"), object_pairs_hook=_no_duplicates
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"header is not valid UTF-8 JSON: {e}") from None
    except RecursionError:
        raise SafetensorsError("header JSON nests too deeply") from None
    if not isinstance(header, dict):
        raise SafetensorsError("header is not a JSON object")
    base = 8 + n
    body = size - base
    metadata = header.get("__metadata__")
    if metadata is not None and not isinstance(metadata, dict):
        raise SafetensorsError("__metadata__ is not a JSON object")
    tensors: list[Segment] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            raise SafetensorsError(f"entry {name!r} is not a JSON object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str):
            raise SafetensorsError(f"tensor {name!r} has no dtype string")
        if not isinstance(shape, list) or len(shape) > MAX_RANK:
            raise SafetensorsError(f"tensor {name!r} has an invalid shape {shape!r}")
        dims = tuple(_int(d, f"a dimension of {name!r}") for d in shape)
        if not isinstance(offs, list) or len(offs) != 2:
            raise SafetensorsError(f"tensor {name!r} has invalid data_offsets {offs!r}")
        begin, end = _int(offs[0], f"begin of {name!r}"), _int(offs[1], f"end of {name!r}")
        if begin > end or end > body:
            raise SafetensorsError(
                f"tensor {name!r} spans [{begin}, {end}), outside the {body}-byte data section"
            )
        dt = get_dtype(dtype)
        if dt is not None and dt.nbytes(dims) != end - begin:
            raise SafetensorsError(
                f"tensor {name!r}: {dtype} {list(dims)} needs {dt.nbytes(dims)} bytes, "
                f"data_offsets give {end - begin}"
            )
        tensors.append(Segment(TENSOR, base + begin, end - begin, name, dtype, dims))
    tensors.sort(key=lambda s: (s.offset, s.size))
    segments = [Segment(VERBATIM, 0, base)]
    pos = base
    for t in tensors:
        if t.offset < pos:
            raise SafetensorsError(f"tensor {t.name!r} overlaps the tensor before it")
        if t.offset > pos:
            segments.append(Segment(VERBATIM, pos, t.offset - pos))
        segments.append(t)
        pos = t.end
    if pos < size:
        segments.append(Segment(VERBATIM, pos, size - pos))
    meta: dict[str, Any] = {"header_size": n}
    if metadata is not None:
        meta["__metadata__"] = metadata
    return Layout("safetensors", size, segments, metadata=meta)
