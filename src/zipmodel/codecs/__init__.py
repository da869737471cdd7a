"""Codecs: byte stream ⇄ bytes. The table maps container ids to lazy import paths.

Importing this package imports no codec implementation (and never numba): a codec module is
imported the first time its id is used, and a missing optional dependency is reported with
the command that installs it.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from ..errors import MissingDependencyError, UnknownCodecError

if TYPE_CHECKING:
    from .base import Codec

__all__ = ["CODECS", "codec_name", "get_codec"]

# id -> (name, "module:Class", install hint). Ids are stored in files: never reuse one.
CODECS: dict[int, tuple[str, str, str]] = {
    0: ("raw", "zipmodel.codecs.raw:RawCodec", ""),
    1: ("const", "zipmodel.codecs.const:ConstCodec", ""),
    2: ("zstd", "zipmodel.codecs.zstd:ZstdCodec", "pip install zstandard"),
    3: ("huffman", "zipmodel.codecs.huffman:HuffmanCodec", "pip install numba"),
    4: ("rans", "zipmodel.codecs.rans:RansCodec", "pip install numba"),
    5: ("rans-ctx", "zipmodel.codecs.rans:RansCtxCodec", "pip install numba"),
    6: ("rans-2d", "zipmodel.codecs.rans2d:Rans2DCodec", "pip install numba"),
}

_instances: dict[int, Codec] = {}
_lock = threading.Lock()


def codec_name(codec_id: int) -> str:
    """The name of a codec id (``"codec-N"`` for unknown ids, for display only)."""
    entry = CODECS.get(codec_id)
    return entry[0] if entry else f"codec-{codec_id}"


def get_codec(codec_id: int) -> Codec:
    """The shared decoder instance for ``codec_id`` (imported on first use)."""
    c = _instances.get(codec_id)
    if c is not None:
        return c
    entry = CODECS.get(codec_id)
    if entry is None:
        raise UnknownCodecError(codec_id)
    name, target, hint = entry
    module_name, cls_name = target.split(":")
    with _lock:
        if codec_id not in _instances:
            try:
                module = importlib.import_module(module_name)
            except ImportError as e:
                raise MissingDependencyError(
                    f"codec {name!r} needs a package that is not installed ({e})", hint=hint
                ) from e
            _instances[codec_id] = getattr(module, cls_name)()
    return _instances[codec_id]
