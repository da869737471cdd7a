"""``zipmodel warmup``: compile (or load) every Numba kernel now, not on first use."""

from __future__ import annotations

import os

import click

from ._output import Output


@click.command()
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def warmup(quiet):
    """Compile every Numba kernel and fill the JIT cache.

    zipmodel compiles its kernels once per machine (about a minute on a small machine)
    and caches them; later runs load them in about a second. Run this in a Docker build or a
    CI cache step so users and jobs never pay the compile. Set NUMBA_CACHE_DIR where the installed package is read-only.
    """
    from .. import _jit

    out = Output(quiet=quiet)
    secs = _jit.warmup()
    _jit.mark_ready(secs)
    where = os.environ.get("NUMBA_CACHE_DIR") or "next to the installed kernels (or ~/.cache/numba)"
    out.line(f"kernels ready in {secs:.1f} s; Numba cache: {where}")
