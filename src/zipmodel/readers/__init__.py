"""Readers turn a source file into segments; they know formats, nothing about compression.

:func:`read_layout` picks the reader: an explicit ``format``, else the file's content (not its
name). A file that looks like a known format but fails to parse is compressed as opaque bytes,
with the reason in :attr:`Layout.note`: compression is always lossless, whatever the input.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..errors import FormatError
from .base import TENSOR, VERBATIM, Layout, Segment, check_tiling
from .generic import read_generic
from .safetensors import SafetensorsError, looks_like_safetensors, read_safetensors

__all__ = ["FORMATS", "TENSOR", "VERBATIM", "Layout", "Segment", "check_tiling", "read_layout"]

FORMATS = ("auto", "safetensors", "raw")


def read_layout(
    data: np.ndarray, *, format: str = "auto", dtype: DType | None = None, path: str | None = None
) -> Layout:
    """Describe ``data`` (the whole source as uint8) as segments.

    ``dtype`` forces the raw reader with one tensor of that type (the ``--dtype`` hint).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if dtype is not None or format == "raw":
        return read_generic(int(data.size), dtype)
    if format == "safetensors" or looks_like_safetensors(data):
        try:
            return read_safetensors(data)
        except SafetensorsError as e:
            if format == "safetensors":
                raise FormatError(f"not a valid safetensors file: {e}", path=path) from None
            layout = read_generic(int(data.size))
            layout.note = f"not a valid safetensors file ({e}); compressed as opaque bytes"
            return layout
    return read_generic(int(data.size))
