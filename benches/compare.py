"""zipmodel against the lossless peers and zstd -3, side by side, in one run.

    python benches/compare.py                              # corpus files, zipmodel + zstd -3
    python benches/compare.py --peers all --runs 3         # + every peer set up by benches/peers/setup_peers.sh
    python benches/compare.py --files a.safetensors --dtype-hint whisper_tiny_ct2.bin=f16

Prints one table per file: compressed fraction (container bytes / original), compress and
decompress MB/s (10^6 bytes of original per second) at each thread count, and whether the round
trip was byte-identical. Speeds are medians over --runs rounds; each round times every
configuration once, one after the other, in a new (seeded) order each round (a peer in a
fresh process per round, its warm-up outside the timer; the slow settings glyd cold and z4ai
max in the first round only), so the shared machine's load drifts hit zipmodel and the peers
alike and no configuration always runs right after a peer's process exits (that one was
measured up to 2x slower). The order-0 floor is each
stream of every tensor (after the float field split) entropy-coded on its own, headers raw.

zipmodel is timed in-process on data already in memory (imports excluded): compress_bytes and
decompress_bytes, which returns a fresh bytes object of the whole file (the same allocation
regime as the peers' in-memory APIs). For per-tensor peers (ZipNN, openzl, z4ai max) the
decompress column rebuilds the file's bytes too; their decode alone is in parentheses.
--files-mode adds zipmodel file to file (compress_file/decompress_file through the page cache)
and ZipNN's file-to-file route (benches/peers/run_peer.py, setting "file").
Peers run in their own virtual environments through benches/peers/run_peer.py; see
benches/peers/README.md for how each one is measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import time
from functools import partial
from pathlib import Path

import numpy as np
import zstandard

import zipmodel
from zipmodel.api import compress_bytes, decompress_bytes
from zipmodel.codecs.select import entropy_bytes
from zipmodel.dtypes import dtype_from_hint
from zipmodel.readers import read_layout
from zipmodel.readers.base import TENSOR
from zipmodel.stages import transform_for

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))
VENVS = Path(
    os.environ.get("ZIPMODEL_BENCH_VENVS", Path.home() / ".cache" / "zipmodel-bench" / "venvs")
)
DEFAULT_FILES = ["minilm_bf16.safetensors", "minilm_fp32.safetensors", "whisper_tiny_ct2.bin"]
DEFAULT_HINTS = {"whisper_tiny_ct2.bin": "f16"}
PEER_SETTINGS = {
    "zipnn": ["default"],
    "glyd": ["max", "cold"],
    "lmzip": ["default"],
    "z4ai": ["default", "max"],
    "openzl": ["default"],
}
SLOW = {("z4ai", "max"), ("glyd", "cold")}
FILE_SETTINGS = {"zipnn": "file"}  # --files-mode: the peer's own file-to-file route


def order0_floor(data: np.ndarray, hint: str | None) -> float:
    """Fraction of the file an order-0 coder of each split stream of each tensor would need."""
    layout = read_layout(data, dtype=dtype_from_hint(hint) if hint else None)
    total = 0.0
    for seg in layout.segments:
        if seg.kind != TENSOR:
            total += seg.size
            continue
        t = transform_for(seg.dtype)
        raw = data[seg.offset : seg.end]
        if seg.size % t.itemsize:
            total += seg.size
            continue
        for s in t.forward(raw):
            total += min(s.size, entropy_bytes(np.bincount(s, minlength=256)))
    return total / data.size


def _median_mbps(n: int, secs: list[float]) -> float:
    return n / 1e6 / statistics.median(secs)


def bench_zipmodel_files(path: Path, level: str, threads: int, runs: int, hint, tmp: Path) -> dict:
    """File to file through the page cache (compress_file / decompress_file), like ZipNN's route."""
    zm, back = tmp / "bench.zm", tmp / "bench.out"
    cs, ds = [], []
    zipmodel.compress_file(path, zm, level=level, threads=threads, dtype=hint, force=True)
    for _ in range(runs):
        t = time.perf_counter()
        zipmodel.compress_file(path, zm, level=level, threads=threads, dtype=hint, force=True)
        cs.append(time.perf_counter() - t)
        t = time.perf_counter()
        zipmodel.decompress_file(zm, back, threads=threads, force=True)
        ds.append(time.perf_counter() - t)
    ok = hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(path.read_bytes()).digest()
    n = path.stat().st_size
    return {
        "name": f"zipmodel {level} (file to file)",
        "fraction": zm.stat().st_size / n,
        "compress": _median_mbps(n, cs),
        "decompress": _median_mbps(n, ds),
        "roundtrip": "identical" if ok else "FAILED",
    }


def bench_zipmodel(data: bytes, level: str, threads: int, runs: int, hint) -> dict:
    blob = compress_bytes(data, level=level, threads=threads, dtype=hint)  # warm-up (JIT, caches)
    assert decompress_bytes(blob, threads=threads) == data
    cs, ds, ok = [], [], True
    for _ in range(runs):
        t = time.perf_counter()
        blob = compress_bytes(data, level=level, threads=threads, dtype=hint)
        cs.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = decompress_bytes(blob, threads=threads)
        ds.append(time.perf_counter() - t)
        ok &= out == data
    return {
        "name": f"zipmodel {level}",
        "fraction": len(blob) / len(data),
        "compress": _median_mbps(len(data), cs),
        "decompress": _median_mbps(len(data), ds),
        "roundtrip": "identical" if ok else "FAILED",
    }


def bench_zstd(data: bytes, threads: int, runs: int) -> dict:
    cctx = zstandard.ZstdCompressor(level=3, threads=threads if threads > 1 else 0)
    dctx = zstandard.ZstdDecompressor()
    cs, ds, ok = [], [], True
    for _ in range(runs):
        t = time.perf_counter()
        z = cctx.compress(data)
        cs.append(time.perf_counter() - t)
        t = time.perf_counter()
        out = dctx.decompress(z)
        ds.append(time.perf_counter() - t)
        ok &= out == data
    return {
        "name": "zstd -3",
        "fraction": len(z) / len(data),
        "compress": _median_mbps(len(data), cs),
        "decompress": _median_mbps(len(data), ds),
        "roundtrip": "identical" if ok else "FAILED",
    }


def bench_peer(peer: str, setting: str, path: Path, threads: int, runs: int, hint) -> dict:
    py = VENVS / peer / "bin" / "python"
    if not py.exists():
        return {
            "name": f"{peer} {setting}",
            "error": f"not set up ({py} missing): bash benches/peers/setup_peers.sh",
        }
    cmd = [
        str(py),
        str(HERE / "peers" / "run_peer.py"),
        "--peer",
        peer,
        "--setting",
        setting,
        "--file",
        str(path),
        "--threads",
        str(threads),
        "--runs",
        str(1 if (peer, setting) in SLOW else runs),
        "--json",
    ]
    if hint:
        cmd += ["--dtype", hint]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {
            "name": f"{peer} {setting}",
            "error": (r.stderr.strip().splitlines() or ["failed"])[-1],
        }
    d = json.loads(r.stdout)
    return {
        "name": f"{peer} {setting}",
        "fraction": d["fraction"],
        "compress": d["compress_MBps_median"],
        "decompress": d["decompress_MBps_median"],
        "decompress_tensors": d.get("decompress_tensors_only_MBps_median"),
        "roundtrip": d["roundtrip"],
        "mode": d.get("mode", ""),
        "runs": d.get("runs"),
    }


def _files_round(path: Path, level: str, threads: int, hint) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory(dir=os.environ.get("ZIPMODEL_BENCH_TMP")) as tmp:
        return bench_zipmodel_files(path, level, threads, 1, hint, Path(tmp))


def _ratio_lines(rows, peer_row: str, suffix: str, label: str, levels: str, threads) -> list:
    """zipmodel's speed (and size) over a peer row's, per level and thread count."""
    peer = rows.get(peer_row)
    if not peer or "error" in peer:
        return []
    lines = []
    for level in levels.split(","):
        z = rows.get(f"zipmodel {level}{suffix}")
        if not z:
            continue
        parts = []
        for t in threads:
            if t in z and t in peer and "compress" in peer[t]:
                part = (
                    f"{t}T: compress {z[t]['compress'] / peer[t]['compress']:.2f}x, "
                    f"decompress {z[t]['decompress'] / peer[t]['decompress']:.2f}x"
                )
                alone = peer[t].get("decompress_tensors")
                if alone:
                    part += f" (vs its decode alone {z[t]['decompress'] / alone:.2f}x)"
                parts.append(part)
        size = f"size {z['fraction'] / peer['fraction']:.4f}x; " if not suffix else ""
        lines.append(f"zipmodel {level}{suffix} vs {label}: {size}" + "; ".join(parts))
    return lines


def _merge(rs: list[dict]) -> dict:
    """One configuration's rounds: median speeds, any failed round trip shows."""
    ok = [r for r in rs if "error" not in r]
    if not ok:
        return rs[0]
    out = dict(ok[0])
    for key in ("compress", "decompress", "decompress_tensors"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        out[key] = statistics.median(vals) if vals else None
    bad = [r["roundtrip"] for r in ok if r.get("roundtrip") not in ("identical", None)]
    if bad:
        out["roundtrip"] = bad[0]
    out["runs"] = len(ok)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--files", nargs="*", help=f"files (default: {', '.join(DEFAULT_FILES)} from the corpus)"
    )
    ap.add_argument("--dtype-hint", action="append", default=[], metavar="FILE=DTYPE")
    ap.add_argument("--levels", default="fast,default,max")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--peers", default="", help="comma list of peers, or 'all'")
    ap.add_argument("--json-out", type=Path, help="also write the results here")
    ap.add_argument("--files-mode", action="store_true", help="also time zipmodel file to file")
    args = ap.parse_args()
    files = [Path(f) for f in args.files] if args.files else [CORPUS / f for f in DEFAULT_FILES]
    hints = dict(DEFAULT_HINTS)
    hints.update(dict(h.split("=", 1) for h in args.dtype_hint))
    threads = [int(t) for t in args.threads.split(",")]
    peers = list(PEER_SETTINGS) if args.peers == "all" else [p for p in args.peers.split(",") if p]
    results = {}
    print(
        f"zipmodel {zipmodel.__version__}; {os.cpu_count()} cores; medians of {args.runs} "
        "interleaved rounds\n"
    )
    for path in files:
        data = path.read_bytes()
        hint = hints.get(path.name)
        floor = order0_floor(np.frombuffer(data, np.uint8), hint)
        rows: dict[str, dict] = {}
        for th in threads:
            # Interleaved rounds: each round times every configuration once, so drifts in the
            # shared machine's load hit zipmodel and the peers alike; medians over rounds.
            got: dict[str, list[dict]] = {}
            for rnd in range(args.runs):
                levels = args.levels.split(",")
                todo = [partial(bench_zipmodel, data, lv, th, 1, hint) for lv in levels]
                if args.files_mode:
                    todo += [partial(_files_round, path, lv, th, hint) for lv in levels]
                todo.append(partial(bench_zstd, data, th, 1))
                for peer in peers:
                    settings = PEER_SETTINGS[peer]
                    if args.files_mode and peer in FILE_SETTINGS:
                        settings = [*settings, FILE_SETTINGS[peer]]
                    for setting in settings:
                        if (peer, setting) in SLOW and rnd:
                            continue  # once: minutes per run
                        todo.append(partial(bench_peer, peer, setting, path, th, 1, hint))
                # a new order each round (seeded): whichever ran right after a peer's process
                # exited was measured up to 2x slower, so no row may always follow another
                order = list(range(len(todo)))
                random.Random(rnd).shuffle(order)
                done = {i: todo[i]() for i in order}
                batch = [done[i] for i in range(len(todo))]
                for r in batch:
                    got.setdefault(r["name"], []).append(r)
            for name, rs in got.items():
                r = _merge(rs)
                row = rows.setdefault(name, {"name": name})
                row[th] = r
                if "error" not in r:
                    row.update(fraction=r["fraction"], roundtrip=r["roundtrip"])
                else:
                    row["error"] = r["error"]
        results[path.name] = {
            "bytes": len(data),
            "floor": floor,
            "sha256": hashlib.sha256(data).hexdigest(),
            "rows": rows,
        }
        print(
            f"### {path.name}  ({len(data) / 1e6:.1f} MB{', --dtype ' + hint if hint else ''}; order-0 floor {floor:.4f})\n"
        )
        head = (
            "| codec | fraction | "
            + " | ".join(f"compress MB/s {t}T | decompress MB/s {t}T" for t in threads)
            + " | round trip |"
        )
        print(head)
        print("|" + "---|" * (3 + 2 * len(threads)))
        for row in sorted(rows.values(), key=lambda r: r.get("fraction", 9)):
            if "error" in row and "fraction" not in row:
                print(
                    f"| {row['name']} | – | "
                    + " | ".join("– | –" for _ in threads)
                    + f" | {row['error'][:60]} |"
                )
                continue
            cells = []
            for t in threads:
                r = row.get(t, {})
                cells.append(
                    f"{r['compress']:.0f} | {r['decompress']:.0f}" if "compress" in r else "– | –"
                )
            print(
                f"| {row['name']} | {row['fraction']:.4f} | "
                + " | ".join(cells)
                + f" | {row.get('roundtrip', '?')} |"
            )
        for peer_row, suffix, label in (
            ("zipnn default", "", "ZipNN"),
            ("zipnn file", " (file to file)", "ZipNN's file route"),
        ):
            for line in _ratio_lines(rows, peer_row, suffix, label, args.levels, threads):
                print(line)
        print()
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
