"""``zipmodel warmup``: compile every Numba kernel now, not on first use."""

from __future__ import annotations

import os

import click

from ._output import Output


@click.command()
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=0, max=64),
    default=0,
    show_default=True,
    help="Processes compiling at once; 0: one per core (at most one per kernel group).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def warmup(jobs, quiet):
    """Compile every Numba kernel (all levels, every decoder) into the JIT cache.

    Commands compile the kernels they use on first use and cache them; this compiles all of
    them ahead, in parallel processes. Run it in a Docker build or a CI cache step so users
    and jobs never pay the compile. Set NUMBA_CACHE_DIR when the installed package is
    read-only (see docs/ci.md).
    """
    from .. import warmup as warm

    out = Output(quiet=quiet)
    secs = warm.warmup(jobs)
    where = os.environ.get("NUMBA_CACHE_DIR") or "next to the installed kernels (or ~/.cache/numba)"
    out.line(f"kernels ready in {secs:.1f} s; Numba cache: {where}")
