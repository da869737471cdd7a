"""zipmodel batch against the shell: models/s and MB/s on four real model files.

    python benches/batch.py [--runs 3] [--corpus ~/.cache/zipmodel-corpus]

Ways of compressing the same four files (76-98 MB each) into a fresh folder, each timed
``--runs`` times in shuffled order after one warm-up round (the sources are then in the page
cache for every way alike), medians reported:

- ``zipmodel batch --workers 1`` and ``--workers 2`` (a LocalCluster; its start is counted),
- a shell loop of ``zipmodel compress`` (``-T 0``: every core on each file in turn),
- ``xargs -P 2 zipmodel compress -T 1`` (two files at a time, one thread each),

- ``zipmodel batch --scheduler ADDR`` on a running LocalCluster of 1 and of 2 workers (started
  before the rounds, as a cluster one submits to is: the workers' start is not counted, the
  command's own start and Dask client are),

then a rerun of the finished batch (resume: everything skipped), and the machine's own
ceiling: one warm process compressing minilm_fp32 on one thread, alone and beside a second
such process (what two cores give two single-thread workers here, before any fixed cost).
Prints a Markdown table (docs/batch.md holds the one measured there). Model files are never committed: they come from
the corpus (shared/corpus/fetch.sh).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FILES = [
    "minilm_fp32.safetensors",
    "whisper_tiny_ct2.bin",
    "craft_mlt_25k.pth",
    "smollm2-135m-q4_1.gguf",
]
ZIPMODEL = [sys.executable, "-m", "zipmodel"]


RUNNING_1 = "zipmodel batch --scheduler (running cluster, 1 worker)"
RUNNING_2 = "zipmodel batch --scheduler (running cluster, 2 workers)"


def ways(files: list[str], level: str, running: dict[str, str]) -> dict[str, callable]:
    """The command of each way; ``running``: way name -> address of its running cluster."""
    quoted = " ".join(f"'{f}'" for f in files)
    zm = " ".join(ZIPMODEL)
    lv = ["--level", level]
    return {
        "zipmodel batch --workers 1": lambda out: [
            *ZIPMODEL, "batch", *files, "-o", out, "--workers", "1", "-q", *lv,
        ],
        "zipmodel batch --workers 2": lambda out: [
            *ZIPMODEL, "batch", *files, "-o", out, "--workers", "2", "-q", *lv,
        ],
        "for f in ...; zipmodel compress (-T 0)": lambda out: [
            "bash", "-c", f"for f in {quoted}; do {zm} compress \"$f\" -o '{out}' -q --level {level} || exit 1; done",
        ],
        "xargs -P 2 zipmodel compress -T 1": lambda out: [
            "bash", "-c",
            f"printf '%s\\n' {quoted} | xargs -P 2 -I{{}} {zm} compress {{}} -o '{out}' -T 1 -q --level {level}",
        ],
        **{
            name: (lambda out, a=addr: [
                *ZIPMODEL, "batch", *files, "-o", out, "--scheduler", a, "-q", *lv,
            ])
            for name, addr in running.items()
        },
    }  # fmt: skip


# One warm process: compress FILE on one thread, 8 times; prints the median seconds.
STEADY = """
import statistics, sys, time
from zipmodel import files
src, out = sys.argv[1], sys.argv[2]
files.compress_file(src, out, threads=1, force=True)
ts = []
for _ in range(8):
    t = time.perf_counter()
    files.compress_file(src, out, threads=1, force=True)
    ts.append(time.perf_counter() - t)
print(statistics.median(ts))
"""


def ceiling(src: str, tmp: str, rounds: int) -> tuple[float, float]:
    """Median seconds of one warm single-thread compress of ``src``: alone, and while a
    second process does the same (medians over ``rounds`` alternating rounds)."""
    alone, beside = [], []

    def run(n: int) -> list[float]:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", STEADY, src, f"{tmp}/ceiling{i}.zm"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(n)
        ]
        return [float(p.communicate()[0]) for p in procs]

    for _ in range(rounds):
        alone += run(1)
        beside += run(2)
    return statistics.median(alone), statistics.median(beside)


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--level", default="default", help="compression level of every way")
    ap.add_argument(
        "--corpus",
        type=Path,
        default=Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache/zipmodel-corpus")),
    )
    args = ap.parse_args()
    files = [str(args.corpus / f) for f in FILES]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        sys.exit(f"missing corpus files (shared/corpus/fetch.sh): {missing}")
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    from distributed import LocalCluster

    opts = dict(threads_per_worker=1, processes=True, dashboard_address=":0", memory_limit=0)
    with (
        LocalCluster(n_workers=1, **opts) as c1,
        LocalCluster(n_workers=2, **opts) as c2,
        tempfile.TemporaryDirectory(prefix="zm-bench-batch-") as tmp,
    ):
        running = {RUNNING_1: c1.scheduler_address, RUNNING_2: c2.scheduler_address}
        table = ways(files, args.level, running)
        times: dict[str, list[float]] = {k: [] for k in table}

        def one(name: str) -> float:
            out = Path(tmp) / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            return timed(table[name](str(out)))

        for name in table:  # warm-up: page cache, Numba cache, the running workers' kernels
            one(name)
        order = [n for n in table for _ in range(args.runs)]
        random.Random(0).shuffle(order)
        for name in order:
            times[name].append(one(name))
            print(f"  {name}: {times[name][-1]:.2f} s", file=sys.stderr)
        out = Path(tmp) / "out"
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run(table["zipmodel batch --workers 2"](str(out)), check=True)
        resume = [timed(table["zipmodel batch --workers 2"](str(out))) for _ in range(args.runs)]
        alone, beside = ceiling(files[0], tmp, args.runs)

    one_worker = statistics.median(times["zipmodel batch --workers 1"])
    running_one = statistics.median(times[RUNNING_1])
    print(
        f"\n{len(files)} models, {mb:.0f} MB, {os.cpu_count()} cores, --level {args.level}, "
        f"medians of {args.runs}\n"
    )
    print("| way | seconds | models/s | MB/s | vs batch --workers 1 |")
    print("|---|---:|---:|---:|---:|")
    for name, ts in times.items():
        s = statistics.median(ts)
        print(
            f"| `{name}` | {s:.2f} | {len(files) / s:.2f} | {mb / s:.0f} | {one_worker / s:.2f}x |"
        )
    print(
        f"| `zipmodel batch` again (resume: all skipped) | {statistics.median(resume):.2f} | | | |"
    )
    print(
        f"\nOn a running cluster, 2 workers vs 1: "
        f"{running_one / statistics.median(times[RUNNING_2]):.2f}x."
    )
    print(
        f"\nThe machine: a warm one-thread compress of {Path(files[0]).name} takes {alone:.3f} s "
        f"alone and {beside:.3f} s beside a second one: two processes do {2 * alone / beside:.2f}x "
        "the work of one (the most two one-thread workers can give, before fixed costs)."
    )


if __name__ == "__main__":
    main()
