"""PyTorch checkpoint reader (``.bin/.pt/.pth``): zip archives and the legacy pickle stream.

Neither torch nor ``pickle.load`` is used. The zip structures are parsed from the bytes, and
the pickles are walked opcode by opcode (:func:`pickletools.genops`) by a small symbolic stack
machine that builds inert placeholders: a ``GLOBAL`` becomes a :class:`Global` *name*, a
``REDUCE`` becomes a :class:`Call` *record* of a function and its arguments, and nothing is
ever imported, looked up or called. A hostile pickle can therefore cost parse time (bounded
by :data:`MAX_PICKLE_BYTES` and :data:`MAX_OPS`) but never run code.

**Zip** (``torch.save`` since 1.6): ``<archive>/data.pkl``, ``<archive>/data/<key>`` storages
(stored uncompressed, each aligned to 64 bytes by padding in the local header's extra field),
``byteorder``, ``version`` and friends. torch's writer (miniz) streams its entries, so every
local header has flag bit 3 set and is followed by a data descriptor; sizes come from the
central directory, and each descriptor is checked against it. Each storage's data becomes a
tensor segment named by its path in the zip (``archive/data/0``), shape ``(numel,)``;
everything else (local headers, padding, descriptors, the pickle, the central directory and
end records) stays verbatim. A storage whose element type is unknown is verbatim too.

**Legacy** (``_use_new_zipfile_serialization=False``): five pickles (magic number, protocol
version, sys info, the object, the sorted list of storage keys), then for each key an 8-byte
little-endian element count and the storage's bytes. The pickles and counts are verbatim;
each storage is a tensor segment named by its key.

Tensor views (``Layout.metadata["torch"]["tensors"]``): for every tensor rebuilt in the pickle
by ``torch._utils._rebuild_tensor_v2``/``_v3`` (and ``_rebuild_parameter``, ``_rebuild_qtensor``,
``_rebuild_from_type_v2``, ...), its state-dict name (the dict key path; ``_parameters``,
``_buffers`` and ``_modules`` of pickled ``nn.Module`` objects are skipped), storage key,
storage offset and stride (in elements), shape and dtype. Names are best effort; an exotic
structure loses names, never the layout.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dtypes import get_dtype
from ..errors import TorchFormatError  # (defined there; importable from here)
from .base import TENSOR, VERBATIM, Layout, Segment
from .torch_pickle import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    MAGIC_OP,
    MAX_ENTRIES,
    MAX_OPS,
    MAX_PICKLE_BYTES,
    STORAGE_TYPES,
    TORCH_DTYPES,
    PDict,
    StorageRef,
    Unpickler,
    clean_name,
    name_tensors,
)

__all__ = [
    "LEGACY_MAGIC",
    "MAX_OPS",
    "MAX_PICKLE_BYTES",
    "STORAGE_TYPES",
    "TORCH_DTYPES",
    "TorchFormatError",
    "looks_like_torch",
    "read_torch",
]

# ---------------------------------------------------------------------------------------
# Sniffing


def _legacy_magic(data: np.ndarray) -> bool:
    if data.size < 16 or data[0] != 0x80:
        return False
    head = data[:40].tobytes()
    return MAGIC_OP in head and head.index(MAGIC_OP) <= 24


def looks_like_torch(data: np.ndarray) -> bool:
    """A zip archive with a ``data.pkl`` entry, or a legacy torch pickle stream."""
    if data.size >= 30 and data[:4].tobytes() == b"PK\x03\x04":
        n = int(data[26]) | int(data[27]) << 8
        first = data[30 : 30 + n].tobytes()
        if first.endswith(b"data.pkl"):
            return True
        try:
            cd_off, cd_size, _ = _find_central_directory(data)
        except TorchFormatError:
            return False
        if cd_size > 64 << 20:
            return False
        return b"data.pkl" in data[cd_off : cd_off + cd_size].tobytes()
    return _legacy_magic(data)


# ---------------------------------------------------------------------------------------
# Zip


@dataclass
class _Entry:
    name: bytes
    method: int
    flags: int
    crc: int
    csize: int
    usize: int
    header: int  # local header offset
    data: int = 0  # first data byte
    end: int = 0  # after the data and its descriptor


def _zip64_extra(extra: bytes, need: list[str], vals: dict[str, int]) -> None:
    """Replace the 0xFFFFFFFF fields named in ``need`` from a zip64 extra field (id 1)."""
    p = 0
    while p + 4 <= len(extra):
        hid, hlen = struct.unpack_from("<HH", extra, p)
        body = extra[p + 4 : p + 4 + hlen]
        if hid == 1:
            q = 0
            for name in need:
                w = 4 if name == "disk" else 8
                if q + w > len(body):
                    raise TorchFormatError("zip64 extra field is too short")
                vals[name] = int.from_bytes(body[q : q + w], "little")
                q += w
            return
        p += 4 + hlen
    if need:
        raise TorchFormatError("zip entry needs a zip64 extra field and has none")


def _find_central_directory(data: np.ndarray) -> tuple[int, int, int]:
    """(offset, size, entry count) of the central directory, from the end records."""
    size = int(data.size)
    lo = max(0, size - (65535 + 22))
    tail = data[lo:].tobytes()
    i = tail.rfind(b"PK\x05\x06")
    while i >= 0:
        if i + 22 <= len(tail) and i + 22 + struct.unpack_from("<H", tail, i + 20)[0] <= len(tail):
            break
        i = tail.rfind(b"PK\x05\x06", 0, i)
    if i < 0:
        raise TorchFormatError("no zip end-of-central-directory record")
    eocd = lo + i
    disk, cd_disk, n_disk, n, cd_size, cd_off, _clen = struct.unpack_from("<HHHHIIH", tail, i + 4)
    if disk != 0 or cd_disk != 0 or n_disk != n:
        raise TorchFormatError("multi-disk zip archives are not supported")
    if 0xFFFF in (n,) or 0xFFFFFFFF in (cd_size, cd_off):
        loc = eocd - 20
        if loc < 0 or data[loc : loc + 4].tobytes() != b"PK\x06\x07":
            raise TorchFormatError("zip64 end-of-central-directory locator is missing")
        _d, z64, _t = struct.unpack_from("<IQI", data[loc + 4 : loc + 20].tobytes())
        if z64 + 56 > loc or data[z64 : z64 + 4].tobytes() != b"PK\x06\x06":
            raise TorchFormatError("zip64 end-of-central-directory record is missing")
        rec = data[z64 : z64 + 56].tobytes()
        (_sz, _vm, _vn, d1, d2, n_disk64, n64, cd_size, cd_off) = struct.unpack_from(
            "<QHHIIQQQQ", rec, 4
        )
        if d1 != 0 or d2 != 0 or n_disk64 != n64:
            raise TorchFormatError("multi-disk zip archives are not supported")
        n = n64
        limit = z64
    else:
        limit = eocd
    if cd_off + cd_size > limit:
        raise TorchFormatError(
            f"central directory [{cd_off}, {cd_off + cd_size}) runs past its end record at {limit}"
        )
    return cd_off, cd_size, n


def _zip_entries(data: np.ndarray) -> tuple[list[_Entry], int]:
    size = int(data.size)
    cd_off, cd_size, n = _find_central_directory(data)
    if n > MAX_ENTRIES or n * 46 > cd_size:
        raise TorchFormatError(f"central directory of {cd_size} bytes cannot hold {n} entries")
    cd = data[cd_off : cd_off + cd_size].tobytes()
    entries: list[_Entry] = []
    names: set[bytes] = set()
    p = 0
    for _ in range(n):
        if p + 46 > len(cd) or cd[p : p + 4] != b"PK\x01\x02":
            raise TorchFormatError(f"central directory entry at byte {cd_off + p} is invalid")
        (
            _vm,
            _vn,
            flags,
            method,
            _t,
            _d,
            crc,
            csize,
            usize,
            nlen,
            xlen,
            clen,
            disk,
            _ia,
            _ea,
            off,
        ) = struct.unpack_from("<HHHHHHIIIHHHHHII", cd, p + 4)
        name = cd[p + 46 : p + 46 + nlen]
        extra = cd[p + 46 + nlen : p + 46 + nlen + xlen]
        p += 46 + nlen + xlen + clen
        if p > len(cd):
            raise TorchFormatError("central directory entry runs past the directory")
        vals = {"usize": usize, "csize": csize, "offset": off, "disk": disk}
        need = [k for k in ("usize", "csize", "offset") if vals[k] == 0xFFFFFFFF]
        if disk == 0xFFFF:
            need.append("disk")
        _zip64_extra(extra, need, vals)
        if name in names:
            raise TorchFormatError(f"zip entry {name!r} appears twice")
        names.add(name)
        if flags & 1:
            raise TorchFormatError(f"zip entry {name!r} is encrypted")
        if method != 0:
            raise TorchFormatError(f"zip entry {name!r} is compressed (method {method})")
        if vals["csize"] != vals["usize"]:
            raise TorchFormatError(f"stored zip entry {name!r} has different sizes")
        entries.append(
            _Entry(name, method, flags, crc, vals["csize"], vals["usize"], vals["offset"])
        )

    for e in entries:
        h = e.header
        if h + 30 > cd_off or data[h : h + 4].tobytes() != b"PK\x03\x04":
            raise TorchFormatError(f"zip entry {e.name!r}: no local header at byte {h}")
        (_vn, flags, method, _t, _d, crc, csize, usize, nlen, xlen) = struct.unpack_from(
            "<HHHHHIIIHH", data[h + 4 : h + 30].tobytes()
        )
        lname = data[h + 30 : h + 30 + nlen].tobytes()
        extra = data[h + 30 + nlen : h + 30 + nlen + xlen].tobytes()
        if lname != e.name or method != e.method:
            raise TorchFormatError(
                f"zip entry {e.name!r}: local header disagrees with the directory"
            )
        e.data = h + 30 + nlen + xlen
        end = e.data + e.csize
        if end > cd_off:
            raise TorchFormatError(
                f"zip entry {e.name!r} [{e.data}, {end}) runs into the central directory at {cd_off}"
            )
        has64 = _has_extra(extra, 1)
        if flags & 8:
            e.end = _data_descriptor(data, end, e, has64, cd_off)
        else:
            vals = {"usize": usize, "csize": csize}
            _zip64_extra(extra, [k for k in ("usize", "csize") if vals[k] == 0xFFFFFFFF], vals)
            if (crc, vals["csize"], vals["usize"]) != (e.crc, e.csize, e.usize):
                raise TorchFormatError(
                    f"zip entry {e.name!r}: local header sizes disagree with the directory"
                )
            e.end = end
    ordered = sorted(entries, key=lambda e: e.header)
    for a, b in itertools.pairwise(ordered):
        if b.header < a.end:
            raise TorchFormatError(f"zip entries {a.name!r} and {b.name!r} overlap")
    if cd_off + cd_size > size:
        raise TorchFormatError("central directory runs past the end of the file")
    return entries, cd_off


def _has_extra(extra: bytes, hid: int) -> bool:
    p = 0
    while p + 4 <= len(extra):
        h, n = struct.unpack_from("<HH", extra, p)
        if h == hid:
            return True
        p += 4 + n
    return False


def _data_descriptor(data: np.ndarray, p: int, e: _Entry, has64: bool, limit: int) -> int:
    """Check the data descriptor at ``p`` against the directory; return the byte after it."""
    raw = data[p : min(p + 24, limit)].tobytes()
    sig = 4 if raw[:4] == b"PK\x07\x08" else 0
    for wide in (has64, not has64):
        w = 8 if wide else 4
        if len(raw) < sig + 4 + 2 * w:
            continue
        crc = int.from_bytes(raw[sig : sig + 4], "little")
        cs = int.from_bytes(raw[sig + 4 : sig + 4 + w], "little")
        us = int.from_bytes(raw[sig + 4 + w : sig + 4 + 2 * w], "little")
        if (crc, cs, us) == (e.crc, e.csize, e.usize):
            return p + sig + 4 + 2 * w
    raise TorchFormatError(f"zip entry {e.name!r}: data descriptor disagrees with the directory")


def _storage_dtype(
    ref: StorageRef, untyped: dict[str, set[str | None]]
) -> tuple[str | None, int, int]:
    """(segment dtype or None, stored bytes per numel unit, dtype itemsize)."""
    dtype, unit = STORAGE_TYPES.get(ref.type, (None, 0))
    if ref.type == "UntypedStorage":
        seen = untyped.get(ref.key, {"U8"})
        dtype = next(iter(seen)) if len(seen) == 1 else None
        width = 0
        if dtype is not None:
            d = get_dtype(dtype)
            width = d.itemsize if d is not None else 0
            if not width:
                dtype = None
        return dtype, 1, width
    return dtype, unit, unit


def _storage_segment(
    name: str, ref: StorageRef, offset: int, nbytes: int, up: Unpickler
) -> tuple[Segment, dict[str, Any]]:
    dtype, _unit, width = _storage_dtype(ref, up.untyped_dtypes)
    info: dict[str, Any] = {
        "type": ref.type,
        "location": clean_name(ref.location),
        "nbytes": nbytes,
    }
    if dtype is not None and width and nbytes % width == 0:
        # an empty storage has no segment (zero-size segments are dropped), only a dtype
        info.update(segment=name if nbytes else None, dtype=dtype, numel=nbytes // width)
        return Segment(TENSOR, offset, nbytes, name, dtype, (nbytes // width,)), info
    info.update(segment=None, dtype=None)
    return Segment(VERBATIM, offset, nbytes), info


def _tensor_table(
    root: Any, storages: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, str], bool]:
    found, cut = name_tensors(root)
    tensors: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, rec in found:
        name = clean_name(name)
        st = storages.get(rec.storage.key)
        entry = {
            "storage": clean_name(rec.storage.key),
            "offset": rec.offset,
            "shape": list(rec.shape),
            "stride": list(rec.stride),
            "dtype": rec.dtype,
        }
        if rec.torch_dtype:
            entry["torch_dtype"] = rec.torch_dtype
        if rec.kind != "tensor":
            entry["kind"] = rec.kind
        reason = None
        if st is None:
            reason = "storage not in the file"
        elif rec.itemsize and all(rec.shape):
            need = rec.offset + 1 + sum((s - 1) * t for s, t in zip(rec.shape, rec.stride))
            if need * rec.itemsize > st["nbytes"]:
                reason = f"view needs {need * rec.itemsize} bytes, storage has {st['nbytes']}"
        if reason:
            skipped[name] = reason
            continue
        if name in tensors:
            if tensors[name] == entry:
                continue
            k = 2
            while f"{name}#{k}" in tensors:
                k += 1
            name = f"{name}#{k}"
        tensors[name] = entry
    return tensors, skipped, cut


def _read_zip(data: np.ndarray) -> Layout:
    size = int(data.size)
    entries, _cd_off = _zip_entries(data)
    by_name = {e.name: e for e in entries}
    pkl = None
    for e in entries:  # directory order: torch writes data.pkl first
        if e.name.endswith(b"data.pkl"):
            prefix = e.name[: -len(b"data.pkl")]
            if prefix == b"" or (prefix.endswith(b"/") and prefix.count(b"/") == 1):
                pkl = e
                break
    if pkl is None:
        raise TorchFormatError("zip archive has no <archive>/data.pkl entry")
    prefix = pkl.name[: -len(b"data.pkl")]

    byteorder = "little"
    bo = by_name.get(prefix + b"byteorder")
    if bo is not None and bo.csize <= 16:
        byteorder = data[bo.data : bo.data + bo.csize].tobytes().decode("ascii", "replace").strip()

    up = Unpickler(memoryview(data))
    root, _ = up.load(pkl.data, pkl.data + pkl.csize)

    tensor_segs: list[Segment] = []
    storages: dict[str, dict[str, Any]] = {}
    for key, ref in up.storages.items():
        try:
            ename = prefix + b"data/" + key.encode("utf-8", "surrogatepass")
        except UnicodeEncodeError:
            raise TorchFormatError(f"storage key {key!r} is not encodable") from None
        e = by_name.get(ename)
        if e is None:
            raise TorchFormatError(
                f"storage {key!r} has no zip entry {ename.decode('utf-8', 'replace')!r}"
            )
        unit = STORAGE_TYPES.get(ref.type, (None, 0))[1]
        if unit and ref.numel * unit != e.csize:
            raise TorchFormatError(
                f"storage {key!r}: {ref.type} × {ref.numel} needs {ref.numel * unit} bytes, "
                f"its entry holds {e.csize}"
            )
        seg_name = clean_name(ename.decode("utf-8", "surrogateescape"))
        seg, info = _storage_segment(seg_name, ref, e.data, e.csize, up)
        if byteorder != "little" and seg.kind == TENSOR:
            seg = Segment(VERBATIM, e.data, e.csize)
            info.update(segment=None)
        storages[clean_name(key)] = info
        if seg.kind == TENSOR and seg.size:
            tensor_segs.append(seg)

    tensor_segs.sort(key=lambda s: s.offset)
    segments: list[Segment] = []
    pos = 0
    for t in tensor_segs:
        if t.offset > pos:
            segments.append(Segment(VERBATIM, pos, t.offset - pos))
        segments.append(t)
        pos = t.end
    if pos < size:
        segments.append(Segment(VERBATIM, pos, size - pos))

    tensors, skipped, cut = _tensor_table(root, storages)
    meta: dict[str, Any] = {
        "format": "zip",
        "archive": clean_name(prefix.rstrip(b"/").decode("utf-8", "surrogateescape")),
        "byteorder": clean_name(byteorder),
        "storages": storages,
        "tensors": tensors,
    }
    if skipped:
        meta["skipped_tensors"] = skipped
    if cut:
        meta["names_truncated"] = True
    return Layout("torch-zip", size, segments, metadata={"torch": meta})


# ---------------------------------------------------------------------------------------
# Legacy


def _read_legacy(data: np.ndarray) -> Layout:
    size = int(data.size)
    up = Unpickler(memoryview(data))
    magic, p1 = up.load(0, size)
    if magic != LEGACY_MAGIC:
        raise TorchFormatError("not a legacy torch file (wrong magic number)")
    proto, p2 = up.load(p1, size)
    if proto != LEGACY_PROTOCOL:
        raise TorchFormatError(f"legacy protocol version {proto!r} is not supported")
    sysinfo, p3 = up.load(p2, size)
    little = True
    if isinstance(sysinfo, PDict):
        for k, v in sysinfo.items:
            if k == "little_endian" and v is False:
                little = False
    root, p4 = up.load(p3, size)
    keys, p5 = up.load(p4, size)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchFormatError("the storage key list is not a list of strings")

    segments = [Segment(VERBATIM, 0, p5)]
    storages: dict[str, dict[str, Any]] = {}
    pos = p5
    for key in keys:
        ref = up.storages.get(key)
        if ref is None:
            raise TorchFormatError(f"storage {key!r} is listed but no tensor uses it")
        unit = STORAGE_TYPES.get(ref.type, (None, 0))[1]
        if not unit:
            raise TorchFormatError(f"storage {key!r} has unknown type {ref.type}")
        if pos + 8 > size:
            raise TorchFormatError(f"storage {key!r}: truncated at byte {pos}")
        (count,) = struct.unpack_from("<q", data[pos : pos + 8].tobytes())
        if count != ref.numel:
            raise TorchFormatError(
                f"storage {key!r} holds {count} elements, the pickle says {ref.numel}"
            )
        nbytes = count * unit
        if pos + 8 + nbytes > size:
            raise TorchFormatError(
                f"storage {key!r} ({nbytes} bytes at {pos + 8}) runs past the end of the file"
            )
        segments.append(Segment(VERBATIM, pos, 8))
        seg, info = _storage_segment(clean_name(key), ref, pos + 8, nbytes, up)
        if not little and seg.kind == TENSOR:
            seg = Segment(VERBATIM, pos + 8, nbytes)
            info.update(segment=None)
        storages[clean_name(key)] = info
        segments.append(seg)
        pos += 8 + nbytes
    if pos < size:
        segments.append(Segment(VERBATIM, pos, size - pos))
    # merge neighbouring verbatim runs (counts and verbatim storages)
    merged: list[Segment] = []
    for s in segments:
        if not s.size:
            continue
        if merged and s.kind == VERBATIM and merged[-1].kind == VERBATIM:
            merged[-1] = Segment(VERBATIM, merged[-1].offset, merged[-1].size + s.size)
        else:
            merged.append(s)

    tensors, skipped, cut = _tensor_table(root, storages)
    meta: dict[str, Any] = {
        "format": "legacy",
        "byteorder": "little",
        "storages": storages,
        "tensors": tensors,
    }
    if skipped:
        meta["skipped_tensors"] = skipped
    if cut:
        meta["names_truncated"] = True
    return Layout("torch-legacy", size, merged, metadata={"torch": meta})


def read_torch(data: np.ndarray) -> Layout:
    """Describe the PyTorch checkpoint held in ``data`` (uint8) as segments.

    Raises :class:`TorchFormatError` naming the first problem; the caller decides whether to
    fall back to opaque bytes.
    """
    if data.size >= 4 and data[:4].tobytes() == b"PK\x03\x04":
        return _read_zip(data)
    if _legacy_magic(data):
        return _read_legacy(data)
    raise TorchFormatError("neither a torch zip archive nor a legacy torch pickle")
