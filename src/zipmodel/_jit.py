"""Numba kernels, compiled on first use only, with a word on the terminal while they compile.

Kernels are ``@njit(cache=True)``: a machine compiles each one the first time a command needs
it and later processes load the machine code from Numba's cache. Nothing here compiles
ahead: ``info`` compiles nothing, ``decompress`` only the decoders its container uses, and
``zipmodel warmup`` (``pipeline.warmup``) compiles everything for images and CI caches.

:func:`kernels` is the one door to ``zipmodel._kernels``: it imports the kernel module (and
so Numba) on first use and installs a listener on Numba's ``numba:compile`` event, which
Numba fires only on a cache miss. Each top-level compile is reported to the registered
reporter (:func:`set_reporter`; the CLI shows a spinner on a terminal), or by default as one
line on stderr, so a fresh machine never waits in silence. ``ZIPMODEL_QUIET_JIT=1`` silences
the default reporter.

Numba writes its cache beside the kernel modules when that folder is writable, else under
``$NUMBA_CACHE_DIR`` (or ``~/.cache/numba``). Two processes compiling at once are safe: Numba
writes each cache file under a temporary name and renames it into place.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType

__all__ = ["KERNEL_MODULES", "compiled_here", "kernels", "readonly", "set_reporter"]

KERNEL_MODULES = ("split", "xxh3", "huffman", "rans", "rans2d", "frame", "choose", "kquant")

# reporter(event, kernel, seconds): event is "start" or "end" of one top-level compile
Reporter = Callable[[str, str, float], None]

_lock = threading.Lock()
_modules: dict[str, ModuleType] = {}
_listening = False
_reporter: Reporter | None = None
_local = threading.local()
_compiled: list[tuple[str, float]] = []  # (kernel, seconds) compiled in this process
_said: list[str] = []  # the default reporter's one line off a terminal was printed


def kernels(name: str) -> ModuleType:
    """``zipmodel._kernels.<name>``, imported on first use with the compile listener on."""
    m = _modules.get(name)
    if m is not None:
        return m
    with _lock:
        if name not in _modules:
            _listen()
            _modules[name] = importlib.import_module(f"zipmodel._kernels.{name}")
    return _modules[name]


def set_reporter(reporter: Reporter | None) -> None:
    """Route compile notices to ``reporter`` (None: the default line on stderr)."""
    global _reporter
    _reporter = reporter


def compiled_here() -> list[tuple[str, float]]:
    """The kernels this process compiled (cache misses), with the seconds each took."""
    return list(_compiled)


def _default_report(event: str, kernel: str, seconds: float) -> None:
    """On a terminal, a line per kernel while it compiles, finished with its time; elsewhere
    (CI logs) one line the first time a process compiles anything."""
    if os.environ.get("ZIPMODEL_QUIET_JIT") == "1":
        return
    if sys.stderr.isatty():
        if event == "start":
            print(f"zipmodel: compiling {kernel} for this machine (once; cached afterwards)...",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
        else:
            print(f" {seconds:.1f} s", file=sys.stderr, flush=True)
    elif event == "start" and not _said:
        _said.append(kernel)
        print(
            f"zipmodel: compiling Numba kernels for this machine ({kernel} first); this happens "
            "once per kernel and is cached",
            file=sys.stderr,
            flush=True,
        )


def _listen() -> None:
    global _listening
    if _listening:
        return
    from numba.core import event

    class _Listener(event.Listener):
        def on_start(self, ev):
            depth = getattr(_local, "depth", 0)
            _local.depth = depth + 1
            if depth == 0:
                _local.t0 = time.perf_counter()
                _report("start", _name(ev), 0.0)

        def on_end(self, ev):
            _local.depth = depth = getattr(_local, "depth", 1) - 1
            if depth == 0:
                secs = time.perf_counter() - getattr(_local, "t0", time.perf_counter())
                name = _name(ev)
                _compiled.append((name, secs))
                _report("end", name, secs)

    event.register("numba:compile", _Listener())
    _listening = True


def _name(ev) -> str:
    f = getattr(ev.data.get("dispatcher"), "py_func", None)
    return f.__name__.lstrip("_") if f is not None else "a kernel"


def _report(event: str, kernel: str, seconds: float) -> None:
    r = _reporter or _default_report
    try:
        r(event, kernel, seconds)
    except Exception:  # a notice must never break a compile
        pass


def readonly(a):
    """``a`` as a read-only view, for a kernel argument the kernel only reads.

    Numba compiles one specialisation per writeable flag, and the same stream arrives both
    ways (mapped tensor bytes and raw payloads are read-only; decoded or transformed streams
    are not): passing every input read-only means one signature, the one ``zipmodel warmup``
    compiled, instead of a second compile on the first caller of the other kind.
    """
    if not a.flags.writeable:
        return a
    v = a.view()
    v.flags.writeable = False
    return v
