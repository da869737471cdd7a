"""Codecs: byte stream ⇄ bytes, one class each behind the contract in :mod:`.base`.

The registry is the classes themselves: each declares the ``codec_id`` stored in files (ids
are never reused) and its ``name``; :data:`CODECS` maps ids to classes. Importing this
package imports the codec modules, which are light (numpy, zstandard); their Numba kernels
are imported on first use (``zipmodel._jit``), never here.
"""

from __future__ import annotations

import threading

from ..errors import UnknownCodecError
from .base import Codec
from .const import ConstCodec
from .huffman import HuffmanCodec
from .rans import RansCodec, RansCtxCodec
from .rans2d import Rans2DCodec
from .raw import RawCodec
from .zstd import ZstdCodec

__all__ = ["CODECS", "Codec", "codec_name", "compiled_codecs", "get_codec"]

_CLASSES: tuple[type[Codec], ...] = (
    RawCodec,
    ConstCodec,
    ZstdCodec,
    HuffmanCodec,
    RansCodec,
    RansCtxCodec,
    Rans2DCodec,
)
CODECS: dict[int, type[Codec]] = {c.codec_id: c for c in _CLASSES}
assert len(CODECS) == len(_CLASSES), "two codecs claim one id"

_instances: dict[int, Codec] = {}
_lock = threading.Lock()


def codec_name(codec_id: int) -> str:
    """The name of a codec id (``"codec-N"`` for unknown ids, for display only)."""
    cls = CODECS.get(codec_id)
    return cls.name if cls else f"codec-{codec_id}"


def compiled_codecs() -> frozenset[int]:
    """Ids of the codecs whose decoders are Numba kernels (their first use compiles)."""
    return frozenset(cid for cid, c in CODECS.items() if c.compiled)


def get_codec(codec_id: int) -> Codec:
    """The shared instance of the codec ``codec_id`` (with its default parameters)."""
    c = _instances.get(codec_id)
    if c is not None:
        return c
    cls = CODECS.get(codec_id)
    if cls is None:
        raise UnknownCodecError(codec_id)
    with _lock:
        if codec_id not in _instances:
            _instances[codec_id] = cls()
    return _instances[codec_id]
