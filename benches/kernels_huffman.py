"""The huffman codec and its kernels: size against the order-0 floor, encode and decode speed.

    python benches/kernels_huffman.py              # all three data sets, 7 interleaved runs
    python benches/kernels_huffman.py --runs 11 --no-jit

Data, in chunks of 512 Ki symbols (1 MiB of BF16 source):
  exponent  the exponent stream of every BF16 tensor of minilm_bf16.safetensors (the corpus);
  geometric synthetic, exponent-like: 100 + Geometric(0.3);
  uniform   uniform random bytes (Huffman cannot gain: the chooser stores such streams raw).

Speeds are 10^6 symbols per second, medians over --runs rounds in which every configuration
takes a turn (the machine is shared and noisy). Decoding writes into an output buffer that is
allocated and faulted in beforehand, so page faults are not measured. "codec" is the public
path (header checks, table build per chunk, then the multi-symbol kernel, or the one-symbol
kernel for tables that hold under 1.6 symbols per lookup, like uniform data's); "multi" and
"single" time the decode kernels alone on tables built beforehand: up to 4 symbols per lookup
against one. 2 threads: a ThreadPoolExecutor(2) made once; the chunk list is cut into two
halves; the figures are medians over the runs in which the machine gave this process two
cores (a CPU-bound nogil loop, timed just before and after, scaled at least 1.7x).
Size is payload bytes over the symbols, in bits per symbol; the floor is the order-0 entropy
of each chunk. JIT: fresh processes with an empty NUMBA_CACHE_DIR, then with the cache filled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numba import njit

from zipmodel._kernels import huffman as kern
from zipmodel.codecs.huffman import HuffmanCodec, header_size, split_bounds

CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))
CHUNK = 1 << 19


def exponent_stream(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    (n,) = struct.unpack_from("<Q", raw)
    header = json.loads(raw[8 : 8 + n])
    parts = []
    for name, t in header.items():
        if name != "__metadata__" and t["dtype"] == "BF16":
            a, b = t["data_offsets"]
            parts.append(np.frombuffer(raw, np.uint16, (b - a) // 2, 8 + n + a))
    w = np.concatenate(parts)
    return ((w << 1 | w >> 15) >> 8).astype(np.uint8)


def datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    path = CORPUS / "minilm_bf16.safetensors"
    if path.exists():
        out["exponent"] = exponent_stream(path)
    else:
        print(f"(no {path}: skipping the exponent stream)", file=sys.stderr)
    out["geometric"] = np.minimum(99 + rng.geometric(0.3, 32 * CHUNK), 255).astype(np.uint8)
    out["uniform"] = rng.integers(0, 256, 32 * CHUNK, dtype=np.uint8)
    return out


def entropy_bits(chunk: np.ndarray) -> float:
    h = np.bincount(chunk, minlength=256)
    p = h[h > 0] / chunk.size
    return float(-(p * np.log2(p)).sum()) * chunk.size


def prepared(payload: bytes, size: int):
    """(words, wbounds, bounds, single, multi) of one payload, tables built beforehand."""
    buf = np.frombuffer(payload, np.uint8)
    nwords = struct.unpack_from("<4I", payload, 4)
    k = int(np.unpackbits(buf[20:52]).sum())
    words = buf[header_size(k) :].view(np.uint64)
    single, multi = np.zeros(4096, np.uint16), np.zeros(4096, np.uint64)
    table = buf[20 : 52 + (k + 1) // 2]
    held = kern._build_tables(
        table, np.zeros(256, np.uint8), np.zeros(256, np.uint32), single, multi
    )
    assert held >= 4096
    wb = np.cumsum([0, *nwords], dtype=np.uint64)
    return words, wb, np.array(split_bounds(size), np.uint64), single, multi, table


@njit(nogil=True)
def _spin(n):
    s = 0
    for i in range(n):
        s = (s * 1103515245 + i) & 0xFFFFFFFF
    return s


def machine_scaling(pool: ThreadPoolExecutor) -> float:
    """How a CPU-bound nogil loop scales to 2 threads right now (the VM is shared, and at
    times gives this process one core)."""
    _spin(1)
    t0 = time.perf_counter()
    _spin(20_000_000)
    t1 = time.perf_counter()
    list(pool.map(_spin, [20_000_000] * 2))
    return 2 * (t1 - t0) / (time.perf_counter() - t1)


def halves(items):
    h = (len(items) + 1) // 2
    return [items[:h], items[h:]]


def bench_dataset(name: str, data: np.ndarray, runs: int, pool: ThreadPoolExecutor) -> dict:
    codec, codec11 = HuffmanCodec(), HuffmanCodec(max_code_bits=11)
    chunks = [data[i : i + CHUNK] for i in range(0, data.size, CHUNK)]
    payloads = [bytes(codec.encode(c)) for c in chunks]  # an encode returns its scratch
    out = np.zeros(data.size, np.uint8)  # pre-faulted
    outs = [out[i : i + CHUNK] for i in range(0, data.size, CHUNK)]
    for p, o in zip(payloads, outs):
        codec.decode(memoryview(p), o)
    assert np.array_equal(out, data), f"{name}: round trip failed"
    prep = [prepared(p, c.size) for p, c in zip(payloads, chunks)]
    jobs = list(zip(payloads, outs, prep))

    def encode(part):
        for c in part:
            codec.encode(c)

    def decode(part):
        for p, o, _ in part:
            codec.decode(memoryview(p), o)

    def kernel_multi(part):
        for _, o, (w, wb, b, single, multi, _) in part:
            kern._decode4(w, wb, single, multi, o, b)

    def kernel_single(part):
        for _, o, (w, wb, b, single, _, _) in part:
            kern._decode4_single(w, wb, single, o, b)

    def build(part):
        lens, codes = np.zeros(256, np.uint8), np.zeros(256, np.uint32)
        for _, _, (_, _, _, single, multi, table) in part:
            kern._build_tables(table, lens, codes, single, multi)

    configs = {
        "encode": (encode, chunks),
        "decode codec": (decode, jobs),
        "decode kernel multi": (kernel_multi, jobs),
        "decode kernel single": (kernel_single, jobs),
    }
    kernel_single(jobs)  # compile outside the timing
    times = {(k, t): [] for k in configs for t in (1, 2)}
    build_times = []
    two_cores = []  # per run: did the machine give 2 cores (a nogil loop scaled >= 1.7x)?
    for _ in range(runs):
        before = machine_scaling(pool)
        for key, (fn, items) in configs.items():
            t0 = time.perf_counter()
            fn(items)
            times[key, 1].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            list(pool.map(fn, halves(items)))
            times[key, 2].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build(jobs)
        build_times.append((time.perf_counter() - t0) / len(jobs))
        two_cores.append(min(before, machine_scaling(pool)) >= 1.7)
    assert np.array_equal(out, data)
    n = data.size

    def kept(v, threads):  # 2-thread figures from the runs that had 2 cores, if any did
        good = [t for t, ok in zip(v, two_cores) if ok]
        return good if threads == 2 and good else v

    floor = sum(entropy_bits(c) for c in chunks) / n
    return {
        "speed": {k: n / statistics.median(kept(v, k[1])) / 1e6 for k, v in times.items()},
        "two_core_runs": sum(two_cores),
        "bits": sum(map(len, payloads)) * 8 / n,
        "bits11": sum(len(codec11.encode(c)) for c in chunks) * 8 / n,
        "floor": floor,
        "table_us": statistics.median(build_times) * 1e6,
        "chunks": len(chunks),
        "symbols": n,
    }


JIT_SCRIPT = """
import time
t0 = time.perf_counter()
import numpy as np
from zipmodel.codecs.huffman import HuffmanCodec
import numba  # noqa: F401 (imported by the kernels: part of the first-call cost below)
t1 = time.perf_counter()
c = HuffmanCodec()
x = np.minimum(99 + np.random.default_rng(0).geometric(0.3, 5000), 255).astype(np.uint8)
t = time.perf_counter(); c.estimate(np.bincount(x, minlength=256), x.size); te = time.perf_counter() - t
t = time.perf_counter(); p = c.encode(x); tc = time.perf_counter() - t
o = np.empty(x.size, np.uint8)
t = time.perf_counter(); c.decode(memoryview(p), o); td = time.perf_counter() - t
print(f"{t1 - t0:.2f} {te:.2f} {tc:.2f} {td:.2f}")
"""


def jit_times(reps: int = 2) -> list[tuple[str, list[float]]]:
    rows = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for label in ("cold", "cached"):
                r = subprocess.run(
                    [sys.executable, "-c", JIT_SCRIPT],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                rows.append((label, [float(v) for v in r.stdout.split()]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-jit", action="store_true", help="skip the compile-time measurement")
    ap.add_argument("--data", nargs="*", help="data sets to run (default: all)")
    args = ap.parse_args()
    pool = ThreadPoolExecutor(2)
    results = {
        name: bench_dataset(name, d, args.runs, pool)
        for name, d in datasets().items()
        if not args.data or name in args.data
    }
    print(
        f"huffman codec: chunks of {CHUNK} symbols; medians of {args.runs} runs; "
        f"speeds in 10^6 symbols/s, output pre-faulted"
    )
    print()
    print(
        f"{'data':10} {'symbols':>9} {'floor':>7} {'L=12':>7} {'L=11':>7} {'over':>7} {'table µs':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:10} {r['symbols']:>9} {r['floor']:7.4f} {r['bits']:7.4f} {r['bits11']:7.4f} "
            f"{r['bits'] - r['floor']:7.4f} {r['table_us']:9.1f}"
        )
    print("(bits per symbol, header and padding included; over = L=12 minus the floor)")
    print()
    keys = ["encode", "decode codec", "decode kernel multi", "decode kernel single"]
    short = ["encode", "decode", "multi", "single"]
    print(
        f"{'data':10} " + " ".join(f"{k + ' ' + str(t) + 'T':>10}" for k in short for t in (1, 2))
    )
    for name, r in results.items():
        print(f"{name:10} " + " ".join(f"{r['speed'][k, t]:10.0f}" for k in keys for t in (1, 2)))
    print(
        "2T: medians over the runs in which a CPU-bound nogil loop ran >= 1.7x as fast on 2 "
        "threads before and after (the VM is shared): "
        + ", ".join(f"{name} {r['two_core_runs']}/{args.runs}" for name, r in results.items())
    )
    if not args.no_jit:
        print()
        print("JIT, fresh process (s): import, first estimate, first encode, first decode")
        for label, v in jit_times():
            print(
                f"  {label:7} import {v[0]:.2f}  estimate {v[1]:.2f}  encode {v[2]:.2f}  "
                f"decode {v[3]:.2f}  total {sum(v):.2f}"
            )


if __name__ == "__main__":
    main()
