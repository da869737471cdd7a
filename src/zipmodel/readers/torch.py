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
import pickletools
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import get_dtype
from ..errors import TorchFormatError  # (defined there; importable from here)
from .base import TENSOR, VERBATIM, Layout, Segment

__all__ = [
    "MAX_OPS",
    "MAX_PICKLE_BYTES",
    "STORAGE_TYPES",
    "TORCH_DTYPES",
    "TorchFormatError",
    "looks_like_torch",
    "read_torch",
]

MAX_PICKLE_BYTES = 512 << 20  # one pickle may not span more than this
MAX_OPS = 10_000_000  # opcodes per pickle (each allocates at most a small object)
MAX_ENTRIES = 10_000_000
MAX_RANK = 64
MAX_WALK = 2_000_000  # containers visited while naming tensors
MAX_DEPTH = 200
BIG_VALUE = 1 << 16  # str/bytes values longer than this are dropped after reading

# torch's legacy magic number (``torch.serialization.MAGIC_NUMBER``) and protocol version.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_MAGIC_OP = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")  # LONG1, 10 bytes

# Typed storage classes: (dtype in safetensors spelling or None, bytes per element).
# ``numel`` in a persistent id counts elements of this width (bytes for UntypedStorage).
STORAGE_TYPES: dict[str, tuple[str | None, int]] = {
    "DoubleStorage": ("F64", 8),
    "FloatStorage": ("F32", 4),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
    "ComplexFloatStorage": ("C64", 8),
    "ComplexDoubleStorage": (None, 16),
    "QInt8Storage": ("I8", 1),
    "QUInt8Storage": ("U8", 1),
    "QInt32Storage": ("I32", 4),
    "QUInt4x2Storage": ("U8", 1),
    "QUInt2x4Storage": ("U8", 1),
    "UntypedStorage": (None, 1),  # dtype from the tensors that view it (``_rebuild_tensor_v3``)
}
_STORAGE_MODULES = ("torch", "torch.cuda", "torch.storage")

# ``torch.<dtype>`` globals (``_rebuild_tensor_v3``'s dtype argument) → (name, itemsize).
TORCH_DTYPES: dict[str, tuple[str | None, int]] = {
    "float32": ("F32", 4),
    "float": ("F32", 4),
    "float64": ("F64", 8),
    "double": ("F64", 8),
    "float16": ("F16", 2),
    "half": ("F16", 2),
    "bfloat16": ("BF16", 2),
    "int64": ("I64", 8),
    "long": ("I64", 8),
    "int32": ("I32", 4),
    "int": ("I32", 4),
    "int16": ("I16", 2),
    "short": ("I16", 2),
    "int8": ("I8", 1),
    "uint8": ("U8", 1),
    "bool": ("BOOL", 1),
    "uint16": ("U16", 2),
    "uint32": ("U32", 4),
    "uint64": ("U64", 8),
    "float8_e4m3fn": ("F8_E4M3", 1),
    "float8_e5m2": ("F8_E5M2", 1),
    "float8_e8m0fnu": ("F8_E8M0", 1),
    "complex64": ("C64", 8),
    "cfloat": ("C64", 8),
    # known widths, no zipmodel dtype: their storages stay verbatim
    "float8_e4m3fnuz": (None, 1),
    "float8_e5m2fnuz": (None, 1),
    "float4_e2m1fn_x2": (None, 1),
    "complex128": (None, 16),
    "cdouble": (None, 16),
    "complex32": (None, 4),
    "chalf": (None, 4),
    "qint8": ("I8", 1),
    "quint8": ("U8", 1),
    "qint32": ("I32", 4),
}


# ---------------------------------------------------------------------------------------
# Inert values the symbolic unpickler builds


@dataclass(frozen=True)
class Global:
    """A ``GLOBAL``/``STACK_GLOBAL`` reference: a name, never imported."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(eq=False)
class Call:
    """``REDUCE``/``NEWOBJ``/``INST``/``OBJ``: what would have been called, and with what."""

    func: Any
    args: Any
    state: Any = None  # BUILD
    items: list = field(default_factory=list)  # SETITEM(S) on the result: (key, value) pairs
    listitems: list = field(default_factory=list)  # APPEND(S) on the result
    tensor: TensorRec | None = None


@dataclass(eq=False)
class PDict:
    """A pickled dict, kept as ordered pairs: keys are never hashed (no recursion, no eq)."""

    items: list = field(default_factory=list)


@dataclass(frozen=True)
class StorageRef:
    """A ``('storage', type, key, location, numel[, view])`` persistent id."""

    type: str  # storage class name, e.g. "FloatStorage"
    key: str
    location: str
    numel: int
    view_offset: int = 0  # legacy views: element offset into the root storage


@dataclass(eq=False)
class TensorRec:
    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str | None
    torch_dtype: str | None  # torch name when there is no zipmodel dtype (None when there is)
    itemsize: int
    kind: str = "tensor"  # "parameter" / "qtensor" where known


class _Opaque:
    """Anything the reader does not model (buffers, extension codes, non-storage ids)."""

    __slots__ = ()


OPAQUE = _Opaque()
_MARK = object()

_REBUILD = "torch._utils"
_TENSOR_FUNCS = {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_qtensor"}
_WRAP_FUNCS = {
    "_rebuild_parameter",
    "_rebuild_parameter_with_state",
    "_rebuild_device_tensor_from_cpu_tensor",
}
_TRANSPARENT = {"_parameters", "_buffers", "_modules"}


class _Reader:
    """The file-like object :func:`pickletools.genops` reads, over a window of the source."""

    def __init__(self, buf: memoryview, start: int, end: int):
        self.buf = buf
        self.pos = start
        self.start = start
        self.end = min(end, start + MAX_PICKLE_BYTES + 1)
        self.hard_end = end

    def _check(self) -> None:
        if self.pos - self.start > MAX_PICKLE_BYTES:
            raise TorchFormatError(f"a pickle is longer than {MAX_PICKLE_BYTES} bytes")

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = self.end - self.pos
        stop = min(self.end, self.pos + n)
        b = bytes(self.buf[self.pos : stop])
        self.pos = stop
        self._check()
        return b

    def readline(self) -> bytes:
        step = 256
        while True:
            stop = min(self.end, self.pos + step)
            chunk = bytes(self.buf[self.pos : stop])
            i = chunk.find(b"\n")
            if i >= 0:
                self.pos += i + 1
                return chunk[: i + 1]
            if stop >= self.end or step >= (1 << 20):
                self.pos = stop
                self._check()
                return chunk
            step *= 4

    def tell(self) -> int:
        return self.pos


def _text(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return None


def _clean(s: str) -> str:
    """A string JSON can carry as UTF-8 (lone surrogates from a hostile pickle escaped)."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _ints(v: Any) -> tuple[int, ...] | None:
    if isinstance(v, list):
        v = tuple(v)
    if not isinstance(v, tuple) or len(v) > MAX_RANK:
        return None
    if not all(type(d) is int and d >= 0 for d in v):
        return None
    return v


class _Unpickler:
    """Symbolic unpickler: records storages and tensor rebuilds, runs nothing."""

    def __init__(self, buf: memoryview):
        self.buf = buf
        self.storages: dict[str, StorageRef] = {}
        self.untyped_dtypes: dict[str, set[str | None]] = {}
        self.globals: set[str] = set()

    # -- persistent ids --------------------------------------------------------------------
    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) < 5 or _text(pid[0]) != "storage":
            return OPAQUE
        stype, key, location, numel = pid[1], _text(pid[2]), _text(pid[3]), pid[4]
        if not isinstance(stype, Global) or key is None or type(numel) is not int or numel < 0:
            return OPAQUE
        if stype.module not in _STORAGE_MODULES or stype.name not in STORAGE_TYPES:
            tname = f"{stype.module}.{stype.name}"
        else:
            tname = stype.name
        ref = StorageRef(tname, key, location or "", numel)
        prev = self.storages.setdefault(key, ref)
        if prev.type != ref.type or prev.numel != ref.numel:
            raise TorchFormatError(
                f"storage {key!r} is declared twice ({prev.type} × {prev.numel}, "
                f"{ref.type} × {ref.numel})"
            )
        view = pid[5] if len(pid) > 5 else None
        if isinstance(view, tuple) and len(view) == 3 and type(view[1]) is int:
            # legacy storage view: (view_key, element offset, element count) into the root
            return StorageRef(tname, key, location or "", numel, view_offset=max(view[1], 0))
        return prev

    # -- tensor rebuilds -------------------------------------------------------------------
    def rebuild(self, func: Global, args: Any) -> TensorRec | None:
        if not isinstance(args, tuple):
            return None
        name = func.name
        if func.module == _REBUILD and name in _WRAP_FUNCS:
            inner = args[0] if args else None
            if isinstance(inner, Call) and inner.tensor is not None:
                rec = inner.tensor
                if name != "_rebuild_device_tensor_from_cpu_tensor":
                    rec.kind = "parameter"
                return rec
            return None
        if func.module == "torch._tensor" and name in (
            "_rebuild_from_type_v2",
            "_rebuild_from_type",
        ):
            if len(args) >= 3 and isinstance(args[0], Global) and isinstance(args[2], tuple):
                return self.rebuild(args[0], args[2])
            return None
        if func.module != _REBUILD or name not in _TENSOR_FUNCS or len(args) < 4:
            return None
        storage, offset = args[0], args[1]
        shape, stride = _ints(args[2]), _ints(args[3])
        if not isinstance(storage, StorageRef) or type(offset) is not int or offset < 0:
            return None
        if shape is None or stride is None or len(shape) != len(stride):
            return None
        stype = STORAGE_TYPES.get(storage.type)
        torch_dtype = None
        if name == "_rebuild_tensor_v3":
            dt = args[6] if len(args) > 6 else None
            if not isinstance(dt, Global) or dt.module != "torch":
                return None
            dtype, itemsize = TORCH_DTYPES.get(dt.name, (None, 0))
            if dtype is None:
                torch_dtype = f"torch.{dt.name}"
            if storage.type == "UntypedStorage":
                self.untyped_dtypes.setdefault(storage.key, set()).add(dtype)
        elif stype is None:
            return None
        else:
            dtype, itemsize = stype
            if storage.type == "UntypedStorage":
                dtype = "U8"
                self.untyped_dtypes.setdefault(storage.key, set()).add(dtype)
            elif dtype is None:
                torch_dtype = f"torch.{storage.type}"
        if storage.view_offset and stype is not None:
            offset += storage.view_offset * stype[1] // max(itemsize, 1)
        kind = "qtensor" if name == "_rebuild_qtensor" else "tensor"
        return TensorRec(storage, offset, shape, stride, dtype, torch_dtype, itemsize, kind)

    # -- the stack machine -----------------------------------------------------------------
    def load(self, start: int, end: int) -> tuple[Any, int]:
        """Interpret the pickle at ``[start, end)``; return its value and where it stopped."""
        reader = _Reader(self.buf, start, end)
        stack: list = []
        metastack: list = []
        memo: dict = {}
        result: Any = OPAQUE
        nops = 0

        def pop_mark() -> list:
            nonlocal stack
            items = stack
            stack = metastack.pop()
            return items

        try:
            for op, arg, _pos in pickletools.genops(reader):
                nops += 1
                if nops > MAX_OPS:
                    raise TorchFormatError(f"a pickle has more than {MAX_OPS} opcodes")
                n = op.name
                if n in ("PROTO", "FRAME"):
                    continue
                if n == "STOP":
                    result = stack.pop()
                    break
                if n == "MARK":
                    metastack.append(stack)
                    stack = []
                elif n == "POP":
                    if stack:
                        stack.pop()
                    else:
                        pop_mark()
                elif n == "POP_MARK":
                    pop_mark()
                elif n == "DUP":
                    stack.append(stack[-1])
                elif n in ("NONE",):
                    stack.append(None)
                elif n == "NEWTRUE":
                    stack.append(True)
                elif n == "NEWFALSE":
                    stack.append(False)
                elif n in ("EMPTY_LIST",):
                    stack.append([])
                elif n in ("EMPTY_DICT",):
                    stack.append(PDict())
                elif n == "EMPTY_TUPLE":
                    stack.append(())
                elif n == "EMPTY_SET":
                    stack.append([])
                elif n == "LIST":
                    stack.append(pop_mark())
                elif n in ("TUPLE", "FROZENSET"):
                    items = pop_mark()
                    stack.append(tuple(items) if n == "TUPLE" else items)
                elif n in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    k = int(n[-1])
                    if len(stack) < k:
                        raise IndexError("stack underflow")
                    t = tuple(stack[-k:])
                    del stack[-k:]
                    stack.append(t)
                elif n == "DICT":
                    items = pop_mark()
                    stack.append(PDict(list(zip(items[::2], items[1::2]))))
                elif n == "APPEND":
                    v = stack.pop()
                    self._extend(stack[-1], [v])
                elif n == "APPENDS" or n == "ADDITEMS":
                    items = pop_mark()
                    self._extend(stack[-1], items)
                elif n == "SETITEM":
                    v = stack.pop()
                    k = stack.pop()
                    self._setitems(stack[-1], [(k, v)])
                elif n == "SETITEMS":
                    items = pop_mark()
                    self._setitems(stack[-1], list(zip(items[::2], items[1::2])))
                elif n in ("GET", "BINGET", "LONG_BINGET"):
                    if arg not in memo:
                        raise TorchFormatError(f"pickle reads memo slot {arg} before setting it")
                    stack.append(memo[arg])
                elif n in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = stack[-1]
                elif n == "MEMOIZE":
                    memo[len(memo)] = stack[-1]
                elif n in ("GLOBAL", "INST"):
                    module, _, name = str(arg).partition(" ")
                    g = Global(module, name)
                    self.globals.add(str(g))
                    if n == "GLOBAL":
                        stack.append(g)
                    else:
                        stack.append(Call(g, tuple(pop_mark())))
                elif n == "STACK_GLOBAL":
                    name = stack.pop()
                    module = stack.pop()
                    g = Global(_text(module) or "?", _text(name) or "?")
                    self.globals.add(str(g))
                    stack.append(g)
                elif n in ("EXT1", "EXT2", "EXT4"):
                    stack.append(Global("<extension>", str(arg)))
                elif n == "REDUCE":
                    args = stack.pop()
                    func = stack.pop()
                    stack.append(self._call(func, args))
                elif n == "NEWOBJ":
                    args = stack.pop()
                    cls = stack.pop()
                    stack.append(Call(cls, args))
                elif n == "NEWOBJ_EX":
                    stack.pop()  # kwargs
                    args = stack.pop()
                    cls = stack.pop()
                    stack.append(Call(cls, args))
                elif n == "OBJ":
                    items = pop_mark()
                    if not items:
                        raise IndexError("OBJ without a class")
                    stack.append(Call(items[0], tuple(items[1:])))
                elif n == "BUILD":
                    state = stack.pop()
                    target = stack[-1]
                    if isinstance(target, Call):
                        target.state = state
                elif n == "PERSID":
                    stack.append(self.persistent_load(arg))
                elif n == "BINPERSID":
                    stack.append(self.persistent_load(stack.pop()))
                elif n == "NEXT_BUFFER":
                    stack.append(OPAQUE)
                elif n == "READONLY_BUFFER":
                    pass
                elif op.stack_before == [] and len(op.stack_after) == 1:
                    # a literal: ints, floats, strings, bytes
                    if isinstance(arg, (str, bytes, bytearray)) and len(arg) > BIG_VALUE:
                        arg = OPAQUE
                    stack.append(arg)
                else:
                    raise TorchFormatError(f"unsupported pickle opcode {n}")
            else:
                raise TorchFormatError("pickle ends without STOP")
        except TorchFormatError:
            raise
        except (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error) as e:
            raise TorchFormatError(f"malformed pickle at byte {reader.pos}: {e}") from None
        except RecursionError:
            raise TorchFormatError(f"pickle nests too deeply (at byte {reader.pos})") from None
        return result, reader.pos

    def _call(self, func: Any, args: Any) -> Call:
        c = Call(func, args)
        if isinstance(func, Global):
            if (func.module == "collections" and func.name == "OrderedDict") or (
                func.module in ("builtins", "__builtin__") and func.name == "dict"
            ):
                # OrderedDict([(k, v), ...]) — the items given as the argument
                if isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], list):
                    c.items = [p for p in args[0] if isinstance(p, tuple) and len(p) == 2]
            else:
                c.tensor = self.rebuild(func, args)
        return c

    @staticmethod
    def _extend(target: Any, items: list) -> None:
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, Call):
            target.listitems.extend(items)

    @staticmethod
    def _setitems(target: Any, pairs: list) -> None:
        if isinstance(target, (PDict, Call)):
            target.items.extend(pairs)


# ---------------------------------------------------------------------------------------
# Naming: walk the unpickled structure, collecting tensors under their dict-key paths


def _key_text(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, bool) or k is None or isinstance(k, (int, float)):
        return str(k)
    if isinstance(k, bytes):
        return k.decode("latin-1")
    if isinstance(k, Global):
        return str(k)
    return "?"


def _name_tensors(root: Any) -> tuple[list[tuple[str, TensorRec]], bool]:
    """Every (name, tensor) reachable from ``root``; and whether the walk was cut short.

    Each container is walked once (the first path that reaches it names what it holds), so
    shared or cyclic structures cost their size, not their number of paths; a tensor is a
    leaf and is recorded under every name that reaches it (tied weights).
    """
    found: list[tuple[str, TensorRec]] = []
    seen: set[int] = set()
    budget = MAX_WALK
    cut = False
    todo: list = [(root, (), 0)]  # explicit stack of (value, path, depth)
    while todo:
        v, path, depth = todo.pop()
        if isinstance(v, Call) and v.tensor is not None:
            found.append((".".join(path) if path else "tensor", v.tensor))
            continue
        if not isinstance(v, (Call, PDict, list, tuple)) or id(v) in seen:
            continue
        budget -= 1
        if budget < 0 or depth >= MAX_DEPTH:
            cut = True
            if budget < 0:
                break
            continue
        seen.add(id(v))
        kids: list = []
        if isinstance(v, Call):
            st = v.state
            if isinstance(st, tuple) and len(st) == 2:  # (dict state, slot state)
                kids.extend((part, path) for part in st)
            elif st is not None:
                kids.append((st, path))
            kids.extend((x, (*path, _key_text(k))) for k, x in v.items)
            kids.extend((x, (*path, str(i))) for i, x in enumerate(v.listitems))
            a = v.args
            if isinstance(a, tuple):
                if len(a) == 1:
                    kids.append((a[0], path))
                else:
                    kids.extend((x, (*path, str(i))) for i, x in enumerate(a))
        elif isinstance(v, PDict):
            for k, x in v.items:
                kt = _key_text(k)
                kids.append((x, path if kt in _TRANSPARENT else (*path, kt)))
        else:
            kids.extend((x, (*path, str(i))) for i, x in enumerate(v))
        todo.extend((x, p, depth + 1) for x, p in reversed(kids))
    return found, cut


# ---------------------------------------------------------------------------------------
# Sniffing


def _legacy_magic(data: np.ndarray) -> bool:
    if data.size < 16 or data[0] != 0x80:
        return False
    head = data[:40].tobytes()
    return _MAGIC_OP in head and head.index(_MAGIC_OP) <= 24


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
    name: str, ref: StorageRef, offset: int, nbytes: int, up: _Unpickler
) -> tuple[Segment, dict[str, Any]]:
    dtype, _unit, width = _storage_dtype(ref, up.untyped_dtypes)
    info: dict[str, Any] = {"type": ref.type, "location": _clean(ref.location), "nbytes": nbytes}
    if dtype is not None and width and nbytes % width == 0:
        # an empty storage has no segment (zero-size segments are dropped), only a dtype
        info.update(segment=name if nbytes else None, dtype=dtype, numel=nbytes // width)
        return Segment(TENSOR, offset, nbytes, name, dtype, (nbytes // width,)), info
    info.update(segment=None, dtype=None)
    return Segment(VERBATIM, offset, nbytes), info


def _tensor_table(
    root: Any, storages: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, str], bool]:
    found, cut = _name_tensors(root)
    tensors: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, rec in found:
        name = _clean(name)
        st = storages.get(rec.storage.key)
        entry = {
            "storage": _clean(rec.storage.key),
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

    up = _Unpickler(memoryview(data))
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
        seg_name = _clean(ename.decode("utf-8", "surrogateescape"))
        seg, info = _storage_segment(seg_name, ref, e.data, e.csize, up)
        if byteorder != "little" and seg.kind == TENSOR:
            seg = Segment(VERBATIM, e.data, e.csize)
            info.update(segment=None)
        storages[_clean(key)] = info
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
        "archive": _clean(prefix.rstrip(b"/").decode("utf-8", "surrogateescape")),
        "byteorder": _clean(byteorder),
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
    up = _Unpickler(memoryview(data))
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
        seg, info = _storage_segment(_clean(key), ref, pos + 8, nbytes, up)
        if not little and seg.kind == TENSOR:
            seg = Segment(VERBATIM, pos + 8, nbytes)
            info.update(segment=None)
        storages[_clean(key)] = info
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
