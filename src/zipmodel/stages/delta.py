"""Delta stages: a fine-tune's tensor stored against the same tensor of its base model.

Two lossless, elementwise stages, each storing one part (``delta``) in the tensor's own dtype
and shape, so the float split and the entropy coders code it like any tensor:

* ``xor`` — the bit patterns XOR the base's (BitX / ZipNN's delta). Unchanged elements become
  zero words; a small change flips only low mantissa bits.
* ``sub`` — the integer difference of the bit patterns modulo 2^bits, zigzag-mapped so that
  ``-1`` is 1 and ``+1`` is 2. For floats of one sign and exponent that is the distance in
  units of the last place, so a value that crossed a power of two (where XOR flips the
  exponent and the top mantissa bits) still differs by a small number; its high bytes stay
  zero for a change of either sign.

Both are bijections of the bit patterns (NaN payloads, -0.0, infinities and subnormals come
back bit for bit), and any whole-element byte range of the part decodes on its own, so delta
chunks decode independently like plain ones. A third stage, ``same``, stores a tensor equal
to the base's as no parts at all (a frozen layer, or a tensor repeated across a folder).

Whether a delta pays is measured, not guessed: :func:`zipmodel.pipeline.deltas.choose_delta`
codes the tensor (or a
sample of its chunks) standalone, as ``xor`` and as ``sub`` with the chunk encoder the
container uses, and keeps the smallest, so a base never makes a file larger. A heavily
changed tensor (a re-initialised head) keeps coding standalone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from ..dtypes import get_dtype
from ..errors import FormatError
from ..readers.base import TENSOR, Segment
from .tensor import Part, StageContext, Staged, TensorStage

__all__ = [
    "DELTA_STAGES",
    "SAME",
    "STAGES",
    "SameAsBase",
    "SubDelta",
    "XorDelta",
    "base_of",
    "delta_itemsize",
    "part_type",
]

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def delta_itemsize(seg: Segment) -> int:
    """The word size the delta works on: the dtype's element size, 1 for packed/unknown."""
    dt = get_dtype(seg.dtype or "") if seg.kind == TENSOR else None
    size = dt.itemsize if dt is not None else 1
    return size if size in _UINT and seg.size % size == 0 else 1


def part_type(seg: Segment) -> tuple[str, tuple[int, ...]]:
    """The delta part's dtype and shape: the tensor's, or bytes for packed/unknown types."""
    dt = get_dtype(seg.dtype or "")
    if dt is None or dt.itemsize == 0 or seg.size % dt.itemsize:
        return "U8", ()
    return dt.name, tuple(seg.shape or ())


def _words(buf: np.ndarray, itemsize: int) -> np.ndarray:
    return buf.view(_UINT[itemsize])


def base_of(seg: Segment, ctx: StageContext) -> np.ndarray | None:
    """The base tensor's bytes when it fits ``seg`` (same byte size), else ``None``."""
    if ctx.base is None:
        return None
    b = ctx.base(seg)
    if b is None or b.dtype != np.uint8 or b.ndim != 1 or b.size != seg.size:
        return None
    return b


def _no_base(name: str | None, seg: Segment) -> FormatError:
    """Decoding a delta without its base tensor: a clear error, never a crash."""
    return FormatError(
        f"tensor {seg.name!r} is stored against the base tensor {name!r} ({seg.dtype}, "
        f"{seg.size} bytes), which the base given does not have (or no base was given)",
        hint="pass the base model it was compressed against (--base, base=)",
    )


class _Delta(TensorStage):
    """Shared shape of the two delta stages: one part, the tensor's dtype and shape."""

    lossy: ClassVar[bool] = False
    elementwise: ClassVar[bool] = True

    def forward(self, tensor: np.ndarray, base: np.ndarray, itemsize: int) -> np.ndarray:
        raise NotImplementedError

    def inverse(self, delta: np.ndarray, base: np.ndarray, out: np.ndarray, itemsize: int) -> None:
        raise NotImplementedError

    def encode(self, tensor: np.ndarray, seg: Segment, ctx: StageContext) -> Staged | None:
        base = base_of(seg, ctx)
        if base is None or seg.kind != TENSOR:
            return None
        part = self.forward(tensor, base, delta_itemsize(seg))
        dtype, shape = part_type(seg)
        return Staged([Part("delta", dtype, part, shape)])

    def part_sizes(self, seg: Segment, params: dict[str, Any]) -> list[int]:
        if params:
            raise ValueError(f"{self.name} delta takes no parameters, got {sorted(params)}")
        return [seg.size]

    def decode(
        self,
        parts: Sequence[np.ndarray],
        out: np.ndarray,
        seg: Segment,
        params: dict[str, Any],
        ctx: StageContext,
        offset: int = 0,
    ) -> None:
        base = base_of(seg, ctx)
        if base is None:
            raise _no_base(seg.name, seg)
        (delta,) = parts
        n = int(out.size)
        if delta.size != n or offset < 0 or offset + n > seg.size:
            raise ValueError(f"{self.name} delta of {delta.size} bytes does not fit {n}")
        itemsize = delta_itemsize(seg)
        if offset % itemsize or n % itemsize:
            itemsize = 1  # not whole words: only xor works bytewise; sub needs whole words
            if self.name != "xor":
                raise ValueError(f"{self.name} delta range is not whole elements")
        self.inverse(delta, base[offset : offset + n], out, itemsize)


class XorDelta(_Delta):
    """``delta = tensor XOR base`` over whole words (the bytes' XOR, done word-wide)."""

    name: ClassVar[str] = "xor"

    def forward(self, tensor: np.ndarray, base: np.ndarray, itemsize: int) -> np.ndarray:
        out = np.empty(tensor.size, np.uint8)
        np.bitwise_xor(_words(tensor, itemsize), _words(base, itemsize), out=_words(out, itemsize))
        return out

    def inverse(self, delta: np.ndarray, base: np.ndarray, out: np.ndarray, itemsize: int) -> None:
        np.bitwise_xor(_words(delta, itemsize), _words(base, itemsize), out=_words(out, itemsize))


class SubDelta(_Delta):
    """``delta = zigzag(tensor - base mod 2^bits)`` on the bit patterns as unsigned words."""

    name: ClassVar[str] = "sub"

    def forward(self, tensor: np.ndarray, base: np.ndarray, itemsize: int) -> np.ndarray:
        u = _UINT[itemsize]
        bits = 8 * itemsize
        d = _words(tensor, itemsize) - _words(base, itemsize)  # wraps modulo 2^bits
        # zigzag: 2d for d >= 0, -2d - 1 for d < 0 (d read as signed) -- a bijection
        sign = (d >> u(bits - 1)) * u(np.iinfo(u).max)  # all ones where d < 0
        z = (d << u(1)) ^ sign
        return z.view(np.uint8)

    def inverse(self, delta: np.ndarray, base: np.ndarray, out: np.ndarray, itemsize: int) -> None:
        u = _UINT[itemsize]
        z = _words(delta, itemsize)
        d = (z >> u(1)) ^ ((z & u(1)) * u(np.iinfo(u).max))
        np.add(_words(base, itemsize), d, out=_words(out, itemsize))


class SameAsBase(TensorStage):
    """The tensor equals a base tensor bit for bit: stored as nothing at all (zero parts).

    What a frozen layer of a fine-tune, or a tensor repeated in another model of a folder,
    costs: its index entry. Decoding copies the base tensor. By default the base tensor of
    the same name; ``ref`` names another one of the same dtype and byte size (found by
    content hash: another name, or the same bytes viewed in another shape, as a PyTorch
    storage holds a safetensors tensor), recorded as the params ``tensor`` and ``shape``.
    """

    name: ClassVar[str] = "same"
    lossy: ClassVar[bool] = False

    def __init__(self, ref: str | None = None, shape: Sequence[int] | None = None):
        self.ref = ref
        self.shape = None if shape is None else [int(d) for d in shape]

    @staticmethod
    def _base(seg: Segment, params: dict[str, Any], ctx: StageContext) -> np.ndarray | None:
        ref = params.get("tensor")
        if ref is None:
            return base_of(seg, ctx)
        shape = params.get("shape")
        return base_of(
            replace(seg, name=ref, shape=seg.shape if shape is None else tuple(shape)), ctx
        )

    def encode(self, tensor: np.ndarray, seg: Segment, ctx: StageContext) -> Staged | None:
        params: dict[str, Any] = {}
        if self.ref is not None:
            params["tensor"] = self.ref
            if self.shape is not None:
                params["shape"] = self.shape
        base = self._base(seg, params, ctx)
        if base is None or seg.kind != TENSOR or not np.array_equal(tensor, base):
            return None
        return Staged([], params)

    def part_sizes(self, seg: Segment, params: dict[str, Any]) -> list[int]:
        shape = params.get("shape", [])
        if (
            set(params) - {"tensor", "shape"}
            or not isinstance(params.get("tensor", ""), str)
            or ("shape" in params and "tensor" not in params)
            or not isinstance(shape, list)
            or len(shape) > 64
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise ValueError(f"same-as-base takes a tensor name and shape, got {params!r}")
        return []

    def decode(
        self,
        parts: Sequence[np.ndarray],
        out: np.ndarray,
        seg: Segment,
        params: dict[str, Any],
        ctx: StageContext,
        offset: int = 0,
    ) -> None:
        base = self._base(seg, params, ctx)
        if base is None:
            name = params.get("tensor", seg.name)
            raise _no_base(name, seg)
        if parts or out.size + offset > seg.size:
            raise ValueError("same-as-base takes no parts")
        out[:] = base[offset : offset + out.size]


DELTA_STAGES: dict[str, _Delta] = {s.name: s for s in (XorDelta(), SubDelta())}
SAME = SameAsBase()
# The registry's view (zipmodel.stages.get_stage): container name -> class.
STAGES: dict[str, type[TensorStage]] = {"xor": XorDelta, "sub": SubDelta, "same": SameAsBase}
