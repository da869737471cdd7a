"""GGUF reader (llama.cpp, versions 2 and 3): our own parser, no ``gguf`` package.

Layout of a GGUF file (little-endian): ``"GGUF"``, ``u32 version``, ``u64 tensor_count``,
``u64 kv_count``, the metadata key/value pairs, one info record per tensor (name, dims, ggml
type, data offset), zero padding up to ``general.alignment`` (default 32), then the tensor
data, each tensor at an aligned offset from the start of the data section.

Everything before the first tensor (header, metadata, tensor infos, padding) is kept as one
verbatim segment, and so is every gap between tensors; each tensor is a tensor segment. Shapes
are given in numpy order (GGUF lists the fastest axis first; we reverse it). Plain types keep
the usual names (``F32``, ``F16``, ``BF16``, ``I8`` ...); block-quantized types are called
``GGUF_<type>`` (``GGUF_Q4_K``); the bytes of a tensor of a type this version does not know
stay in a verbatim segment.

The parser walks the header without building Python objects for the metadata (a tokenizer
can hold hundreds of thousands of strings) and checks every count and length against the
bytes that remain before it moves on, so a hostile header fails fast, with no big allocation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dtypes import GGUF_BLOCKS
from ..errors import GGUFError  # (defined there; importable from here)
from .base import TENSOR, VERBATIM, Layout, Segment

__all__ = ["GGML_TYPES", "GGUFError", "GGUFHeader", "looks_like_gguf", "read_gguf", "read_header"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_ALIGNMENT = 1 << 20
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME = 1 << 16  # tensor names (llama.cpp allows 64 bytes)
MAX_DEPTH = 8  # arrays of arrays
MAX_ITEMS = 1 << 23  # metadata values walked one by one (strings, nested arrays)

# ggml type id -> zipmodel dtype name (None: a type whose layout this version does not know).
_PLAIN = {0: "F32", 1: "F16", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 30: "BF16"}
_QUANT_IDS = {
    2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K",
    12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
    19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 29: "IQ1_M",
    34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip
_PLAIN_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "F64": 8}
# ggml type id -> (dtype name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    **{t: (n, 1, _PLAIN_BYTES[n]) for t, n in _PLAIN.items()},
    **{t: (f"GGUF_{q}", *GGUF_BLOCKS[q]) for t, q in _QUANT_IDS.items()},
}

# Metadata value types: id -> fixed size in bytes (strings and arrays are walked).
_STRING, _ARRAY = 8, 9
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_INT_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}
# Metadata kept in the index (small scalars that say what the file is).
_KEEP = ("general.architecture", "general.name", "general.file_type")


def looks_like_gguf(data: np.ndarray) -> bool:
    """Cheap sniff: the magic."""
    return data.size >= 24 and bytes(data[:4]) == MAGIC


class _Cursor:
    """Reads little-endian values from the mapped file, never past its end."""

    def __init__(self, data: np.ndarray):
        self.buf = memoryview(data).cast("B") if data.size else memoryview(b"")
        self.size = int(data.size)
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise GGUFError(
                f"{what} at byte {self.pos} runs past the end of the {self.size}-byte file"
            )

    def unpack(self, fmt: str, n: int, what: str) -> int:
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def string(self, what: str, limit: int | None = None) -> bytes | None:
        """Skip a string; return its bytes when it is at most ``limit`` long."""
        n = self.u64(f"length of {what}")
        self.need(n, what)
        start = self.pos
        self.pos += n
        if limit is not None and n <= limit:
            return bytes(self.buf[start : self.pos])
        return None


def _skip_value(cur: _Cursor, vtype: int, key: str, budget: list[int], depth: int = 0) -> None:
    """Move past one metadata value, checking every length against what remains."""
    if vtype in _SCALAR:
        cur.need(_SCALAR[vtype], f"value of {key!r}")
        cur.pos += _SCALAR[vtype]
    elif vtype == _STRING:
        cur.string(f"string value of {key!r}")
    elif vtype == _ARRAY:
        if depth >= MAX_DEPTH:
            raise GGUFError(f"metadata {key!r} nests arrays deeper than {MAX_DEPTH}")
        etype = cur.u32(f"array type of {key!r}")
        count = cur.u64(f"array length of {key!r}")
        if etype in _SCALAR:
            cur.need(count * _SCALAR[etype], f"array {key!r} of {count} items")
            cur.pos += count * _SCALAR[etype]
            return
        if etype not in (_STRING, _ARRAY):
            raise GGUFError(f"metadata {key!r} is an array of unknown type {etype}")
        # every string or nested array takes at least 8 (length) or 12 (type + length) bytes
        cur.need(count * (8 if etype == _STRING else 12), f"array {key!r} of {count} items")
        budget[0] -= count
        if budget[0] < 0:
            raise GGUFError(f"metadata holds more than {MAX_ITEMS} strings or arrays")
        for _ in range(count):
            _skip_value(cur, etype, key, budget, depth + 1)
    else:
        raise GGUFError(f"metadata {key!r} has unknown value type {vtype}")


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[int, dict[str, Any]]:
    """Walk the key/value pairs; return the alignment and the few values worth keeping."""
    alignment = DEFAULT_ALIGNMENT
    kept: dict[str, Any] = {}
    budget = [MAX_ITEMS]
    for i in range(n_kv):
        raw_key = cur.string(f"key {i}", MAX_NAME)
        if raw_key is None:
            raise GGUFError(f"key {i} is longer than {MAX_NAME} bytes")
        key = raw_key.decode("utf-8", "replace")
        vtype = cur.u32(f"type of {key!r}")
        if key == "general.alignment":
            if vtype not in _INT_FMT:
                raise GGUFError(f"general.alignment has non-integer type {vtype}")
            alignment = cur.unpack(_INT_FMT[vtype], _SCALAR[vtype], "general.alignment")
            if not 0 < alignment <= MAX_ALIGNMENT or alignment % 8:
                raise GGUFError(f"general.alignment {alignment} is not a multiple of 8 up to 1 MiB")
        elif key in _KEEP and vtype == _STRING:
            s = cur.string(key, 256)
            if s is not None:
                kept[key] = s.decode("utf-8", "replace")
        elif key in _KEEP and vtype in _INT_FMT:
            kept[key] = cur.unpack(_INT_FMT[vtype], _SCALAR[vtype], key)
        else:
            _skip_value(cur, vtype, key, budget)
    return alignment, kept


@dataclass(frozen=True)
class GGUFHeader:
    """What ``zipmodel export`` keeps of a GGUF source's header: the key/value pairs as their
    bytes (copied verbatim into the new file), their count, the alignment and the tensor
    names in the order of the tensor infos."""

    version: int
    kv_count: int
    kv_bytes: bytes
    alignment: int
    tensor_names: tuple[str, ...]


def read_header(data: np.ndarray) -> GGUFHeader:
    """The header of a GGUF file (``data``: at least its bytes up to the tensor data, uint8),
    checked as :func:`read_gguf` checks it."""
    cur = _Cursor(data)
    cur.need(24, "the GGUF header")
    if bytes(cur.buf[:4]) != MAGIC:
        raise GGUFError("no GGUF magic")
    cur.pos = 4
    version = cur.u32("version")
    if version not in VERSIONS:
        raise GGUFError(f"GGUF version {version} is not supported")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    if n_kv * 13 > cur.size - cur.pos or n_tensors * 24 > cur.size - cur.pos:
        raise GGUFError("the header's counts cannot fit in its bytes")
    start = cur.pos
    alignment, _ = _read_metadata(cur, n_kv)
    kv = bytes(cur.buf[start : cur.pos])
    names = []
    for i in range(n_tensors):
        raw = cur.string(f"name of tensor {i}", MAX_NAME)
        if raw is None:
            raise GGUFError(f"name of tensor {i} is longer than {MAX_NAME} bytes")
        n_dims = cur.u32("rank")
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {i} has {n_dims} dimensions, more than {MAX_DIMS}")
        cur.need(8 * n_dims + 12, "a tensor info")
        cur.pos += 8 * n_dims + 12
        names.append(raw.decode("utf-8", "replace"))
    return GGUFHeader(version, n_kv, kv, alignment, tuple(names))


def read_gguf(data: np.ndarray) -> Layout:
    """Parse the header of the GGUF file held in ``data`` (uint8).

    Raises :class:`GGUFError` naming the first problem; the caller decides whether to fall
    back to opaque bytes.
    """
    size = int(data.size)
    cur = _Cursor(data)
    cur.need(24, "the GGUF header")
    if bytes(cur.buf[:4]) != MAGIC:
        raise GGUFError("no GGUF magic")
    cur.pos = 4
    version = cur.u32("version")
    if version not in VERSIONS:
        hint = " (big-endian files are not read)" if version >= 1 << 16 else ""
        raise GGUFError(f"GGUF version {version} is not supported{hint}")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("metadata count")
    # the smallest key/value takes 13 bytes, the smallest tensor info 24: bound both counts
    # by the file before looping over them
    if n_kv * 13 > size - cur.pos:
        raise GGUFError(f"{n_kv} metadata entries cannot fit in a {size}-byte file")
    if n_tensors * 24 > size - cur.pos:
        raise GGUFError(f"{n_tensors} tensor infos cannot fit in a {size}-byte file")
    alignment, kept = _read_metadata(cur, n_kv)

    infos = []
    for i in range(n_tensors):
        raw_name = cur.string(f"name of tensor {i}", MAX_NAME)
        if raw_name is None:
            raise GGUFError(f"name of tensor {i} is longer than {MAX_NAME} bytes")
        name = raw_name.decode("utf-8", "replace")
        n_dims = cur.u32(f"rank of {name!r}")
        if n_dims > MAX_DIMS:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions, more than {MAX_DIMS}")
        dims = [cur.u64(f"a dimension of {name!r}") for _ in range(n_dims)]
        gtype = cur.u32(f"type of {name!r}")
        offset = cur.u64(f"offset of {name!r}")
        infos.append((name, dims, gtype, offset))
    data_start = -(-cur.pos // alignment) * alignment
    if data_start > size:
        raise GGUFError(f"data section starts at {data_start}, past the end of the file")

    tensors: list[Segment] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for name, dims, gtype, offset in infos:
        if offset % alignment:
            raise GGUFError(f"tensor {name!r} at offset {offset} is not {alignment}-aligned")
        n = 1
        for d in dims:
            n *= d
            if n > size * 8:  # no type stores more than 8 elements per byte (IQ1: 1.56 bits)
                raise GGUFError(f"tensor {name!r} has {dims} elements, more than the file holds")
        known = GGML_TYPES.get(gtype)
        if known is None:  # size unknown: its bytes stay in a verbatim gap
            unknown.append(name)
            continue
        if name in seen:
            raise GGUFError(f"tensor name {name!r} appears twice")
        seen.add(name)
        dtype, block, block_bytes = known
        if (dims[0] if dims else 1) % block:
            raise GGUFError(f"tensor {name!r}: row of {dims[0]} is not whole {block}-blocks")
        nbytes = n // block * block_bytes
        begin = data_start + offset
        if begin + nbytes > size:
            raise GGUFError(
                f"tensor {name!r} spans [{begin}, {begin + nbytes}), past the end of the "
                f"{size}-byte file"
            )
        shape = tuple(reversed(dims))
        tensors.append(Segment(TENSOR, begin, nbytes, name, dtype, shape))
    tensors.sort(key=lambda s: (s.offset, s.size))

    segments: list[Segment] = []
    pos = 0
    for t in tensors:
        if t.offset < pos:
            raise GGUFError(f"tensor {t.name!r} overlaps the tensor before it")
        if t.offset > pos:
            segments.append(Segment(VERBATIM, pos, t.offset - pos))
        segments.append(t)
        pos = t.end
    if pos < size:
        segments.append(Segment(VERBATIM, pos, size - pos))
    meta: dict[str, Any] = {
        "version": version,
        "tensor_count": n_tensors,
        "metadata_count": n_kv,
        "alignment": alignment,
        "data_offset": data_start,
        **{k.removeprefix("general."): v for k, v in kept.items()},
    }
    if unknown:
        meta["unknown_type_tensors"] = len(unknown)
    return Layout("gguf", size, segments, metadata=meta)
