"""Model folders (Hugging Face style): ``X/`` → ``X.zm/`` and back, byte for byte.

Each weight file becomes ``<path>.zm`` (through :func:`zipmodel.files.compress_file`); small files
(config, tokenizer, index JSON, README) are copied unchanged, so the compressed folder stays
readable. ``zipmodel.json`` at the output root lists every original file with its size, SHA-256
and how it is stored (the format is specified in ``docs/folders.md``).

Safety, as for single files: the output is built in a hidden temporary sibling folder and renamed
into place only when complete, so an error or Ctrl-C leaves no partial output; inputs are never
modified. A manifest is untrusted input: its paths must be relative, free of ``..`` and resolve
inside the folder, and every restored file must match its recorded SHA-256. Symlinks in a source
folder are followed only when they point to a file inside the tree (the file is stored, and
restored as a regular file); one pointing outside is an error unless ``follow_symlinks``, and
symlinked folders are always an error (no cycles, no escapes).
"""

from __future__ import annotations

# ``X as X``: importable from here as when the folder was one module, not in __all__
from .compress import compress_dir
from .manifest import COPY as COPY
from .manifest import DEFAULT_MIN_SIZE as DEFAULT_MIN_SIZE
from .manifest import (
    MANIFEST,
    FolderEntry,
    FolderResult,
    default_dir_output,
    is_zm_folder,
    read_manifest,
)
from .manifest import MANIFEST_FORMAT as MANIFEST_FORMAT
from .manifest import MANIFEST_VERSION as MANIFEST_VERSION
from .manifest import MAX_MANIFEST_BYTES as MAX_MANIFEST_BYTES
from .manifest import SUFFIX as SUFFIX
from .manifest import WEIGHT_SUFFIXES as WEIGHT_SUFFIXES
from .manifest import ZM as ZM
from .manifest import Progress as Progress
from .manifest import weight_entries as weight_entries
from .restore import decompress_dir, remove_listed, verify_dir

__all__ = [
    "MANIFEST",
    "FolderEntry",
    "FolderResult",
    "compress_dir",
    "decompress_dir",
    "default_dir_output",
    "is_zm_folder",
    "read_manifest",
    "remove_listed",
    "verify_dir",
]
