"""The 4-bit quantizers, one scale per group of elements: int4 (symmetric, or asymmetric with a
zero point per group) and nf4 (QLoRA's NormalFloat code book)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..options import DEFAULT_GROUP_SIZE
from .quant_common import (
    INT4_LEVELS,
    MAX_GROUP,
    NF4_LEVELS,
    SCALE_DTYPES,
    Quantizer,
    as_bytes,
    expand_groups,
    float_dtype_of,
    group_count,
    numel,
    param_int,
    per_group_rows,
    pick_scale_dtype,
    require,
    scale_dtype_param,
    search_asym,
    search_sym,
)
from .tensor import Part

__all__ = ["GroupStage", "Int4Stage", "Nf4Stage"]


class GroupStage(Quantizer):
    levels: ClassVar[np.ndarray]
    has_zero_points: ClassVar[bool] = False  # whether ``asymmetric`` groups exist

    def __init__(self, group_size: int = DEFAULT_GROUP_SIZE, asymmetric: bool = False):
        if not 1 <= group_size <= MAX_GROUP:
            raise ValueError(f"group size must be in [1, {MAX_GROUP}], not {group_size}")
        if asymmetric and not self.has_zero_points:
            raise ValueError(f"asymmetric is an int4 option, not {self.name}")
        self.group_size = group_size
        self.asymmetric = asymmetric

    def stored_bits(self, parts, params, dtype):
        # codes and zero points hold 4 bits each, one per byte; scales their full width
        return float(sum(p.data.size * (4 if p.dtype == "U8" else 8) for p in parts))

    def _base(self, xg: np.ndarray) -> np.ndarray:
        """Scale that maps the group's largest magnitude onto the end of the levels."""
        raise NotImplementedError

    def quantize(self, x, seg, tensor):
        g, n = self.group_size, x.size
        ng = group_count(n, g)
        bases = np.concatenate([self._base(xg) for _, xg in per_group_rows(x, g)])
        sd = pick_scale_dtype(bases)
        scales = np.empty(ng, np.float32)
        codes = np.empty(n, np.uint8)
        for a, xg in per_group_rows(x, g):
            s, q = search_sym(xg, bases[a : a + xg.shape[0]], self.levels, sd)
            scales[a : a + xg.shape[0]] = s
            codes[a * g : a * g + q.size] = q.reshape(-1)
        parts = [
            Part("codes", "U8", codes, tuple(seg.shape or ())),
            Part("scales", sd, as_bytes(scales.astype(SCALE_DTYPES[sd])), (ng,)),
        ]
        return parts, {"group_size": g, "scale_dtype": sd}

    def part_sizes(self, seg, params):
        float_dtype_of(seg)
        g = param_int(params, "group_size", 1, MAX_GROUP)
        sd = scale_dtype_param(params)
        n = numel(seg.shape)
        return [n, group_count(n, g) * np.dtype(SCALE_DTYPES[sd]).itemsize]

    def dequantize(self, parts, seg, params):
        g, n = params["group_size"], numel(seg.shape)
        codes = parts[0]
        require(int(codes.max(initial=0)) < 16, f"{self.name}: code above 15")
        s = parts[1].view(SCALE_DTYPES[params["scale_dtype"]]).astype(np.float32)
        return self.levels[codes] * expand_groups(s, n, g)


class Int4Stage(GroupStage):
    """Symmetric int4 (levels -8..7, the largest magnitude on -8 as in GGUF's Q4_0) per group."""

    name: ClassVar[str] = "int4"
    levels: ClassVar[np.ndarray] = INT4_LEVELS
    has_zero_points: ClassVar[bool] = True

    def _base(self, xg):
        i = np.abs(xg).argmax(axis=1)
        return xg[np.arange(xg.shape[0]), i] / np.float32(-8)

    def quantize(self, x, seg, tensor):
        if not self.asymmetric:
            parts, params = super().quantize(x, seg, tensor)
            params["asymmetric"] = False
            return parts, params
        g, n = self.group_size, x.size
        ng = group_count(n, g)
        ranges = [
            (np.minimum(xg.min(axis=1), 0), np.maximum(xg.max(axis=1), 0))
            for _, xg in per_group_rows(x, g)
        ]
        lo = np.concatenate([r[0] for r in ranges])
        hi = np.concatenate([r[1] for r in ranges])
        sd = pick_scale_dtype((hi - lo) / np.float32(15))
        scales, zeros = np.empty(ng, np.float32), np.empty(ng, np.uint8)
        codes = np.empty(n, np.uint8)
        for a, xg in per_group_rows(x, g):
            b = a + xg.shape[0]
            s, z, q = search_asym(xg, lo[a:b], hi[a:b], sd)
            scales[a:b], zeros[a:b] = s, z
            codes[a * g : a * g + q.size] = q.reshape(-1)
        parts = [
            Part("codes", "U8", codes, tuple(seg.shape or ())),
            Part("scales", sd, as_bytes(scales.astype(SCALE_DTYPES[sd])), (ng,)),
            Part("zeros", "U8", zeros, (ng,)),
        ]
        return parts, {"group_size": g, "scale_dtype": sd, "asymmetric": True}

    def part_sizes(self, seg, params):
        sizes = super().part_sizes(seg, params)
        asym = params.get("asymmetric")
        require(isinstance(asym, bool), "int4: asymmetric must be a boolean")
        if asym:
            sizes.append(group_count(numel(seg.shape), params["group_size"]))
        return sizes

    def dequantize(self, parts, seg, params):
        if not params["asymmetric"]:
            return super().dequantize(parts, seg, params)
        g, n = params["group_size"], numel(seg.shape)
        codes, zeros = parts[0], parts[2]
        require(int(max(codes.max(initial=0), zeros.max(initial=0))) < 16, "int4: code above 15")
        s = parts[1].view(SCALE_DTYPES[params["scale_dtype"]]).astype(np.float32)
        q = codes.astype(np.float32) - expand_groups(zeros, n, g).astype(np.float32)
        return q * expand_groups(s, n, g)


class Nf4Stage(GroupStage):
    """NormalFloat-4 (QLoRA) codes × an absmax scale per group."""

    name: ClassVar[str] = "nf4"
    levels: ClassVar[np.ndarray] = NF4_LEVELS

    def _base(self, xg):
        return np.abs(xg).max(axis=1)
