"""Exceptions become one message on stderr and an exit code, in one place.

Exit codes: 0 ok, 1 error, 2 usage (click's own), 3 verification mismatch, 128 + N for a
signal N (130 Ctrl-C/SIGINT, 143 SIGTERM, 129 SIGHUP).

Signals are turned into :class:`Interrupted`, raised in the main thread, so every ``with
atomic_output(...)`` and ``finally`` on the way out removes its temporary file before the
process exits. It derives from ``BaseException`` so that the per-input ``except Exception`` of
the commands does not swallow it and go on with the next input.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

import click

from ..errors import CorruptDataError, VerifyMismatchError, ZipmodelError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISMATCH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# The signals the CLI turns into a clean exit (SIGHUP: the terminal went away).
HANDLED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(BaseException):
    """A signal arrived: unwind (removing temporary files), then exit ``128 + signum``."""

    def __init__(self, signum: int = signal.SIGINT):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum: int, frame) -> None:
    # A second signal while the first one's cleanup runs ends the process at once.
    for s in HANDLED_SIGNALS:
        signal.signal(s, _exit_now)
    raise Interrupted(signum)


def _exit_now(signum: int, frame) -> None:
    os._exit(128 + signum)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` (main thread only)."""
    for s in HANDLED_SIGNALS:
        if s != signal.SIGINT and signal.getsignal(s) == signal.SIG_IGN:
            continue  # nohup: an ignored SIGHUP stays ignored
        signal.signal(s, _raise_interrupted)


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


def _interrupted(signum: int) -> None:
    what = "interrupted" if signum == signal.SIGINT else f"{signal.Signals(signum).name} received"
    with contextlib.suppress(Exception):  # stderr may be gone (SIGHUP: the terminal closed)
        click.echo(f"zipmodel: {what}; no partial output was left", err=True)
    sys.exit(128 + signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Turn an escaping exception into a message and exit code (the CLI's outermost layer).

    click's usage errors keep click's message and exit code 2; a signal (or Ctrl-C, which
    click reports as ``Abort`` caused by ``KeyboardInterrupt``) exits ``128 + signum``.
    """
    try:
        yield
    except click.exceptions.Exit:
        raise
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        _interrupted(exc.signum)
    except click.Abort as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, Interrupted):
            _interrupted(cause.signum)
        if isinstance(cause, KeyboardInterrupt) or cause is None:
            _interrupted(signal.SIGINT)
        click.echo("zipmodel: aborted", err=True)  # end of input at a prompt
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        _interrupted(signal.SIGINT)
    except BrokenPipeError:
        sys.exit(EXIT_ERROR)
    except Exception as exc:  # every error path ends here, with a message and an exit code
        report(exc)
        sys.exit(exit_code_for(exc))
