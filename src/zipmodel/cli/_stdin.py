"""Standard input as a regular file, for commands that need to seek.

Compression maps its source and decompression reads the index at the end of a container, so a
pipe is first copied to a temporary file in ``$TMPDIR`` (1 MiB at a time: memory stays flat
whatever the input's size; the disk needs room for one copy). The file is removed on exit.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

SPOOL_BLOCK = 1 << 20


@contextlib.contextmanager
def spooled_stdin() -> Iterator[IO[bytes]]:
    """Yield a named temporary file holding all of standard input, positioned at 0."""
    with tempfile.NamedTemporaryFile(prefix="zipmodel-stdin-", suffix=".tmp") as f:
        shutil.copyfileobj(sys.stdin.buffer, f, SPOOL_BLOCK)
        f.flush()
        f.seek(0)
        yield f
