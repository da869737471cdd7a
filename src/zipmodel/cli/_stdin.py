"""Standard input as a regular file, for commands that need to seek.

Compression maps its source and decompression reads the index at the end of a container, so a
pipe is first copied to a temporary file in ``$TMPDIR`` (1 MiB at a time: memory stays flat
whatever the input's size; the disk needs room for one copy). The file is removed on exit, and
an error about it names ``<stdin>``, never the temporary file.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import IO

import click

from ..errors import ZipmodelError

SPOOL_BLOCK = 1 << 20
STDIN_NAME = "<stdin>"  # how messages name standard input


@contextlib.contextmanager
def spooled_stdin() -> Iterator[IO[bytes]]:
    """Yield a named temporary file holding all of standard input, positioned at 0."""
    with tempfile.NamedTemporaryFile(prefix="zipmodel-stdin-", suffix=".tmp") as f:
        try:
            shutil.copyfileobj(sys.stdin.buffer, f, SPOOL_BLOCK)
            f.flush()
            f.seek(0)
            yield f
        except Exception as exc:
            rename_in_error(exc, f.name)
            raise


def rename_in_error(exc: BaseException, tmp: str) -> None:
    """Make ``exc`` (and its message) name ``<stdin>`` instead of the spool file ``tmp``."""
    if isinstance(exc, ZipmodelError):
        if exc.path == tmp:
            exc.path = STDIN_NAME
        exc.args = tuple(a.replace(tmp, STDIN_NAME) if isinstance(a, str) else a for a in exc.args)
    elif isinstance(exc, OSError) and exc.filename == tmp:
        exc.filename = STDIN_NAME
    else:
        exc.args = tuple(a.replace(tmp, STDIN_NAME) if isinstance(a, str) else a for a in exc.args)


def default_paths(paths: tuple[str, ...]) -> tuple[str, ...]:
    """No PATH: standard input when it is a pipe or a file (as zstd), else a usage error."""
    if paths:
        return paths
    try:
        interactive = sys.stdin.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if interactive:
        raise click.UsageError("give a PATH, or - for standard input (which is a terminal)")
    return ("-",)
