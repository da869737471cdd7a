"""The ``zipmodel`` command line: thin click commands over :mod:`zipmodel.api`.

Human output goes to stderr (tables, progress bars only on a terminal); ``--json`` prints one
JSON document on stdout. Exit codes: 0 ok, 1 error, 2 usage, 3 verification mismatch.
"""

from __future__ import annotations

import click

from .. import __version__
from ._errors import handled

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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

    Exit codes: 0 ok, 1 error, 2 usage error, 3 verification mismatch.
    """


def _register() -> None:
    from .compress import compress
    from .decompress import decompress
    from .demo import demo
    from .eval import eval_cmd
    from .info import info
    from .pull import pull
    from .push import push
    from .verify import verify
    from .warmup import warmup

    for cmd in (compress, decompress, info, verify, eval_cmd, demo, warmup, push, pull):
        cli.add_command(cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    with handled():
        cli.main(args=argv, prog_name="zipmodel")
