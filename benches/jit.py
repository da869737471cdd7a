"""JIT cost on the user's path: cold compile once, cached load afterwards (fresh processes).

    python benches/jit.py [--runs 3]

Each row is a fresh interpreter with NUMBA_CACHE_DIR pointing at an empty (cold) or filled
(cached) folder, timing: `import zipmodel`, `zipmodel --help`, and compress + decompress of
the bundled sample through the CLI. The cached overhead is the cached run minus the same run
with the kernels already loaded in-process (measured by the last row).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{cmd} failed: {r.stderr}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from zipmodel.cli.demo import sample_path

    sample = sample_path()
    work = Path(tempfile.mkdtemp(prefix="zipmodel-jit-"))
    src = work / "sample.safetensors"
    shutil.copyfile(sample, src)
    py = sys.executable
    rt = [py, "-m", "zipmodel"]
    roundtrip = f"""
import zipmodel, sys
zipmodel.compress_file({str(src)!r}, {str(work / "x.zm")!r}, force=True)
zipmodel.decompress_file({str(work / "x.zm")!r}, {str(work / "y")!r}, force=True)
"""
    rows = {"import zipmodel": [], "zipmodel --help": [], "python -c pass": []}
    cold, cached = [], []
    for _ in range(args.runs):
        cache = Path(tempfile.mkdtemp(prefix="numba-cache-"))
        env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), ZIPMODEL_QUIET_JIT="1")
        cold.append(timed([py, "-c", roundtrip], env))
        cached.append(timed([py, "-c", roundtrip], env))
        rows["python -c pass"].append(timed([py, "-c", "pass"], env))
        rows["import zipmodel"].append(timed([py, "-c", "import zipmodel"], env))
        rows["zipmodel --help"].append(timed([*rt, "--help"], env))
        shutil.rmtree(cache, ignore_errors=True)
    # the same round trip in a process whose kernels are already loaded: the pure work
    import zipmodel

    zipmodel.compress_file(src, work / "x.zm", force=True)
    warm = []
    for _ in range(args.runs):
        t = time.perf_counter()
        zipmodel.compress_file(src, work / "x.zm", force=True)
        zipmodel.decompress_file(work / "x.zm", work / "y", force=True)
        warm.append(time.perf_counter() - t)
    med = statistics.median
    base = med(rows["python -c pass"])
    print(f"fresh processes, medians of {args.runs} (seconds)\n")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| python -c pass | {base:.2f} |")
    print(f"| import zipmodel | {med(rows['import zipmodel']):.2f} |")
    print(f"| zipmodel --help | {med(rows['zipmodel --help']):.2f} |")
    print(f"| compress + decompress sample, cold cache (compiles every kernel) | {med(cold):.2f} |")
    print(f"| compress + decompress sample, cached | {med(cached):.2f} |")
    print(f"| same work in a warm process | {med(warm):.3f} |")
    print(
        f"\ncold JIT cost ≈ {med(cold) - med(cached):.1f} s (once per machine); cached overhead over a warm "
        f"process ≈ {med(cached) - base - med(warm):.2f} s"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
