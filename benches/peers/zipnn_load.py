#!/usr/bin/env python3
"""Time ZipNN from a compressed file to a state dict of numpy arrays (for benches/load.py).

Runs in the zipnn venv (stdlib + numpy + zipnn), like run_peer.py, whose safetensors parser
and dtype tables it reuses:

    $VENVS/zipnn/bin/python benches/peers/zipnn_load.py --file F.safetensors --threads 2 --runs 3

Untimed: compress every BF16/F16/F32 tensor with ZipNN's bytes API (other tensors stored raw)
into a file in a temp dir (8-byte index length, a JSON index, the payloads), a warm-up load,
and a read of that file into the page cache. Timed, per run: read the file, decompress every
coded tensor (ZipNN's own ``threads`` inside a tensor, tensors one after another, as ZipNN is
used), view each result as its dtype and shape (a raw tensor is copied out of the file buffer,
so every array owns its memory, as a loader's do). One JSON object goes to stdout.

``--fresh``: each of the ``--runs`` loads runs in a new process of this script
(``--load-once``), after an untimed warm-up that compresses and decompresses a small tensor
of each dtype (imports, ZipNN's set-up) and leaves the heap small; it reports wall and CPU
seconds of that one load (benches/load.py's fresh-process table).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_peer import ST_WIDTH, ZIPNN_DTYPES, parse_safetensors

NP = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8", "I32": "<i4"}
NP.update({"I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?", "U16": "<u2", "U32": "<u4"})


def write_container(path: str, data: bytes, zipnn, threads: int) -> int:
    hdr = parse_safetensors(data)
    if hdr is None:
        raise SystemExit("not a safetensors file")
    base, segs = hdr
    header = json.loads(data[8:base].decode())
    coders = {
        dt: zipnn.ZipNN(input_format="byte", bytearray_dtype=name, threads=threads)
        for dt, name in ZIPNN_DTYPES.items()
    }
    index, payloads, pos = [], [], 0
    for s in segs:
        if s.dtype is None:
            continue
        coded = s.dtype in coders and s.size > 0 and s.size % ST_WIDTH[s.dtype] == 0
        raw = bytearray(data[s.begin : s.end])  # ZipNN reorders its input in place
        p = bytes(coders[s.dtype].compress(raw)) if coded else bytes(raw)
        shape = header[s.name]["shape"]
        index.append([s.name, s.dtype, shape, pos, len(p), coded])
        payloads.append(p)
        pos += len(p)
    js = json.dumps(index).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js)
        for p in payloads:
            f.write(p)
    return os.path.getsize(path)


def load(path: str, coders) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:  # writable: a peer may scribble on its input
        buf = bytearray(os.fstat(f.fileno()).st_size)
        f.readinto(buf)
    (n,) = struct.unpack_from("<Q", buf)
    index = json.loads(bytes(buf[8 : 8 + n]))
    mv = memoryview(buf)[8 + n :]
    out = {}
    for name, dtype, shape, off, size, coded in index:
        part = mv[off : off + size]
        raw = coders[dtype].decompress(part) if coded else bytearray(part)
        out[name] = np.frombuffer(raw, NP.get(dtype, "u1")).reshape(shape)
    return out


def load_once(path: str, threads: int) -> dict:
    """One timed load in this (fresh) process, after a small untimed warm-up."""
    import zipnn

    coders = {
        dt: zipnn.ZipNN(input_format="byte", bytearray_dtype=name, threads=threads)
        for dt, name in ZIPNN_DTYPES.items()
    }
    w = (np.random.default_rng(1).standard_normal(256 * 384) * 0.05).astype(np.float32)
    for dt, c in coders.items():
        raw = w.astype(np.float16) if dt == "F16" else w
        raw = (w.view(np.uint32) >> 16).astype(np.uint16) if dt == "BF16" else raw
        c.decompress(c.compress(bytearray(raw.tobytes())))
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    load(path, coders)
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tmpdir", default=None)
    ap.add_argument("--fresh", action="store_true", help="each load in a new process")
    ap.add_argument("--load-once", metavar="CONTAINER", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.load_once:
        print(json.dumps(load_once(args.load_once, args.threads)))
        return 0
    if not args.file:
        ap.error("--file is required")
    import zipnn

    with open(args.file, "rb") as f:
        data = f.read()
    coders = {
        dt: zipnn.ZipNN(input_format="byte", bytearray_dtype=name, threads=args.threads)
        for dt, name in ZIPNN_DTYPES.items()
    }
    with tempfile.TemporaryDirectory(prefix="zipmodel-zipnn-load-", dir=args.tmpdir) as tmp:
        path = os.path.join(tmp, "model.zpnn")
        size = write_container(path, data, zipnn, args.threads)
        sd = load(path, coders)  # warm-up, page cache, and the round-trip check
        _, segs = parse_safetensors(data)
        ok = all(sd[s.name].tobytes() == data[s.begin : s.end] for s in segs if s.dtype is not None)
        del sd
        seconds, cpu = [], []
        for _ in range(args.runs if args.fresh else 0):
            cmd = [sys.executable, os.path.abspath(__file__), "--load-once", path, "--threads"]
            r = subprocess.run([*cmd, str(args.threads)], capture_output=True)
            if r.returncode != 0:
                raise SystemExit(r.stderr.decode()[-2000:])
            doc = json.loads(r.stdout.decode().strip().splitlines()[-1])
            seconds.append(doc["wall"])
            cpu.append(doc["cpu"])
        for _ in range(0 if args.fresh else args.runs):
            gc.collect()
            t0 = time.perf_counter()
            sd = load(path, coders)
            seconds.append(time.perf_counter() - t0)
            del sd
    print(
        json.dumps(
            {
                "file": os.path.abspath(args.file),
                "threads": args.threads,
                "compressed_bytes": size,
                "original_bytes": len(data),
                "seconds": [round(s, 6) for s in seconds],
                "median_s": round(statistics.median(seconds), 6),
                "median_cpu_s": round(statistics.median(cpu), 6) if cpu else None,
                "fresh": args.fresh,
                "roundtrip": "tensors-identical" if ok else "FAILED",
                "zipnn_version": getattr(zipnn, "__version__", None),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
