"""zipmodel: smaller model files, byte for byte.

>>> import zipmodel
>>> zipmodel.compress_file("model.safetensors")            # -> model.safetensors.zm
>>> zipmodel.decompress_file("model.safetensors.zm", "copy.safetensors")
>>> with zipmodel.open("model.safetensors.zm") as f:       # lazy: only the index is read
...     w = f.get_tensor("embeddings.weight")
>>> sd = zipmodel.load("model.safetensors.zm")             # every tensor, decoded in place
>>> zipmodel.compress_dir("my-model")                      # a model folder -> my-model.zm/

``import zipmodel`` is light: numpy, numba and the codecs load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    BaseMismatchError,
    CorruptDataError,
    FormatError,
    MissingDependencyError,
    UnsupportedError,
    VerifyMismatchError,
    ZipmodelError,
)

__version__ = "0.1.0"

__all__ = [
    "BaseMismatchError",
    "CorruptDataError",
    "FormatError",
    "MissingDependencyError",
    "UnsupportedError",
    "VerifyMismatchError",
    "ZipmodelError",
    "__version__",
    "batch",
    "compress_bytes",
    "compress_dir",
    "compress_file",
    "decompress_bytes",
    "decompress_dir",
    "decompress_file",
    "load",
    "open",
    "verify_dir",
    "verify_file",
]

# name -> submodule that defines it, imported on first access
_LAZY = {
    "compress_bytes": "api",
    "compress_file": "api",
    "decompress_bytes": "api",
    "decompress_file": "api",
    "open": "api",
    "verify_file": "api",
    "compress_dir": "folder",
    "decompress_dir": "folder",
    "verify_dir": "folder",
    # not "load": importing a submodule named like the function would rebind zipmodel.load
    "load": "loading",
    "batch": "batching",  # imports Dask only when called
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
    from .batching import batch
    from .folder import compress_dir, decompress_dir, verify_dir
    from .loading import load


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'zipmodel' has no attribute {name!r}")
