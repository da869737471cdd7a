"""Small tensor stages that pin the stage framework (the pipeline, the container, the API).

They cover each shape of stage the contract allows: lossless and lossy, elementwise and
whole-tensor, one part and several, a part of another dtype and shape, a stage that stores
nothing, and one that needs the base model from the StageContext. Names start with
``test-`` so they never meet a real stage's name.
"""

from __future__ import annotations

import numpy as np

from zipmodel.quality import measure
from zipmodel.stages import register_stage
from zipmodel.stages.tensor import Part, Staged, TensorStage


def _f32(seg) -> bool:
    return seg.dtype == "F32" and seg.size > 0


@register_stage
class HiLo(TensorStage):
    """Lossless, two parts: the high 16 bits of each F32 (as BF16, the tensor's shape) and
    the low 16 bits (U16)."""

    name = "test-hilo"
    lossy = False

    def encode(self, tensor, seg, ctx):
        if not _f32(seg):
            return None
        w = tensor.view(np.uint32)
        hi = (w >> 16).astype(np.uint16)
        lo = (w & 0xFFFF).astype(np.uint16)
        return Staged(
            [
                Part("hi", "BF16", hi.view(np.uint8), tuple(seg.shape)),
                Part("lo", "U16", lo.view(np.uint8)),
            ]
        )

    def part_sizes(self, seg, params):
        if seg.dtype != "F32":
            raise ValueError("test-hilo takes F32")
        return [seg.size // 2, seg.size // 2]

    def decode(self, parts, out, seg, params, ctx, offset=0):
        hi = parts[0].view(np.uint16).astype(np.uint32)
        lo = parts[1].view(np.uint16).astype(np.uint32)
        out.view(np.uint32)[:] = (hi << 16) | lo


@register_stage
class RowInt8(TensorStage):
    """Lossy, whole-tensor: symmetric int8 per row, with F32 scales (a miniature int8)."""

    name = "test-int8"
    lossy = True

    def encode(self, tensor, seg, ctx):
        if not _f32(seg) or len(seg.shape) != 2:
            return None
        x = tensor.view(np.float32).reshape(seg.shape).astype(np.float64)
        amax = np.abs(x).max(axis=1)
        scale = np.where(amax > 0, amax / 127, 1.0).astype(np.float32)
        q = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
        y = q.astype(np.float32) * scale[:, None]
        quality = measure(x, y, stored_bits=8.0 * q.size + 32.0 * scale.size).to_json()
        return Staged(
            [
                Part("codes", "I8", q.reshape(-1).view(np.uint8), tuple(seg.shape)),
                Part("scales", "F32", scale.view(np.uint8)),
            ],
            {"rows": int(seg.shape[0])},
            quality,
        )

    def part_sizes(self, seg, params):
        rows = params["rows"]
        if type(rows) is not int or len(seg.shape) != 2 or rows != seg.shape[0]:
            raise ValueError("rows do not match the tensor")
        return [seg.size // 4, 4 * rows]

    def decode(self, parts, out, seg, params, ctx, offset=0):
        q = parts[0].view(np.int8).reshape(seg.shape)
        scale = parts[1].view(np.float32)
        out.view(np.float32).reshape(seg.shape)[:] = q.astype(np.float32) * scale[:, None]


@register_stage
class DropLow(TensorStage):
    """Lossy, elementwise: zero the low 16 bits of each F32 (a crude mantissa rounding)."""

    name = "test-droplow"
    lossy = True
    elementwise = True

    def encode(self, tensor, seg, ctx):
        if not _f32(seg):
            return None
        return Staged(
            [
                Part(
                    "values", "F32", (tensor.view(np.uint32) & 0xFFFF0000).view(np.uint8), seg.shape
                )
            ],
            quality={"rel_rms": 0.0, "max_abs": 0.0},
        )

    def part_sizes(self, seg, params):
        return [seg.size]

    def decode(self, parts, out, seg, params, ctx, offset=0):
        out[:] = parts[0]


@register_stage
class XorBase(TensorStage):
    """Lossless, elementwise, needs the base: the bytes XOR the base tensor's bytes."""

    name = "test-xorbase"
    lossy = False
    elementwise = True

    def encode(self, tensor, seg, ctx):
        base = ctx.base(seg) if ctx.base is not None else None
        if base is None or base.size != tensor.size:
            return None
        return Staged([Part("delta", seg.dtype, tensor ^ base, tuple(seg.shape))])

    def part_sizes(self, seg, params):
        return [seg.size]

    def decode(self, parts, out, seg, params, ctx, offset=0):
        base = ctx.base(seg) if ctx.base is not None else None
        if base is None:
            raise ValueError(f"tensor {seg.name!r} needs its base model")
        np.bitwise_xor(parts[0], base[offset : offset + out.size], out=out)


@register_stage
class Zeros(TensorStage):
    """Lossless, no parts at all: an all-zero tensor is stored as nothing."""

    name = "test-zeros"
    lossy = False

    def encode(self, tensor, seg, ctx):
        return Staged([]) if not tensor.any() else None

    def part_sizes(self, seg, params):
        return []

    def decode(self, parts, out, seg, params, ctx, offset=0):
        out[:] = 0
