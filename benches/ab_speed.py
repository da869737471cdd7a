"""A/B speed of two zipmodel source trees, with ZipNN in the same rounds, in shuffled order.

    git worktree add /tmp/old <commit>
    python benches/ab_speed.py --old /tmp/old/src [--rounds 5] [--files F ...]

Every configuration (tree × file × level × threads, and ZipNN × file × threads) runs once per
round in a fresh process, in a new seeded order each round, so the shared machine's load
drifts hit both trees and the peer alike. A zipmodel process imports the tree given by
PYTHONPATH, warms up on the file (kernels loaded, buffers faulted), then times
``compress_bytes`` and ``decompress_bytes`` (the best of 3 calls, in-process, as compare.py
times them). ZipNN runs through benches/peers/run_peer.py in its own venv. The table gives
medians over the rounds in MB/s (10^6 original bytes per second) and each tree's ratio to
ZipNN in the same rounds; the containers of both trees are compared byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NEW = HERE.parent / "src"
CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))
VENVS = Path(
    os.environ.get("ZIPMODEL_BENCH_VENVS", Path.home() / ".cache" / "zipmodel-bench" / "venvs")
)

CHILD = r"""
import hashlib, json, sys, time
from zipmodel.api import compress_bytes, decompress_bytes
path, level, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
blob = compress_bytes(data, level=level, threads=threads)
assert decompress_bytes(blob, threads=threads) == data
c, d = [], []
for _ in range(3):
    t = time.perf_counter(); blob = compress_bytes(data, level=level, threads=threads)
    c.append(time.perf_counter() - t)
    t = time.perf_counter(); out = decompress_bytes(blob, threads=threads)
    d.append(time.perf_counter() - t)
print(json.dumps({"c": len(data) / 1e6 / min(c), "d": len(data) / 1e6 / min(d),
                  "sha": hashlib.sha256(blob).hexdigest(), "size": len(blob)}))
"""


def zipmodel_run(tree: Path, cache: Path, path: Path, level: str, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=str(cache), ZIPMODEL_QUIET_JIT="1")
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), level, str(threads)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(r.stdout.strip().splitlines()[-1])


def zipnn_run(path: Path, threads: int) -> dict:
    py = VENVS / "zipnn" / "bin" / "python"
    r = subprocess.run(
        [str(py), str(HERE / "peers" / "run_peer.py"), "--peer", "zipnn", "--file", str(path),
         "--threads", str(threads), "--runs", "3", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    doc = json.loads(r.stdout)
    return {"c": doc["compress_MBps_median"], "d": doc["decompress_MBps_median"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="the other tree's src/ folder")
    ap.add_argument("--new", type=Path, default=NEW)
    ap.add_argument("--files", nargs="*", type=Path,
                    default=[CORPUS / "minilm_bf16.safetensors", CORPUS / "minilm_fp32.safetensors"])  # fmt: skip
    ap.add_argument("--levels", default="fast,default")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    levels, threads = args.levels.split(","), [int(t) for t in args.threads.split(",")]
    trees = {"old": args.old, "new": args.new}
    caches = {k: Path.home() / ".cache" / f"zipmodel-ab-{hashlib.sha1(str(v).encode()).hexdigest()[:8]}" for k, v in trees.items()}  # fmt: skip
    peer = (VENVS / "zipnn" / "bin" / "python").exists()
    configs = [
        ("zm", t, f, lv, th) for t in trees for f in args.files for lv in levels for th in threads
    ]
    if peer:
        configs += [("zipnn", None, f, None, th) for f in args.files for th in threads]
    res: dict[tuple, list[dict]] = {}
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        order = configs[:]
        rng.shuffle(order)
        for kind, tree, f, lv, th in order:
            out = (
                zipmodel_run(trees[tree], caches[tree], f, lv, th)
                if kind == "zm"
                else zipnn_run(f, th)
            )
            res.setdefault((kind, tree, f, lv, th), []).append(out)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = statistics.median
    print(
        f"A/B speed, medians of {args.rounds} shuffled rounds, MB/s (ratio to ZipNN in the same rounds)\n"
    )
    print(
        "| file | level | threads | old compress | new compress | old decompress | new decompress | bytes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for f in args.files:
        for lv in levels:
            for th in threads:
                o, n = res[("zm", "old", f, lv, th)], res[("zm", "new", f, lv, th)]
                z = res.get(("zipnn", None, f, None, th))
                zc = med(x["c"] for x in z) if z else None
                zd = med(x["d"] for x in z) if z else None

                def cell(v, ref):
                    return f"{v:.0f}" + (f" ({v / ref:.2f}x)" if ref else "")

                same = {x["sha"] for x in o} == {x["sha"] for x in n} and len(
                    {x["sha"] for x in o}
                ) == 1
                print(f"| {f.name} | {lv} | {th} | {cell(med(x['c'] for x in o), zc)} | {cell(med(x['c'] for x in n), zc)} "
                      f"| {cell(med(x['d'] for x in o), zd)} | {cell(med(x['d'] for x in n), zd)} | {'identical' if same else 'DIFFER'} |")  # fmt: skip
    if peer:
        print("\nZipNN 0.5.4 (same rounds): " + ", ".join(
            f"{f.name} T{th} compress {med(x['c'] for x in res[('zipnn', None, f, None, th)]):.0f} / "
            f"decompress {med(x['d'] for x in res[('zipnn', None, f, None, th)]):.0f}"
            for f in args.files for th in threads))  # fmt: skip


if __name__ == "__main__":
    main()
