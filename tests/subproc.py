"""Running test code in a child Python with a changed environment (``NUMBA_DISABLE_JIT=1``,
``NUMBA_BOUNDSCHECK=1``): Numba reads those settings once, at import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_python(code: str, **env: str) -> None:
    """Run ``code`` in a new interpreter that can import the test modules; fail the test with
    its output unless it exits 0."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]), **env}
    r = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stdout + r.stderr
