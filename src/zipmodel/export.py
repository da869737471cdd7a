"""Export a container to a format other tools load directly: ``zipmodel export X.zm --to gguf``.

GGUF (llama.cpp), written here byte by byte (version 3, little-endian):

* a tensor a ggml stage stored (``--lossy q4_k`` ...) is written as its stored blocks,
  verbatim (read out of the container, never quantized again), with its ggml type;
* a tensor of a GGUF source that was already block-quantized keeps its blocks and type;
* every other tensor is written in its stored dtype (what ``zipmodel decompress`` restores:
  dequantized for the other lossy stages): F32, F16, BF16, F64, I8, I16, I32, I64 as they
  are; types GGUF lacks as the nearest type that holds every value exactly: U8 -> I16,
  U16 -> I32, U32 -> I64, U64 -> I64 (refused above 2^63 - 1), BOOL -> I8, FP8 -> F32;
* metadata: a GGUF source keeps its key/value pairs byte for byte (architecture, tokenizer,
  hyperparameters: llama.cpp can run the result) and its tensor order. Any other source gets
  minimal metadata: ``general.name``, ``general.quantization_version`` and where it came
  from, but no ``general.architecture`` -- llama.cpp needs that and the architecture's
  hyperparameters, which only a GGUF source (or llama.cpp's ``convert_hf_to_gguf.py``)
  provides. The result still opens in ``gguf.GGUFReader`` and any GGUF tool.

Every exported tensor dequantizes (``gguf.quants.dequantize``) to exactly what
``zipmodel decompress`` restores, after casting to the original dtype (tests/test_export.py).
The output is written atomically; before it is renamed into place it is opened with the
``gguf`` package's reader and its tensors' names, types and shapes checked.
The ``gguf`` package (``pip install 'zipmodel[gguf]'``) is imported here only.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_output
from .dtypes import numpy_dtype
from .errors import MissingDependencyError, UnsupportedError, ZipmodelError
from .formats import SUFFIX
from .readers.base import TENSOR
from .readers.gguf import read_header
from .stages import get_stage
from .stages.ggml import GgmlStage
from .zmfile import ZmFile

__all__ = ["EXPORT_FORMATS", "ExportReport", "default_export_output", "export_file"]

EXPORT_FORMATS = ("gguf",)
ALIGNMENT = 32  # GGUF's default (a GGUF source's general.alignment is kept)
MAX_DIMS = 4  # GGML_MAX_DIMS
_PLAIN = ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64")
# dtypes GGUF lacks -> the GGUF type that holds every value exactly
_WIDEN = {
    "U8": "I16",
    "U16": "I32",
    "U32": "I64",
    "U64": "I64",
    "BOOL": "I8",
    "F8_E4M3": "F32",
    "F8_E5M2": "F32",
    "F8_E8M0": "F32",
}
_NUMPY_OF = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F32": "<f4"}
# GGUF metadata value types
_UINT32, _STRING = 4, 8


@dataclass
class ExportReport:
    """What :func:`export_file` wrote."""

    input: str
    output: str
    format: str
    tensors: int
    types: dict[str, int]  # ggml type name -> tensors written in it
    metadata: str  # "source" (a GGUF source's, kept) or "minimal"
    output_bytes: int
    seconds: float
    converted: dict[str, str] = field(default_factory=dict)  # tensor -> "U8 -> I16", ...

    def to_json(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "format": self.format,
            "tensors": self.tensors,
            "types": dict(self.types),
            "metadata": self.metadata,
            "output_bytes": self.output_bytes,
            "seconds": round(self.seconds, 6),
            "converted": dict(self.converted),
        }


@dataclass
class _Tensor:
    name: str
    index: int  # segment index in the container
    ggml: str  # ggml type name (gguf-py's GGMLQuantizationType member)
    dims: tuple[int, ...]  # GGUF order: innermost first
    nbytes: int
    how: str  # "blocks" (a ggml stage's part), "raw" (stored bytes), "cast" (widened)
    dtype: str  # the container's dtype of the tensor


def default_export_output(src: str | os.PathLike, to: str = "gguf") -> Path:
    """``model.safetensors.zm`` -> ``model.gguf`` (next to the container)."""
    p = Path(src)
    stem = p.name.removesuffix(SUFFIX)
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return p.with_name(f"{stem or p.name}.{to}")


def _gguf():
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError(
            "zipmodel export --to gguf needs the gguf package",
            hint="pip install 'zipmodel[gguf]'",
        ) from None
    return gguf


def _plan(f: ZmFile, gguf) -> list[_Tensor]:
    idx = f.index
    out = []
    for i, e in enumerate(idx.segments):
        s = e.segment
        if s.kind != TENSOR:
            continue
        shape = tuple(int(d) for d in (s.shape or ()))
        if len(shape) > MAX_DIMS:
            raise UnsupportedError(
                f"tensor {s.name!r} has {len(shape)} dimensions; GGUF holds at most {MAX_DIMS}",
                path=f.name,
            )
        dims = tuple(reversed(shape)) or (1,)
        ref = idx.segments[e.dup_of] if e.dup_of is not None else e
        cls = None
        if ref.stage is not None:
            cls = get_stage(ref.stage.name)
        dtype = s.dtype or ""
        n = int(np.prod(dims, dtype=np.int64))
        if isinstance(cls, type) and issubclass(cls, GgmlStage):
            ggml, how = cls.qtype.upper(), "blocks"
        elif dtype.startswith("GGUF_"):
            ggml, how = dtype.removeprefix("GGUF_"), "raw"
        elif dtype in _PLAIN:
            ggml, how = dtype, "raw"
        elif dtype in _WIDEN:
            ggml, how = _WIDEN[dtype], "cast"
        else:
            raise UnsupportedError(
                f"tensor {s.name!r} is {dtype}, which GGUF cannot hold exactly", path=f.name
            )
        try:
            qt = gguf.GGMLQuantizationType[ggml]
        except KeyError:
            raise UnsupportedError(
                f"tensor {s.name!r}: this gguf package has no ggml type {ggml}",
                path=f.name,
                hint="pip install -U gguf",
            ) from None
        block, block_bytes = gguf.GGML_QUANT_SIZES[qt]
        if dims[0] % block:
            raise UnsupportedError(
                f"tensor {s.name!r}: rows of {dims[0]} are not whole {ggml} blocks", path=f.name
            )
        out.append(_Tensor(s.name or "", i, ggml, dims, n // block * block_bytes, how, dtype))
    return out


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def _minimal_kv(f: ZmFile) -> tuple[int, bytes]:
    """general.name, general.quantization_version (ggml's block layout version, 2) and the
    source's name and format; no general.architecture (see the module doc)."""
    src = f.source
    name = str(src.get("name") or Path(f.name).name.removesuffix(SUFFIX))
    pairs = [
        ("general.name", _STRING, _string(name.rsplit(".", 1)[0] if "." in name else name)),
        ("general.quantization_version", _UINT32, struct.pack("<I", 2)),
        ("zipmodel.source.name", _STRING, _string(name)),
        ("zipmodel.source.format", _STRING, _string(str(src.get("format", "")))),
    ]
    kv = b"".join(_string(k) + struct.pack("<I", t) + v for k, t, v in pairs)
    return len(pairs), kv


def _tensor_bytes(f: ZmFile, t: _Tensor) -> np.ndarray:
    if t.how == "blocks":
        return f.get_part(t.name, "blocks")
    raw = f.get_segment(t.index)
    if t.how == "raw":
        return raw
    a = raw.view(numpy_dtype(t.dtype))
    if t.dtype == "U64" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise UnsupportedError(f"tensor {t.name!r}: a U64 value above 2^63 - 1 has no GGUF type")
    with np.errstate(invalid="ignore"):
        return np.ascontiguousarray(a.astype(_NUMPY_OF[t.ggml])).reshape(-1).view(np.uint8)


def export_file(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    *,
    to: str = "gguf",
    force: bool = False,
    threads: int = 0,
    base: str | os.PathLike | None = None,
) -> ExportReport:
    """Write the container ``src`` as a ``to`` file (``gguf``) at ``dst`` (default:
    :func:`default_export_output`); see the module doc for what is written. Raises
    ``ValueError`` for an unknown ``to``, :class:`~zipmodel.errors.ZipmodelError` for a
    container without tensors, ``OutputExistsError`` for an existing ``dst`` without
    ``force``. ``base``: the base model a ``--base`` container needs (docs/delta.md)."""
    if to not in EXPORT_FORMATS:
        raise ValueError(f"cannot export to {to!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    gguf = _gguf()
    t0 = time.perf_counter()
    dst = Path(dst) if dst is not None else default_export_output(src, to)
    with ZmFile(src, threads=threads, base=base) as f:
        tensors = _plan(f, gguf)
        if not tensors:
            raise ZipmodelError(
                "the container holds no tensors: nothing to export",
                path=f.name,
                hint="export needs a container of a model file (safetensors, GGUF, ...)",
            )
        meta = f.index.metadata or {}
        if f.source.get("format") == "gguf":
            if meta.get("unknown_type_tensors"):
                raise UnsupportedError(
                    f"the GGUF source has {meta['unknown_type_tensors']} tensors of ggml types "
                    "this zipmodel does not know (stored as bytes): they cannot be exported",
                    path=f.name,
                    hint="pip install -U zipmodel",
                )
            head = read_header(f.get_segment(0))
            n_kv, kv, alignment, kind = head.kv_count, head.kv_bytes, head.alignment, "source"
            order = {n: k for k, n in enumerate(head.tensor_names)}
            tensors.sort(key=lambda t: order.get(t.name, len(order)))
        else:
            (n_kv, kv), alignment, kind = _minimal_kv(f), ALIGNMENT, "minimal"
        infos, offsets, pos = [], [], 0
        for t in tensors:
            offsets.append(pos)
            qt = int(gguf.GGMLQuantizationType[t.ggml])
            infos.append(
                _string(t.name) + struct.pack(f"<I{len(t.dims)}QIQ", len(t.dims), *t.dims, qt, pos)
            )
            pos += -(-t.nbytes // alignment) * alignment
        header = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), n_kv) + kv + b"".join(infos)
        header += b"\0" * (-len(header) % alignment)
        with atomic_output(dst, force=force) as (fd, tmp):
            with os.fdopen(fd, "wb", closefd=False, buffering=1 << 20) as out:
                out.write(header)
                for t in tensors:
                    b = _tensor_bytes(f, t)
                    if b.size != t.nbytes:
                        raise ZipmodelError(
                            f"tensor {t.name!r}: {b.size} bytes, its {t.ggml} shape needs "
                            f"{t.nbytes}",
                            path=f.name,
                        )
                    out.write(memoryview(b))
                    out.write(b"\0" * (-t.nbytes % alignment))
            _check(gguf, tmp, tensors)
            size = os.path.getsize(tmp)
    types: dict[str, int] = {}
    for t in tensors:
        types[t.ggml] = types.get(t.ggml, 0) + 1
    converted = {t.name: f"{t.dtype} -> {t.ggml}" for t in tensors if t.how == "cast"}
    return ExportReport(
        str(src),
        str(dst),
        to,
        len(tensors),
        types,
        kind,
        size,
        time.perf_counter() - t0,
        converted,
    )


def _check(gguf, path: Path, tensors: list[_Tensor]) -> None:
    """The written file opens in gguf-py's reader with these tensors (names, types, shapes)."""
    r = gguf.GGUFReader(str(path))
    got = [(t.name, t.tensor_type.name, tuple(int(d) for d in t.shape)) for t in r.tensors]
    want = [(t.name, t.ggml, t.dims) for t in tensors]
    if got != want:
        raise ZipmodelError(f"the written GGUF does not read back as written: {got} != {want}")
