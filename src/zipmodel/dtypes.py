"""Element types zipmodel knows, named as safetensors names them.

A dtype here is only a name, a width and a float layout; numpy dtypes (``ml_dtypes`` for
bfloat16 and float8) are looked up lazily by :func:`numpy_dtype`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DTYPES", "GGUF_BLOCKS", "DType", "dtype_from_hint", "get_dtype", "numpy_dtype"]


@dataclass(frozen=True)
class DType:
    """One element type.

    ``bits`` is the element width; sub-byte types (F4, F6) have ``bits < 8`` and are packed.
    ``exponent_bits``/``mantissa_bits`` are set for IEEE-like floats (sign bit implied).
    Block-quantized types (GGUF's Q4_K ...) have ``bits == 0`` and store ``block`` elements in
    ``block_bytes`` bytes (scales and packed codes together).
    """

    name: str
    bits: int
    kind: str  # "float", "int", "uint", "bool", "complex"
    exponent_bits: int = 0
    mantissa_bits: int = 0
    numpy_name: str | None = None
    block: int = 0  # elements per block (block-quantized types only)
    block_bytes: int = 0

    @property
    def itemsize(self) -> int:
        """Bytes per element; 0 for packed sub-byte types."""
        return self.bits // 8 if self.bits % 8 == 0 else 0

    @property
    def unit_bytes(self) -> int:
        """Bytes of the smallest whole unit: an element, or a block for block-quantized types
        (0 for packed sub-byte types). An array of this type is a whole number of units."""
        return self.block_bytes if self.block else self.itemsize

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Size in bytes of a tensor of this type and ``shape`` (packed types round up)."""
        n = 1
        for d in shape:
            n *= d
        if self.block:
            return -(-n // self.block) * self.block_bytes
        return (n * self.bits + 7) // 8


DTYPES: dict[str, DType] = {
    d.name: d
    for d in [
        DType("BOOL", 8, "bool", numpy_name="bool"),
        DType("U8", 8, "uint", numpy_name="uint8"),
        DType("I8", 8, "int", numpy_name="int8"),
        DType("U16", 16, "uint", numpy_name="<u2"),
        DType("I16", 16, "int", numpy_name="<i2"),
        DType("U32", 32, "uint", numpy_name="<u4"),
        DType("I32", 32, "int", numpy_name="<i4"),
        DType("U64", 64, "uint", numpy_name="<u8"),
        DType("I64", 64, "int", numpy_name="<i8"),
        DType("F8_E4M3", 8, "float", 4, 3, numpy_name="float8_e4m3fn"),
        DType("F8_E5M2", 8, "float", 5, 2, numpy_name="float8_e5m2"),
        DType("F8_E8M0", 8, "float", 8, 0, numpy_name="float8_e8m0fnu"),
        DType("F16", 16, "float", 5, 10, numpy_name="<f2"),
        DType("BF16", 16, "float", 8, 7, numpy_name="bfloat16"),
        DType("F32", 32, "float", 8, 23, numpy_name="<f4"),
        DType("F64", 64, "float", 11, 52, numpy_name="<f8"),
        DType("C64", 64, "complex", numpy_name="<c8"),
        DType("F4", 4, "float", 2, 1, numpy_name=None),
        DType("F6_E2M3", 6, "float", 2, 3, numpy_name=None),
        DType("F6_E3M2", 6, "float", 3, 2, numpy_name=None),
    ]
}

_QK = 256  # GGUF's super-block (K-quants, IQ types)
# GGUF block-quantized types: name -> (elements per block, bytes per block), from ggml's
# type traits (gguf-py ``GGML_QUANT_SIZES``). Their bytes come back as uint8.
GGUF_BLOCKS: dict[str, tuple[int, int]] = {
    "Q4_0": (32, 2 + 16),
    "Q4_1": (32, 2 + 2 + 16),
    "Q5_0": (32, 2 + 4 + 16),
    "Q5_1": (32, 2 + 2 + 4 + 16),
    "Q8_0": (32, 2 + 32),
    "Q8_1": (32, 4 + 4 + 32),
    "Q2_K": (_QK, 2 + 2 + _QK // 16 + _QK // 4),
    "Q3_K": (_QK, 2 + _QK // 4 + _QK // 8 + 12),
    "Q4_K": (_QK, 2 + 2 + _QK // 2 + 12),
    "Q5_K": (_QK, 2 + 2 + _QK // 2 + _QK // 8 + 12),
    "Q6_K": (_QK, 2 + _QK // 2 + _QK // 4 + _QK // 16),
    "Q8_K": (_QK, 4 + _QK + _QK // 8),
    "IQ2_XXS": (_QK, 2 + _QK // 4),
    "IQ2_XS": (_QK, 2 + _QK // 4 + _QK // 32),
    "IQ3_XXS": (_QK, 2 + _QK // 4 + _QK // 8),
    "IQ1_S": (_QK, 2 + _QK // 8 + _QK // 16),
    "IQ4_NL": (32, 2 + 16),
    "IQ3_S": (_QK, 2 + _QK // 4 + _QK // 8 + _QK // 32 + 4),
    "IQ2_S": (_QK, 2 + _QK // 4 + _QK // 16),
    "IQ4_XS": (_QK, 2 + 2 + _QK // 2 + _QK // 64),
    "IQ1_M": (_QK, _QK // 8 + _QK // 16 + _QK // 32),
    "TQ1_0": (_QK, 2 + 4 * 13),
    "TQ2_0": (_QK, 2 + 64),
    "MXFP4": (32, 1 + 16),
}
DTYPES.update(
    (f"GGUF_{q}", DType(f"GGUF_{q}", 0, "quant", block=b, block_bytes=n))
    for q, (b, n) in GGUF_BLOCKS.items()
)

# Spellings accepted by ``--dtype``.
_HINTS = {
    "bf16": "BF16",
    "bfloat16": "BF16",
    "f16": "F16",
    "fp16": "F16",
    "float16": "F16",
    "half": "F16",
    "f32": "F32",
    "fp32": "F32",
    "float32": "F32",
    "float": "F32",
    "f8e4m3": "F8_E4M3",
    "fp8e4m3": "F8_E4M3",
    "float8_e4m3fn": "F8_E4M3",
    "e4m3": "F8_E4M3",
    "f8e5m2": "F8_E5M2",
    "fp8e5m2": "F8_E5M2",
    "float8_e5m2": "F8_E5M2",
    "e5m2": "F8_E5M2",
}
HINT_CHOICES = ("bf16", "f16", "f32", "f8e4m3", "f8e5m2")


def get_dtype(name: str) -> DType | None:
    """Return the dtype called ``name`` (safetensors spelling), or ``None`` if unknown."""
    return DTYPES.get(name)


def dtype_from_hint(hint: str) -> DType:
    """Map a user's ``--dtype`` spelling (``bf16``, ``fp32``, ``f8e4m3`` ...) to a dtype."""
    key = hint.strip().lower().replace("-", "").replace(" ", "")
    name = _HINTS.get(key) or (hint.upper() if hint.upper() in DTYPES else None)
    if name is None:
        raise ValueError(f"unknown dtype {hint!r}; choose one of {', '.join(HINT_CHOICES)}")
    return DTYPES[name]


def numpy_dtype(dtype: DType | str) -> np.dtype:
    """The numpy dtype for ``dtype`` (bfloat16 and float8 come from ``ml_dtypes``).

    Packed sub-byte types have no numpy equivalent; their bytes come back as ``uint8``.
    """
    import numpy as np

    d = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if d.numpy_name is None:
        return np.dtype(np.uint8)
    try:
        return np.dtype(d.numpy_name)
    except TypeError:
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, d.numpy_name))
