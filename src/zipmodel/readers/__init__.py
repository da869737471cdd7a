"""Readers turn a source file into segments; they know formats, nothing about compression.

:func:`read_layout` picks the reader: an explicit ``format``, else the file's content (not its
name). A file that looks like a known format but fails to parse is compressed as opaque bytes,
with the reason in :attr:`Layout.note`: compression is always lossless, whatever the input.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..errors import FormatError
from ..formats import FORMATS
from .base import TENSOR, VERBATIM, Layout, Segment, check_tiling
from .ctranslate2 import CT2Error, looks_like_ctranslate2, read_ctranslate2
from .generic import read_generic
from .gguf import GGUFError, looks_like_gguf, read_gguf
from .safetensors import SafetensorsError, looks_like_safetensors, read_safetensors
from .torch import TorchFormatError, looks_like_torch, read_torch

__all__ = ["FORMATS", "TENSOR", "VERBATIM", "Layout", "Segment", "check_tiling", "read_layout"]


def read_layout(
    data: np.ndarray, *, format: str = "auto", dtype: DType | None = None, path: str | None = None
) -> Layout:
    """Describe ``data`` (the whole source as uint8) as segments.

    A file in a format zipmodel reads keeps its own dtypes; ``dtype`` (the ``--dtype`` hint)
    describes files it cannot parse, or every file with ``format="raw"``: the whole file is then
    one tensor of that type.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "raw":
        return read_generic(int(data.size), dtype)
    readers = [
        ("safetensors", looks_like_safetensors, read_safetensors, SafetensorsError),
        ("torch", looks_like_torch, read_torch, TorchFormatError),
        ("ctranslate2", looks_like_ctranslate2, read_ctranslate2, CT2Error),
        ("gguf", looks_like_gguf, read_gguf, GGUFError),
    ]
    for name, sniff, read, error in readers:
        if format == name or (format == "auto" and sniff(data)):
            try:
                return read(data)
            except error as e:
                if format == name:
                    raise FormatError(f"not a valid {name} file: {e}", path=path) from None
                layout = read_generic(int(data.size), dtype)
                layout.note = f"not a valid {name} file ({e}); compressed as {'one tensor' if dtype else 'opaque bytes'}"
                return layout
    return read_generic(int(data.size), dtype)
