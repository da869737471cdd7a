"""Bounding the work a test's code does, not the seconds it takes.

A wall-clock bound ("fails within 1 s") flakes on a loaded CI machine and passes on a fast one
whatever the code does. What those tests mean is "no hang, no exponential walk, no huge
allocation", and that is countable: the function calls zipmodel's own code makes (Python calls
into or out of it, and calls of C functions from it: a loop of ``struct.unpack_from`` counts),
and the peak of memory allocated (``tracemalloc``).
"""

from __future__ import annotations

import os
import sys
import threading
import tracemalloc
from pathlib import Path

import zipmodel

SRC = str(Path(zipmodel.__file__).resolve().parent) + os.sep


class WorkLimitExceeded(BaseException):
    """More calls than allowed: the work is stopped where it is (not an ``Exception``, so
    no ``except Exception`` of the code under test swallows it)."""


class WorkBudget:
    """``with WorkBudget(calls=N, peak_bytes=M) as w: ...`` counts the calls made in zipmodel's
    code (this thread and threads started inside) and raises :class:`WorkLimitExceeded` at
    call ``N + 1``, so a hang fails fast, on any machine; on exit, checks that no more than
    ``M`` bytes were allocated at the peak. ``w.calls`` and ``w.peak`` are what was used."""

    def __init__(self, *, calls: int, peak_bytes: int | None = None):
        self.limit = calls
        self.peak_limit = peak_bytes
        self.calls = 0
        self.peak = 0
        self._tracing = False
        self._active = False

    def _hook(self, frame, event, _arg):
        if not self._active:  # a thread started inside outlived the budget: let it go
            sys.setprofile(None)
            return
        if event == "call":
            back = frame.f_back
            ours = frame.f_code.co_filename.startswith(SRC) or (
                back is not None and back.f_code.co_filename.startswith(SRC)
            )
        elif event == "c_call":
            ours = frame.f_code.co_filename.startswith(SRC)
        else:
            return
        if ours:
            self.calls += 1
            if self.calls > self.limit:
                sys.setprofile(None)
                raise WorkLimitExceeded(f"more than {self.limit} calls in zipmodel code")

    def __enter__(self) -> WorkBudget:
        if self.peak_limit is not None:
            self._tracing = not tracemalloc.is_tracing()
            if self._tracing:
                tracemalloc.start()
            tracemalloc.reset_peak()
        self._active = True
        threading.setprofile(self._hook)
        sys.setprofile(self._hook)
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        self._active = False
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        if self.peak_limit is not None:
            self.peak = tracemalloc.get_traced_memory()[1]
            if self._tracing:
                tracemalloc.stop()
            if exc_type is None:
                assert self.peak <= self.peak_limit, (
                    f"allocated {self.peak} bytes at the peak, more than {self.peak_limit}"
                )
