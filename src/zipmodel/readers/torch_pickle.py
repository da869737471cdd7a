"""The pickle side of the PyTorch reader: a symbolic stack machine that walks a pickle
opcode by opcode and builds inert placeholders (nothing is imported, looked up or called),
and the naming of the tensors it finds (see :mod:`zipmodel.readers.torch` for the formats).
"""

from __future__ import annotations

import pickletools
import struct
from dataclasses import dataclass, field
from typing import Any

from ..errors import TorchFormatError  # (defined there; importable from here)

__all__ = [
    "LEGACY_MAGIC",
    "LEGACY_PROTOCOL",
    "MAGIC_OP",
    "MAX_ENTRIES",
    "MAX_OPS",
    "MAX_PICKLE_BYTES",
    "STORAGE_TYPES",
    "TORCH_DTYPES",
    "PDict",
    "StorageRef",
    "TensorRec",
    "Unpickler",
    "clean_name",
    "name_tensors",
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
MAGIC_OP = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")  # LONG1, 10 bytes

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


def clean_name(s: str) -> str:
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


class Unpickler:
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


def name_tensors(root: Any) -> tuple[list[tuple[str, TensorRec]], bool]:
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
