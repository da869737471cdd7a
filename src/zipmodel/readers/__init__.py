"""Readers turn a source file into segments; they know formats, nothing about compression.

:func:`read_layout` picks the reader: an explicit ``format``, else the file's content (not its
name). A file that looks like a known format but fails to parse is compressed as opaque bytes,
with the reason in :attr:`Layout.note`: compression is always lossless, whatever the input.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..dtypes import DType
from ..errors import FormatError
from ..formats import FORMATS
from .base import (
    MAX_INDEX_JSON,
    MAX_INDEX_SEGMENTS,
    TENSOR,
    VERBATIM,
    Layout,
    Segment,
    check_tiling,
)
from .ctranslate2 import CT2Error, looks_like_ctranslate2, read_ctranslate2
from .generic import read_generic
from .gguf import GGUFError, looks_like_gguf, read_gguf
from .safetensors import SafetensorsError, looks_like_safetensors, read_safetensors
from .torch import TorchFormatError, looks_like_torch, read_torch

__all__ = [
    "FORMATS",
    "READERS",
    "TENSOR",
    "VERBATIM",
    "Layout",
    "Reader",
    "Segment",
    "check_tiling",
    "read_layout",
]


class Reader(NamedTuple):
    """A source format: its ``--format`` name, a cheap content sniff, the parser, and the
    error the parser raises (then the file is compressed as opaque bytes)."""

    name: str
    sniff: Callable[[np.ndarray], bool]
    read: Callable[[np.ndarray], Layout]
    error: type[Exception]


# Tried in this order on ``format="auto"``; ``formats.FORMATS`` lists these names for --help.
READERS: tuple[Reader, ...] = (
    Reader("safetensors", looks_like_safetensors, read_safetensors, SafetensorsError),
    Reader("torch", looks_like_torch, read_torch, TorchFormatError),
    Reader("ctranslate2", looks_like_ctranslate2, read_ctranslate2, CT2Error),
    Reader("gguf", looks_like_gguf, read_gguf, GGUFError),
)


def _guarded(read, error: type[Exception], data: np.ndarray) -> Layout:
    """Run a reader; whatever a hostile header makes it raise becomes its own error (so the
    caller falls back to opaque bytes or names the file), never a bare built-in one."""
    try:
        return read(data)
    except error:
        raise
    except RecursionError:
        raise error("the header nests too deeply") from None
    except MemoryError:
        raise error("the header needs more memory than is available") from None
    except (
        OverflowError,
        struct.error,
        UnicodeError,
        IndexError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
    ) as e:
        raise error(f"the header is malformed ({type(e).__name__}: {e})") from None


def _within_index_caps(layout: Layout, error: type[Exception]) -> Layout:
    """A layout the container index can hold (container/index.py caps): a reader that finds
    more segments, or metadata too big for the index JSON, falls back like a parse error."""
    if len(layout.segments) > MAX_INDEX_SEGMENTS:
        raise error(
            f"{len(layout.segments)} segments, more than a container index holds "
            f"({MAX_INDEX_SEGMENTS})"
        )
    names = sum(len(s.name or "") for s in layout.segments)
    if names + 160 * len(layout.segments) + len(json.dumps(layout.metadata)) > MAX_INDEX_JSON // 2:
        raise error("its header is too big for a container index")
    return layout


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
    for name, sniff, read, error in READERS:
        if format == name or (format == "auto" and sniff(data)):
            try:
                return _within_index_caps(_guarded(read, error, data), error)
            except error as e:
                if format == name:
                    raise FormatError(f"not a valid {name} file: {e}", path=path) from None
                layout = read_generic(int(data.size), dtype)
                layout.note = f"not a valid {name} file ({e}); compressed as {'one tensor' if dtype else 'opaque bytes'}"
                return layout
    return read_generic(int(data.size), dtype)
