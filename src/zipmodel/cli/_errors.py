"""Exceptions become one message on stderr and an exit code, in one place.

Exit codes: 0 ok, 1 error, 2 usage (click's own), 3 verification mismatch, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click

from ..errors import CorruptDataError, VerifyMismatchError, ZipmodelError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def message_for(exc: BaseException) -> tuple[str, str]:
    """``(message, hint)`` for an exception a command let through."""
    if isinstance(exc, ZipmodelError):
        return str(exc), exc.hint
    if isinstance(exc, FileNotFoundError):
        return f"{exc.filename}: no such file", ""
    if isinstance(exc, IsADirectoryError):
        return f"{exc.filename}: is a directory", ""
    if isinstance(exc, PermissionError):
        return f"{exc.filename}: permission denied", ""
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", ""
    if isinstance(exc, MemoryError):
        return "out of memory", "lower -T/--threads or --chunk-size"
    return (
        f"{type(exc).__name__}: {exc}",
        "this is a bug in zipmodel; please report it with the command you ran",
    )


def exit_code_for(exc: BaseException, *, verifying: bool = False) -> int:
    if isinstance(exc, VerifyMismatchError) or (verifying and isinstance(exc, CorruptDataError)):
        return EXIT_MISMATCH
    return EXIT_ERROR


def report(exc: BaseException) -> None:
    msg, hint = message_for(exc)
    click.echo(f"zipmodel: error: {msg}", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Turn an escaping exception into a message and exit code (the CLI's outermost layer)."""
    try:
        yield
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except KeyboardInterrupt:
        click.echo("zipmodel: interrupted; no partial output was left", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # every error path ends here, with a message and an exit code
        report(exc)
        sys.exit(exit_code_for(exc))
