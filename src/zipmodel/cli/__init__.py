"""The ``zipmodel`` command line: thin click commands over :mod:`zipmodel.api`.

Human output goes to stderr (tables, progress bars only on a terminal), except the listings
of ``info`` and ``verify``, which go to stdout (as ``zstd -l``); ``--json`` prints one JSON
document on stdout. Exit codes: 0 ok, 1 error, 2 usage, 3 verification mismatch, 128 + N on
signal N (130 Ctrl-C).
"""

from __future__ import annotations

import re
import sys

import click

from .. import __version__
from ._errors import handled, install_signal_handlers

__all__ = ["cli", "main"]

# zstd's operation flags, given before any command: ``zipmodel -d x.zm`` is ``zipmodel
# decompress x.zm``, ``zipmodel -dc x.zm`` is ``zipmodel decompress -c x.zm``.
MODE_FLAGS = {"z": "compress", "d": "decompress", "t": "verify", "l": "info"}
_SHORT_CLUSTER = re.compile(r"^-[A-Za-z]+$")


def rewrite_mode_flags(args: list[str], commands) -> list[str]:
    """``[-d, ...]`` → ``[decompress, ...]`` when no command is named first (zstd style)."""
    if not args or args[0] in commands or args[0] in ("-h", "--help", "-V", "--version"):
        return args
    modes, rest = [], []
    for i, a in enumerate(args):
        if a == "--":
            rest.extend(args[i:])
            break
        if _SHORT_CLUSTER.match(a) and any(ch in MODE_FLAGS for ch in a[1:]):
            modes.extend(MODE_FLAGS[ch] for ch in a[1:] if ch in MODE_FLAGS)
            left = "".join(ch for ch in a[1:] if ch not in MODE_FLAGS)
            if left:
                rest.append("-" + left)
            continue
        rest.append(a)
    if not modes:
        return args
    if len(set(modes)) > 1:
        raise click.UsageError(
            "-z, -d, -t and -l choose one operation: " + " and ".join(sorted(set(modes)))
        )
    return [modes[0], *rest]


class ZipmodelGroup(click.Group):
    """A group that also takes zstd's ``-z``/``-d``/``-t``/``-l`` in place of a command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, rewrite_mode_flags(list(args), self.commands))


@click.group(
    cls=ZipmodelGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="zipmodel")
def cli() -> None:
    """Make model files smaller, byte for byte.

    \b
      zipmodel compress model.safetensors        # -> model.safetensors.zm
      zipmodel decompress model.safetensors.zm   # -> model.safetensors
      zipmodel info model.safetensors.zm         # sizes per dtype and tensor
      zipmodel verify model.safetensors.zm       # decode everything, check SHA-256
      zipmodel push me/model-zm my-model/        # compress and upload to the Hub
      zipmodel pull me/model-zm                  # download and restore the folder

    As in zstd, -z, -d, -t and -l before the arguments stand for compress, decompress, verify
    and info: zipmodel -d model.safetensors.zm, zipmodel -dc x.zm > x.

    Exit codes: 0 ok, 1 error, 2 usage error, 3 verification mismatch, 128+N on signal N
    (130 Ctrl-C).
    """


def _register() -> None:
    from .batch import batch
    from .compress import compress
    from .decompress import decompress
    from .demo import demo
    from .eval import eval_cmd
    from .export import export
    from .info import info
    from .pull import pull
    from .push import push
    from .verify import verify
    from .warmup import warmup

    for cmd in (
        compress, decompress, info, verify, eval_cmd, demo, warmup, push, pull, batch, export,
    ):  # fmt: skip
        cli.add_command(cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: signals and errors become messages and exit codes here."""
    install_signal_handlers()
    with handled():
        code = cli.main(args=argv, prog_name="zipmodel", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
