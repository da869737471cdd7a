"""zipmodel: smaller model files, byte for byte.

>>> import zipmodel
>>> zipmodel.compress_file("model.safetensors")            # -> model.safetensors.zm
>>> zipmodel.decompress_file("model.safetensors.zm", "copy.safetensors")
>>> with zipmodel.open("model.safetensors.zm") as f:       # lazy: only the index is read
...     w = f.get_tensor("embeddings.weight")

``import zipmodel`` is light: numpy, numba and the codecs load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    CorruptDataError,
    FormatError,
    MissingDependencyError,
    UnsupportedError,
    VerifyMismatchError,
    ZipmodelError,
)

__version__ = "0.1.0"

__all__ = [
    "CorruptDataError",
    "FormatError",
    "MissingDependencyError",
    "UnsupportedError",
    "VerifyMismatchError",
    "ZipmodelError",
    "__version__",
    "compress_bytes",
    "compress_file",
    "decompress_bytes",
    "decompress_file",
    "open",
    "verify_file",
]

_API = {
    "compress_bytes",
    "compress_file",
    "decompress_bytes",
    "decompress_file",
    "open",
    "verify_file",
}

if TYPE_CHECKING:
    from .api import (
        compress_bytes,
        compress_file,
        decompress_bytes,
        decompress_file,
        open,
        verify_file,
    )


def __getattr__(name: str) -> Any:
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'zipmodel' has no attribute {name!r}")
