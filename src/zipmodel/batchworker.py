"""What a local batch's worker processes start with: imported once by the fork server they
are forked from (``zipmodel.batching``), so each worker begins with Dask, zipmodel and the
compress kernels of the batch's level already loaded instead of loading them on its first
task, and the loading happens once for all of them, while the client is still starting.

Importing this module does that only when ``ZIPMODEL_BATCH_WARM`` names a level (set in the
fork server's environment only); anything that goes wrong is left for the first task to meet, since
a worker loads what it needs on first use anyway. It never starts a thread: the fork server
forks from this process. The workers ignore SIGINT (the client stops them).
"""

from __future__ import annotations

import contextlib
import os
import signal

from .batchplan import WARM_ENV

__all__ = ["preload"]


def preload(level: str) -> None:
    """Import what a worker runs, then code a small checkpoint at ``level`` on one thread
    (its kernels load from Numba's cache, or compile there once)."""
    import distributed  # noqa: F401  (a worker's own start then imports nothing)

    from . import files, folder  # noqa: F401  (what the task calls)
    from .files import compress_bytes
    from .samples import safetensors_sample

    compress_bytes(safetensors_sample(), level=level, chunk_size=16 << 10, threads=1)


if os.environ.get(WARM_ENV):
    # A Ctrl-C at the terminal reaches the whole process group. The client handles it: it
    # cancels the tasks and closes the cluster, whose nannies stop the workers. The server
    # ignores SIGINT once it serves, but not while it preloads, and its children get back
    # the handler it had before serving: ignore it here, for the server and every worker,
    # which would otherwise each print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(Exception):  # the first task meets it, with its message
        preload(os.environ[WARM_ENV])
