"""Speed and size of the ``rans`` and ``rans-ctx`` codecs on real float streams.

    python benches/kernels_rans.py               # the table (1 and 2 threads)
    python benches/kernels_rans.py --runs 9      # more repetitions
    python benches/kernels_rans.py --jit         # cold compile / cached load, fresh processes

Streams, cut into chunks of 512 Ki values (one chunk = one codec call):

* minilm_bf16: every BF16 tensor; r = (w << 1) | (w >> 15); exponent = r >> 8,
  sign|mantissa = r & 0xFF (split-bf16's two streams);
* minilm_fp32: every F32 tensor; r = (w << 1) | (w >> 31); exponent = r >> 24,
  top mantissa byte = (r >> 16) & 0xFF (split-f32's streams 0 and 1);
* uniform random bytes.

Speeds are M symbols (bytes) per second, medians of ``--runs`` interleaved repetitions,
decoding into output arrays allocated and faulted in beforehand (pure decoder speed). With
2 threads a ThreadPoolExecutor(2), created outside the timer, maps the chunks. bits/sym
counts the whole payload; "floor" is the order-0 entropy per chunk (rans) or, for rans-ctx,
the entropy of the top 4 bits given the context plus 4 raw bits (no table cost); table is
the mean header bytes per chunk (frequency tables and the 32 bytes of states); "over" is
bits/sym - floor, "w/o tbl" the same without the header bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))
CHUNK = 512 << 10


def tensors(path: Path, dtype: str, itemtype: str) -> np.ndarray:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    spans = [
        v["data_offsets"]
        for k, v in json.loads(raw[8 : 8 + n]).items()
        if k != "__metadata__" and v["dtype"] == dtype
    ]
    return np.concatenate([np.frombuffer(raw[8 + n + a : 8 + n + b], itemtype) for a, b in spans])


def streams() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """name -> (stream, context or None)."""
    out = {}
    if (CORPUS / "minilm_bf16.safetensors").exists():
        w = tensors(CORPUS / "minilm_bf16.safetensors", "BF16", "<u2")
        r = (w << 1) | (w >> 15)
        exp, sm = (r >> 8).astype(np.uint8), (r & 0xFF).astype(np.uint8)
        out["bf16 exponent"] = (exp, None)
        out["bf16 sign|mantissa"] = (sm, None)
        out["bf16 sign|mantissa | exp"] = (sm, exp)
    if (CORPUS / "minilm_fp32.safetensors").exists():
        w = tensors(CORPUS / "minilm_fp32.safetensors", "F32", "<u4")
        r = (w << 1) | (w >> 31)
        exp, m1 = (r >> 24).astype(np.uint8), ((r >> 16) & 0xFF).astype(np.uint8)
        out["fp32 exponent"] = (exp, None)
        out["fp32 mantissa-hi | exp"] = (m1, exp)
    rng = np.random.default_rng(0)
    out["uniform random"] = (rng.integers(0, 256, 16 * CHUNK, dtype=np.uint8), None)
    return out


def floor_bits(data: np.ndarray, ctx: np.ndarray | None) -> float:
    """Order-0 entropy (or top-4-bit conditional entropy + 4) of one chunk, in bits."""
    if ctx is None:
        c = np.bincount(data, minlength=256)
        c = c[c > 0]
        return float((c * np.log2(data.size / c)).sum())
    j = np.bincount(ctx.astype(np.int64) * 16 + (data >> 4), minlength=4096).reshape(256, 16)
    j = j[j.sum(1) > 0]
    nz = np.where(j > 0, j, 1)
    return float((j * np.log2(j.sum(1, keepdims=True) / nz)).sum()) + 4 * data.size


def table_bytes(payload: bytes, ctx: bool) -> int:
    """Header bytes before the word stream (tables + states)."""
    if not ctx:
        p = 33
        for _ in range(sum(bin(b).count("1") for b in payload[1:33])):
            while payload[p] >= 128:
                p += 1
            p += 1
        return p + 32
    k, t = payload[0], payload[1]
    p = 2 + t
    for _ in range((t + 1) << k):
        while payload[p] >= 128:
            p += 1
        p += 1
    return p + 32


def bench(name, data, ctx, runs, pool) -> list[dict]:
    from zipmodel.codecs.rans import RansCodec, RansCtxCodec

    codec = RansCtxCodec() if ctx is not None else RansCodec()
    chunks = [data[i : i + CHUNK] for i in range(0, data.size, CHUNK)]
    ctxs = [ctx[i : i + CHUNK] for i in range(0, data.size, CHUNK)] if ctx is not None else None
    args = [(c,) if ctx is None else (c, x) for c, x in zip(chunks, ctxs or chunks)]
    payloads = [bytes(codec.encode(*a)) for a in args]  # an encode returns its scratch
    if any(p is None for p in payloads):
        return []
    outs = [np.zeros_like(c) for c in chunks]  # faulted in

    def enc(i):
        codec.encode(*args[i])

    def dec(i):
        codec.decode(memoryview(payloads[i]), outs[i], *args[i][1:])

    dec_all = list(range(len(chunks)))
    times = {(t, op): [] for t in (1, 2) for op in ("enc", "dec")}
    for _ in range(runs):
        for threads in (1, 2):
            for op, fn in (("enc", enc), ("dec", dec)):
                t0 = time.perf_counter()
                if threads == 1:
                    for i in dec_all:
                        fn(i)
                else:
                    list(pool.map(fn, dec_all))
                times[threads, op].append(time.perf_counter() - t0)
    for o, c in zip(outs, chunks):
        assert np.array_equal(o, c), f"{name}: round trip failed"
    n = data.size
    bits = sum(len(p) for p in payloads) * 8 / n
    floor = sum(floor_bits(*a) if ctx is not None else floor_bits(a[0], None) for a in args) / n
    heads = [table_bytes(p, ctx is not None) for p in payloads]
    tables = statistics.mean(heads)
    coded = sum(len(p) - h for p, h in zip(payloads, heads)) * 8 / n
    rows = []
    for threads in (1, 2):
        rows.append(
            {
                "stream": name,
                "threads": threads,
                "enc": n / statistics.median(times[threads, "enc"]) / 1e6,
                "dec": n / statistics.median(times[threads, "dec"]) / 1e6,
                "bits": bits,
                "coded": coded,
                "floor": floor,
                "table": tables,
                "chunks": len(chunks),
                "k": [p[0] for p in payloads] if ctx is not None else None,
            }
        )
    return rows


JIT_SCRIPT = """
import time, numpy as np
t0 = time.perf_counter()
from zipmodel.codecs.rans import RansCodec, RansCtxCodec
import zipmodel._kernels.rans
t1 = time.perf_counter()
d = (np.arange(1000) % 7).astype(np.uint8); ctx = (d // 3).astype(np.uint8)
p = RansCodec().encode(d); t2 = time.perf_counter()
RansCodec().decode(memoryview(p), np.empty_like(d)); t3 = time.perf_counter()
q = RansCtxCodec()._encode(d, ctx, 2, np.unique(ctx)[:1], np.ones((2, 4), np.int64)); t4 = time.perf_counter()
RansCtxCodec().decode(memoryview(q), np.empty_like(d), ctx); t5 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
"""


def jit_times(reps: int = 2) -> None:
    print("JIT: import (numba + kernels) / rans encode / rans decode / ctx encode / ctx decode, s")
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for label in ("cold", "cached"):
                res = subprocess.run(
                    [sys.executable, "-c", JIT_SCRIPT],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                t = [float(v) for v in res.stdout.split()]
                print(
                    f"  {label:6}  " + "  ".join(f"{v:6.2f}" for v in t) + f"   total {sum(t):.2f}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--jit", action="store_true", help="only measure compile / cache-load time")
    args = ap.parse_args()
    if args.jit:
        jit_times()
        return
    rows = []
    with ThreadPoolExecutor(2) as pool:
        for name, (data, ctx) in streams().items():
            rows += bench(name, data, ctx, args.runs, pool)
    print(f"chunks of {CHUNK >> 10} Ki symbols; medians of {args.runs} runs; M symbols/s")
    print(
        f"{'stream':26} {'thr':>3} {'enc':>6} {'dec':>6} {'bits/sym':>9} {'floor':>8}"
        f" {'over':>8} {'w/o tbl':>8} {'table B':>8}"
    )
    for r in rows:
        print(
            f"{r['stream']:26} {r['threads']:>3} {r['enc']:6.0f} {r['dec']:6.0f} {r['bits']:9.4f}"
            f" {r['floor']:8.4f} {r['bits'] - r['floor']:8.4f} {r['coded'] - r['floor']:8.4f}"
            f" {r['table']:8.1f}"
        )
    for r in rows[::2]:
        if r["k"] is not None:
            gain = (8 - r["bits"]) / (8 - r["floor"])
            print(
                f"{r['stream']}: K per chunk {sorted(set(r['k']))}, {gain:.1%} of the top-4-bit"
                f" conditional gain kept after tables"
            )


if __name__ == "__main__":
    main()
