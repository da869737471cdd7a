"""The library's face: compress and decompress files or bytes, open containers lazily.

``compress_file``/``decompress_file`` are shorthand for the whole pipeline on one file each
(:mod:`zipmodel.files`); ``open`` gives random access to tensors without decompressing the
rest (:mod:`zipmodel.zmfile`); :class:`~zipmodel.options.LossyOptions` is the one value that
the lossy keywords make.
"""

from __future__ import annotations

from .files import SUFFIX as SUFFIX  # also importable from here, as before
from .files import (
    CompressReport,
    DecompressReport,
    VerifyReport,
    compress_bytes,
    compress_file,
    decompress_bytes,
    decompress_file,
    verify_file,
)
from .files import Progress as Progress
from .files import default_output as default_output
from .files import lossy_stages as lossy_stages
from .options import LossyOptions
from .zmfile import TensorInfo, ZmFile, open

__all__ = [
    "CompressReport",
    "DecompressReport",
    "LossyOptions",
    "TensorInfo",
    "VerifyReport",
    "ZmFile",
    "compress_bytes",
    "compress_file",
    "decompress_bytes",
    "decompress_file",
    "open",
    "verify_file",
]
