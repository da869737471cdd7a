"""Size and speed of the ``rans-2d`` codec against order-0 ``rans`` on real 2-D streams.

    python benches/kernels_rans2d.py               # the table (1 and 2 threads), 5 runs
    python benches/kernels_rans2d.py --runs 9      # more repetitions
    python benches/kernels_rans2d.py --jit         # cold compile / cached load, fresh processes

Streams: stream 0 of every matrix-shaped float tensor (row_len = product of shape[1:], at
least 2 rows), cut as the pipeline cuts it into 1 MiB-of-source chunks (a chunk starts at any
element, so its first and last rows may be partial; layout = (row_len, first column)):

* minilm_bf16.safetensors: the BF16 exponent (512 Ki symbols a chunk);
* minilm_fp32.safetensors: the F32 exponent (256 Ki symbols a chunk);
* whisper_tiny_ct2.bin (CTranslate2, F16): the high byte (sign, exponent, 2 mantissa bits).

Sizes are bits per symbol over all chunks of a file. ``rans``: order-0 payloads; ``2d``:
rans-2d payloads where it codes a chunk, else the rans payload (rans-2d returns None when it
would not beat order-0, and the chooser keeps rans); ``est``: the encoder's own estimate of
the rans-2d payload (conditional entropy + tables + maps + header) where it codes;
``cond H``: the conditional entropy of the symbols given their contexts (the floor without
tables); ``tables``: mean bytes of class maps + frequency tables per coded chunk. Speeds are M
symbols/s over all chunks (including those where rans-2d gives up: the whole search runs),
medians of ``--runs`` interleaved repetitions; decoding writes into outputs faulted in
beforehand and covers the chunks rans-2d codes. 2 threads: a ThreadPoolExecutor(2) created
outside the timer maps the chunks.
"""

from __future__ import annotations

import argparse
import collections
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
CHUNK = 1 << 20
FILES = ("minilm_bf16.safetensors", "minilm_fp32.safetensors", "whisper_tiny_ct2.bin")


def chunks(path: Path) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """(stream 0, (row_len, first_col)) of every 1 MiB chunk of every 2-D float tensor."""
    from zipmodel.readers import read_layout

    raw = np.fromfile(path, np.uint8)
    out = []
    for seg in read_layout(raw).segments:
        if seg.kind != "tensor" or seg.dtype not in ("BF16", "F16", "F32"):
            continue
        if not seg.shape or len(seg.shape) < 2 or seg.shape[0] < 2:
            continue
        size = 4 if seg.dtype == "F32" else 2
        b = raw[seg.offset : seg.offset + seg.size].copy()  # aligned (odd offsets in CT2)
        if seg.dtype == "F32":
            s = (b.view("<u4") >> 23).astype(np.uint8)  # the 8-bit exponent
        elif seg.dtype == "BF16":
            s = (b.view("<u2") >> 7).astype(np.uint8)
        else:
            s = (b.view("<u2") >> 8).astype(np.uint8)  # sign, exponent, 2 mantissa bits
        row_len = int(np.prod(seg.shape[1:]))
        step = CHUNK // size
        for e in range(0, s.size, step):
            out.append((np.ascontiguousarray(s[e : e + step]), (row_len, e % row_len)))
    return out


def header_bytes(payload: bytes, n: int) -> int:
    """Bytes of class maps + tables (the bit section) of a rans-2d payload."""
    lkr, lkc = payload[1] >> 4, payload[1] & 15
    p, vals = 2, []
    for _ in range(2):
        v, k = 0, 0
        while True:
            v |= (payload[p] & 127) << (7 * k)
            p, k = p + 1, k + 1
            if payload[p - 1] < 128:
                break
        vals.append(v)
    row_len, first_col = vals
    present = sum(bin(b).count("1") for b in payload[p : p + 32])
    bits = -(-(first_col + n) // row_len) * lkr + row_len * lkc
    pos = 8 * (p + 32) + bits
    for _ in range(present << (lkr + lkc)):
        z = 0
        while not (payload[pos >> 3] >> (pos & 7)) & 1:
            z, pos = z + 1, pos + 1
        pos += 1 + z
    return (pos - 8 * (p + 32) + 7) // 8


def cond_entropy(plan) -> float:
    """Bits of the chunk's symbols given their contexts (no tables)."""
    present, counts = plan[4], plan[5]
    c = counts.reshape(-1, present.size).astype(np.float64)
    tot = c.sum(1, keepdims=True)
    nz = np.where(c > 0, c, 1)
    return float((c * np.log2(np.where(tot > 0, tot, 1) / nz)).sum())


def median_time(fn, items, pool, threads) -> float:
    t0 = time.perf_counter()
    if threads == 1:
        for it in items:
            fn(it)
    else:
        list(pool.map(fn, items))
    return time.perf_counter() - t0


def bench(name: str, runs: int, pool) -> dict:
    from zipmodel.codecs.rans import RansCodec
    from zipmodel.codecs.rans2d import Rans2DCodec

    r0, r2 = RansCodec(), Rans2DCodec()
    cs = chunks(CORPUS / name)
    n = sum(d.size for d, _ in cs)
    p0 = [r0.encode(d) for d, _ in cs]
    p2 = [r2.encode(d, lay) for d, lay in cs]
    plans = [r2.plan(d, lay) for d, lay in cs]
    coded = [i for i, p in enumerate(p2) if p is not None]
    outs = {i: np.zeros_like(cs[i][0]) for i in coded}
    ks = collections.Counter()
    est = cond = tabs = 0.0
    for i in range(len(cs)):
        if p2[i] is None:
            ks["none"] += 1
            continue
        ks[f"({1 << (p2[i][1] >> 4)},{1 << (p2[i][1] & 15)})"] += 1
        est += plans[i][6]
        cond += cond_entropy(plans[i])
        tabs += header_bytes(p2[i], cs[i][0].size)
    n2 = sum(cs[i][0].size for i in coded)
    times = collections.defaultdict(list)
    items = list(range(len(cs)))
    for _ in range(runs):
        for threads in (1, 2):
            times["enc", threads].append(
                median_time(lambda i: r2.encode(*cs[i]), items, pool, threads)
            )
            times["dec", threads].append(
                median_time(lambda i: r2.decode(memoryview(p2[i]), outs[i]), coded, pool, threads)
            )
            times["renc", threads].append(
                median_time(lambda i: r0.encode(cs[i][0]), items, pool, threads)
            )
    for i in coded:
        assert np.array_equal(outs[i], cs[i][0]), f"{name}: chunk {i} round trip failed"
    return {
        "name": name,
        "chunks": len(cs),
        "coded": len(coded),
        "n": n,
        "rans": sum(len(p) for p in p0) * 8 / n,
        "2d": sum(len(b if b is not None and len(b) < len(a) else a) for a, b in zip(p0, p2))
        * 8
        / n,
        "rans_coded": sum(len(p0[i]) for i in coded) * 8 / max(n2, 1),
        "2d_coded": sum(len(p2[i]) for i in coded) * 8 / max(n2, 1),
        "est": est / max(n2, 1),
        "cond": cond / max(n2, 1),
        "tables": tabs / max(len(coded), 1),
        "k": ks,
        "speed": {
            k: (n if k[0] != "dec" else n2) / statistics.median(v) / 1e6 for k, v in times.items()
        },
    }


JIT_SCRIPT = """
import time, numpy as np
t0 = time.perf_counter()
from zipmodel.codecs.rans2d import Rans2DCodec
import zipmodel._kernels.rans2d
t1 = time.perf_counter()
rng = np.random.default_rng(0)
d = (rng.integers(0, 4, 20000) + (np.arange(20000) % 100 > 50) * 4).astype(np.uint8)
p = Rans2DCodec().encode(d, (100, 0)); t2 = time.perf_counter()
Rans2DCodec().decode(memoryview(p), np.empty_like(d)); t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def jit_times(reps: int = 2) -> None:
    print("JIT: import (numba + kernels) / first encode / first decode, s (fresh processes)")
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for label in ("cold", "cached", "cached"):
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
    ap.add_argument("--files", default=",".join(FILES))
    args = ap.parse_args()
    if args.jit:
        jit_times()
        return
    rows = []
    with ThreadPoolExecutor(2) as pool:
        for name in args.files.split(","):
            if (CORPUS / name).exists():
                rows.append(bench(name, args.runs, pool))
    print(
        f"1 MiB-of-source chunks; sizes in bits/symbol; speeds M symbols/s, medians of {args.runs}"
    )
    print(
        f"{'file':24} {'chunks':>9} {'rans':>7} {'2d':>7} | coded chunks: {'rans':>7} {'2d':>7}"
        f" {'est':>7} {'cond H':>7} {'tbl B':>6} | {'enc1':>5} {'enc2':>5} {'dec1':>5} {'dec2':>5}"
        f" {'rans enc1':>9}"
    )
    for r in rows:
        sp = r["speed"]
        print(
            f"{r['name']:24} {r['coded']:>4}/{r['chunks']:<4} {r['rans']:7.4f} {r['2d']:7.4f} |"
            f" {'':13} {r['rans_coded']:7.4f} {r['2d_coded']:7.4f} {r['est']:7.4f} {r['cond']:7.4f}"
            f" {r['tables']:6.0f} | {sp['enc', 1]:5.0f} {sp['enc', 2]:5.0f} {sp['dec', 1]:5.0f}"
            f" {sp['dec', 2]:5.0f} {sp['renc', 1]:9.0f}"
        )
    for r in rows:
        print(
            f"{r['name']}: (Kr,Kc) per chunk: "
            + ", ".join(f"{k} {v}" for k, v in r["k"].most_common())
        )


if __name__ == "__main__":
    main()
