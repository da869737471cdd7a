"""Option sets shared by several commands (decorator factories)."""

from __future__ import annotations

import re

import click

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


class ByteSize(click.ParamType):
    """``1M``, ``256K``, ``4MiB`` or a plain number of bytes (K/M/G are powers of 1024)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = _SIZE.match(str(value))
        if not m:
            self.fail(f"{value!r} is not a size like 1M, 256K or 1048576", param, ctx)
        mult = 1024 ** "bkmgt".index((m.group(2) or "b").lower())
        return int(float(m.group(1)) * mult)


def threads_option(f):
    return click.option(
        "-T",
        "--threads",
        type=click.IntRange(min=0),
        default=0,
        show_default=True,
        help="Worker threads; 0 uses every core. The output does not depend on it.",
    )(f)


def output_options(f):
    """-q, --json and --no-progress."""
    f = click.option("--no-progress", is_flag=True, help="Never show a progress bar.")(f)
    f = click.option(
        "--json",
        "json_mode",
        is_flag=True,
        help="Print one JSON document with the results on stdout (schema in docs/cli.md).",
    )(f)
    f = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(f)
    return f


def write_options(f):
    """-o, -c, -f, --rm."""
    f = click.option(
        "--rm",
        "remove",
        is_flag=True,
        help="Delete each input once its output has been written and verified.",
    )(f)
    f = click.option(
        "-f",
        "--force",
        is_flag=True,
        help="Overwrite existing outputs (and write binary data to a terminal).",
    )(f)
    f = click.option(
        "-c",
        "--stdout",
        "to_stdout",
        is_flag=True,
        help="Write the output to standard output (one input only).",
    )(f)
    f = click.option(
        "-o",
        "--output",
        type=click.Path(allow_dash=True),
        help="Output file, or folder for a folder input (one input only). Default: next to the input.",
    )(f)
    return f
