#!/usr/bin/env python3
"""Run one lossless peer compressor on one file and print comparable numbers.

Standalone on purpose: stdlib + numpy at module level, the peer is imported
lazily, so the script runs unchanged in each peer's own venv
(see setup_peers.sh):

    $VENVS/zipnn/bin/python run_peer.py --peer zipnn --file F --threads 2 --runs 3 --json

One JSON object goes to stdout (with --json; otherwise a one-line summary):
peer, setting, file, original_bytes, compressed_bytes, fraction,
compress_s / decompress_s (one entry per run), compress_MBps_median /
decompress_MBps_median (MB = 10^6 bytes of ORIGINAL size per second),
roundtrip ("identical" | "tensors-identical" | "FAILED"), mode, notes,
plus threads, runs, dtype, layout, peer_version, compressed_bytes_per_run, and
for per-tensor modes decompress_tensors_only_s / _MBps_median.

Timing rules
------------
* Imports, reading the input into memory, per-peer set-up (contexts, thread
  pools) and a small warm-up call (which triggers lazy native builds / library
  loads) are outside the timers.
* In-memory modes time only the peer's compress / decompress calls. Copies the
  harness must make because a peer mutates its input (ZipNN) are made before
  the timer starts. For per-tensor modes the decompress timer covers decoding
  every tensor AND assembling the restored file in one buffer (raw header +
  decoded tensors), so every in-memory peer's decompress yields the file's
  bytes; the decode alone is also reported as decompress_tensors_only_*.
* File-to-file modes time the whole call, including the peer's own reads and
  writes (through the page cache).
* Runs alternate compress, decompress, compress, ...; every run's output is
  round-trip checked (sha256 of the rebuilt file against the original),
  outside the timers.

Compressed size for per-tensor harnesses (zipnn, z4ai max, openzl): 8-byte
length + safetensors JSON header stored raw + every frame + raw-stored
segments + 12 bytes of index per tensor/segment (what a minimal container
would need: offset + length). For zipnn's `file` setting the size is the
actual output file written by this harness.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

INDEX_BYTES_PER_SEGMENT = 12

# --dtype name -> safetensors dtype name
CLI_DTYPES = {"bf16": "BF16", "f16": "F16", "fp16": "F16", "f32": "F32", "fp32": "F32"}
ST_WIDTH = {
    "BF16": 2,
    "F16": 2,
    "F32": 4,
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "I32": 4,
    "U32": 4,
    "I16": 2,
    "U16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}

PEERS = {
    # peer: (settings, default setting, distribution name for the version)
    "zipnn": (("default", "file"), "default", "zipnn"),
    "glyd": (("max", "cold"), "max", "glyd"),
    "lmzip": (("default",), "default", "lmzip"),
    "z4ai": (("default", "max"), "default", "z4ai"),
    "openzl": (("default",), "default", "openzl"),
    "zstd3": (("default",), "default", "zstandard"),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Input layout: the file as a list of segments covering it exactly.
# --------------------------------------------------------------------------


class Segment:
    __slots__ = ("begin", "dtype", "end", "name")

    def __init__(self, name, dtype, begin, end):
        self.name, self.dtype, self.begin, self.end = name, dtype, begin, end

    @property
    def size(self):
        return self.end - self.begin


def parse_safetensors(data):
    """Return (header_end, [Segment...] covering data) or None if not safetensors."""
    if len(data) < 10:
        return None
    (n,) = struct.unpack_from("<Q", data, 0)
    if n < 2 or 8 + n > len(data) or data[8:9] != b"{":
        return None
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(header, dict):
        return None
    base = 8 + n
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        tensors.append(Segment(name, info["dtype"], base + b, base + e))
    tensors.sort(key=lambda s: (s.begin, s.end))
    segs = [Segment("__header__", None, 0, base)]
    pos = base
    for t in tensors:
        if t.begin < pos:  # overlapping/aliased tensors: not a layout we can cut
            return None
        if t.begin > pos:
            segs.append(Segment("__gap__", None, pos, t.begin))
        segs.append(t)
        pos = t.end
    if pos > len(data):
        return None
    if pos < len(data):
        segs.append(Segment("__tail__", None, pos, len(data)))
    return base, segs


def build_layout(data, cli_dtype):
    """Segments for the file: safetensors tensors, or one buffer of --dtype."""
    st = parse_safetensors(data)
    if st is not None:
        return "safetensors", st[1]
    if cli_dtype is None:
        return "opaque", [Segment("__file__", None, 0, len(data))]
    dt = CLI_DTYPES[cli_dtype]
    w = ST_WIDTH[dt]
    body = len(data) - len(data) % w
    segs = [Segment("__file__", dt, 0, body)]
    if body < len(data):
        segs.append(Segment("__tail__", None, body, len(data)))
    return "buffer", segs


def per_tensor_size(segs, frames):
    """Compressed size of a per-tensor harness (see module docstring)."""
    total = 0
    for s, f in zip(segs, frames):
        if s.name == "__header__":
            total += s.size  # 8-byte length + JSON header, stored raw
        else:
            total += len(f) + INDEX_BYTES_PER_SEGMENT
    return total


def sha(b):
    return hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------
# Peers. Each class: setup() untimed; prep_c() untimed -> state; compress(state)
# timed -> comp; size(comp); prep_d(comp) untimed -> state; decompress(state)
# timed -> out; rebuild(out) untimed -> file bytes (or list of tensor bytes).
# --------------------------------------------------------------------------


class Peer:
    mode = "in-memory"
    # True: decompress() returns one decoded buffer per segment (None = the
    # segment was stored raw); main() then assembles the file in memory.
    per_tensor = False

    def __init__(self, args, data, kind, segs):
        self.args, self.data, self.kind, self.segs = args, data, kind, segs
        self.T = args.threads
        self.notes = []

    def setup(self):
        pass

    def warmup(self):
        pass

    def prep_c(self):
        return None

    def prep_d(self, comp):
        return comp

    def rebuild(self, out):
        return out

    def close(self):
        pass


def synthetic(dt, n=1 << 17):
    """A small buffer of plausible weights for warm-up calls."""
    g = np.random.default_rng(1).standard_normal(n).astype(np.float32) * 0.02
    if dt == "BF16":
        return (g.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    if dt == "F16":
        return g.astype(np.float16).tobytes()
    return g.tobytes()


# ---- zstd -3 reference ----------------------------------------------------


class Zstd3(Peer):
    """zstandard level 3 on the whole file. Compress uses zstd's own worker
    threads (threads=T; T=1 means zstd's single-threaded mode, threads=0 in
    python-zstandard terms). Decode is single-threaded (zstd has no MT decode)."""

    def setup(self):
        import zstandard

        self.z = zstandard
        zt = self.T if self.T > 1 else 0
        self.cctx = zstandard.ZstdCompressor(level=3, threads=zt)
        self.dctx = zstandard.ZstdDecompressor()
        self.mode = f"in-memory whole file, zstd threads={zt}"
        if self.kind == "buffer":
            self.notes.append("--dtype ignored")

    def warmup(self):
        c = self.cctx.compress(synthetic("F32"))
        self.dctx.decompress(c, max_output_size=1 << 20)

    def compress(self, _):
        return self.cctx.compress(self.data)

    def size(self, comp):
        return len(comp)

    def decompress(self, comp):
        return self.dctx.decompress(comp, max_output_size=len(self.data))


# ---- glyd -----------------------------------------------------------------


class Glyd(Peer):
    """glyd.compress(data, level=S, threads=T) / glyd.decompress(c) on the
    whole file in memory. glyd.decompress takes no thread argument. The
    binding copies the input into a ctypes buffer inside each call (part of
    its API cost, so inside the timer)."""

    def setup(self):
        import glyd

        self.g = glyd
        self.level = self.args.setting
        self.mode = f"in-memory whole file, level={self.level}, threads={self.T} (compress)"
        self.notes.append("glyd " + glyd.version())
        if self.kind == "buffer":
            self.notes.append("--dtype ignored (glyd detects content itself)")

    def warmup(self):
        self.g.decompress(self.g.compress(synthetic("BF16"), level=self.level, threads=self.T))

    def compress(self, _):
        return self.g.compress(self.data, level=self.level, threads=self.T)

    def size(self, comp):
        return len(comp)

    def decompress(self, comp):
        return self.g.decompress(comp)


# ---- lmzip ----------------------------------------------------------------


class Lmzip(Peer):
    """lmz.compress(src, dst, workers=T) / lmz.decompress(dst, out, workers=T),
    file to file; src is the input file itself, dst/out are in a temp dir
    (same disk). Timed calls include lmz's own reading and writing."""

    mode = "file-to-file"

    def setup(self):
        import lmz

        self.lmz = lmz
        self.tmp = tempfile.mkdtemp(prefix="zipmodel-peer-lmz-", dir=self.args.tmpdir)
        self.src = os.path.abspath(self.args.file)
        self.dst = os.path.join(self.tmp, "archive.lmz")
        self.out = os.path.join(self.tmp, "restored.bin")
        self.mode = f"file-to-file, workers={self.T}"
        self.notes.append(f"lmz.backends()={lmz.backends()}")
        if self.kind == "buffer":
            self.notes.append("--dtype ignored (lmz plans planes itself)")

    def warmup(self):
        p = os.path.join(self.tmp, "w.bin")
        with open(p, "wb") as f:
            f.write(synthetic("BF16"))
        self.lmz.compress(p, p + ".lmz", workers=self.T)
        self.lmz.decompress(p + ".lmz", p + ".out", workers=self.T)
        for q in (p, p + ".lmz", p + ".out"):
            os.unlink(q)

    def prep_c(self):
        if os.path.exists(self.dst):
            os.unlink(self.dst)

    def compress(self, _):
        self.lmz.compress(self.src, self.dst, workers=self.T)
        return self.dst

    def size(self, comp):
        return os.path.getsize(comp)

    def prep_d(self, comp):
        if os.path.exists(self.out):
            os.unlink(self.out)
        return comp

    def decompress(self, comp):
        self.lmz.decompress(comp, self.out, workers=self.T)
        return self.out

    def rebuild(self, out):
        with open(out, "rb") as f:
            return f.read()

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- zipnn ----------------------------------------------------------------

ZIPNN_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


class Zipnn(Peer):
    """ZipNN bytes API, ZipNN(input_format="byte", bytearray_dtype=<dtype>,
    threads=T), called once per tensor with the tensor's own dtype (BF16, F16,
    F32); every other dtype, the header and any odd tail are stored raw.

    ZipNN 0.5.4 bit-reorders its INPUT in place for bf16/fp32, so in the
    default (in-memory) setting each tensor is copied into a fresh bytearray
    before the timer starts. It also segfaults on a buffer whose length is
    not a multiple of the element width (seen here on a 1-byte fp32 buffer),
    so such segments are stored raw (never happens in a valid safetensors).

    Setting `file`: zipnn 0.5.4 has no importable file-to-file API (ZipNN's
    input_format="file" is documented "not implemented yet"; its
    zipnn_compress_*.py CLI scripts are not in the package), so this harness
    does it itself: read the file, compress per tensor with the same bytes
    API, write header + index + frames to an output file; decompress reads
    that file, decodes each frame and writes the restored file. Everything,
    including the I/O and the copies, is inside the timer."""

    def setup(self):
        import zipnn

        self.zipnn = zipnn
        self.z = {
            dt: zipnn.ZipNN(input_format="byte", bytearray_dtype=name, threads=self.T)
            for dt, name in ZIPNN_DTYPES.items()
        }
        self.coded = [
            s.dtype in ZIPNN_DTYPES and s.size > 0 and s.size % ST_WIDTH[s.dtype] == 0
            for s in self.segs
        ]
        raw_dt = sorted(
            {s.dtype for s, c in zip(self.segs, self.coded) if not c and s.dtype is not None}
        )
        if raw_dt:
            self.notes.append("stored raw (dtype not coded by zipnn): " + ",".join(raw_dt))
        if self.kind == "opaque":
            raise SystemExit("zipnn needs a safetensors file or --dtype")
        self.per_tensor = self.args.setting != "file"
        if self.args.setting == "file":
            self.mode = (
                f"file-to-file (harness: read + per-tensor bytes API + write), threads={self.T}"
            )
            self.tmp = tempfile.mkdtemp(prefix="zipmodel-peer-zipnn-", dir=self.args.tmpdir)
            self.cpath = os.path.join(self.tmp, "archive.zpnn")
            self.opath = os.path.join(self.tmp, "restored.bin")
        else:
            self.mode = f"in-memory per tensor, threads={self.T}"

    def warmup(self):
        for dt, z in self.z.items():
            raw = synthetic(dt)
            assert bytes(z.decompress(z.compress(bytearray(raw)))) == raw

    # -- in-memory --
    def prep_c(self):
        if self.args.setting == "file":
            for p in (self.cpath, self.opath):
                if os.path.exists(p):
                    os.unlink(p)
            return None
        mv = memoryview(self.data)
        return [
            bytearray(mv[s.begin : s.end]) if c else None for s, c in zip(self.segs, self.coded)
        ]

    def compress(self, copies):
        if self.args.setting == "file":
            return self._compress_file()
        z = self.z
        return [
            z[s.dtype].compress(buf) if buf is not None else None
            for s, buf in zip(self.segs, copies)
        ]

    def size(self, comp):
        if self.args.setting == "file":
            return os.path.getsize(comp)
        mv = memoryview(self.data)
        frames = [f if f is not None else mv[s.begin : s.end] for s, f in zip(self.segs, comp)]
        return per_tensor_size(self.segs, frames)

    def decompress(self, comp):
        if self.args.setting == "file":
            return self._decompress_file(comp)
        z = self.z
        return [
            z[s.dtype].decompress(f) if f is not None else None for s, f in zip(self.segs, comp)
        ]

    def rebuild(self, out):
        if self.args.setting == "file":
            with open(out, "rb") as f:
                return f.read()
        return out

    # -- file-to-file --
    # Container: b"ZPNN" u32 nseg, then per segment u8 coded, u64 raw_len,
    # u64 stored_len (17 bytes), then the payloads in order.
    def _compress_file(self):
        with open(self.args.file, "rb") as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)
            f.readinto(buf)
        mv = memoryview(buf)
        z = self.z
        payloads = []
        for s, c in zip(self.segs, self.coded):
            # mv slices of our own freshly read buffer: ZipNN may scribble on them.
            payloads.append(z[s.dtype].compress(mv[s.begin : s.end]) if c else mv[s.begin : s.end])
        with open(self.cpath, "wb") as f:
            f.write(b"ZPNN" + struct.pack("<I", len(self.segs)))
            f.write(
                b"".join(
                    struct.pack("<BQQ", int(c), s.size, len(p))
                    for s, c, p in zip(self.segs, self.coded, payloads)
                )
            )
            for p in payloads:
                f.write(p)
        return self.cpath

    def _decompress_file(self, path):
        with open(path, "rb") as f:
            blob = f.read()
        (n,) = struct.unpack_from("<I", blob, 4)
        off = 8
        ents = [struct.unpack_from("<BQQ", blob, off + 17 * i) for i in range(n)]
        pos = off + 17 * n
        mv = memoryview(blob)
        z = self.z
        with open(self.opath, "wb") as f:
            for s, (coded, _raw_len, ln) in zip(self.segs, ents):
                p = mv[pos : pos + ln]
                pos += ln
                f.write(z[s.dtype].decompress(p) if coded else p)
        return self.opath

    def close(self):
        if self.args.setting == "file":
            shutil.rmtree(self.tmp, ignore_errors=True)


# ---- z4ai -----------------------------------------------------------------

Z4AI_DT = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F64": "fp64"}


class Z4ai(Peer):
    """default: z4ai.safetensors.compress_bytes(blob, workers=T) /
    decompress_bytes(frame, workers=T) -- z4ai's own ZSTN container (header
    verbatim, one frame per tensor, index, dedup of identical tensors).
    For a non-safetensors file: the generic API z4ai.compress(raw,
    dtype=<--dtype>, threads=T) / z4ai.decompress.

    max: z4ai.compress(raw, dtype=<tensor dtype>, effort="max", threads=1)
    per tensor over a T-thread pool, header kept raw (the ZSTN container does
    not expose effort="max"); decompress with z4ai.decompress per tensor over
    the same pool. dtype codes follow z4ai's own safetensors mapping
    (BF16/F16/F32/F64 -> bf16/fp16/fp32/fp64, everything else dtype=None).
    effort="max" needs brotli (z4ai[maxratio]); without it z4ai silently
    falls back to the default codec, so setup() asserts brotli is importable."""

    def setup(self):
        import z4ai
        import z4ai.safetensors as zst

        self.z4, self.zst = z4ai, zst
        self.max = self.args.setting == "max"
        from z4ai import rans

        self.notes.append(f"native rANS available={rans.available()}")
        if self.max:
            import brotli  # noqa: F401  (effort="max" silently degrades without it)

            self.per_tensor = True
            self.pool = ThreadPoolExecutor(self.T)
            self.mode = f"in-memory per tensor, effort=max threads=1, {self.T} tensor threads"
            if self.kind == "opaque":
                self.segs = [Segment("__file__", None, 0, len(self.data))]
        elif self.kind == "safetensors":
            self.mode = f"in-memory, z4ai.safetensors container, workers={self.T}"
        else:
            self.dt = Z4AI_DT.get(self.segs[0].dtype) if self.kind == "buffer" else None
            self.mode = f"in-memory whole buffer, z4ai.compress(dtype={self.dt}, threads={self.T})"

    def warmup(self):
        for dt in ("BF16", "F32"):
            raw = synthetic(dt, 1 << 15)
            c = self.z4.compress(
                raw, dtype=Z4AI_DT[dt], threads=1, effort="max" if self.max else None
            )
            assert bytes(self.z4.decompress(c)) == raw

    def _zdt(self, s):
        return Z4AI_DT.get(s.dtype)

    def compress(self, _):
        if self.max:
            mv = memoryview(self.data)
            z4 = self.z4

            def one(s):
                if s.name == "__header__":
                    return None
                return z4.compress(mv[s.begin : s.end], dtype=self._zdt(s), effort="max", threads=1)

            return list(self.pool.map(one, self.segs))
        if self.kind == "safetensors":
            return self.zst.compress_bytes(self.data, workers=self.T)
        return self.z4.compress(self.data, dtype=self.dt, threads=self.T)

    def size(self, comp):
        if self.max:
            return per_tensor_size(self.segs, comp)
        return len(comp)

    def decompress(self, comp):
        if self.max:
            z4 = self.z4
            return list(self.pool.map(lambda f: z4.decompress(f) if f is not None else None, comp))
        if self.kind == "safetensors":
            return self.zst.decompress_bytes(comp, workers=self.T)
        return self.z4.decompress(comp)

    def close(self):
        if self.max:
            self.pool.shutdown()


# ---- openzl ---------------------------------------------------------------


class Openzl(Peer):
    """OpenZL 0.3.0 Python bindings (openzl.ext), one frame per tensor, with
    graphs built from stock nodes (as in peers-2026.md):
      BF16 -> BFloat16Deconstruct -> (Entropy, Entropy)
      F32  -> Float32Deconstruct  -> (sign+frac: TransposeSplit -> Entropy, exponent: Entropy)
      F16  -> ConvertNumToStructLE -> TransposeSplit -> Entropy
      else -> generic Compress graph (input as Serial bytes)
    Float tensors are fed as Numeric inputs (uint16 / uint32 elements).
    Each compressor has FormatVersion = MAX_FORMAT_VERSION and each CCtx has
    StickyParameters=1. API notes (0.3.0): the starting graph must be selected
    on the Compressor (Compressor.select_starting_graph) BEFORE
    CCtx.ref_compressor, otherwise "Graph invalid". Tensors are spread over a
    T-thread pool; each thread has its own CCtx/DCtx set (thread-local,
    created during the untimed warm-up)."""

    per_tensor = True

    def setup(self):
        import openzl.ext as zl

        self.zl = zl
        self.tls = threading.local()
        self.pool = ThreadPoolExecutor(self.T)
        self.mode = f"in-memory per tensor, {self.T} tensor threads"
        if self.kind == "opaque":
            self.notes.append("opaque file: generic Compress graph")

    def _ctxs(self):
        t = self.tls
        if getattr(t, "cctx", None) is None:
            zl = self.zl
            t.cctx, t.keep = {}, []
            for kind in ("BF16", "F32", "F16", "other"):
                c = zl.Compressor()
                c.set_parameter(zl.CParam.FormatVersion, zl.MAX_FORMAT_VERSION)
                E = lambda c=c: zl.graphs.Entropy()(c)  # noqa: E731
                if kind == "BF16":
                    g = zl.nodes.BFloat16Deconstruct()(c, E(), E())
                elif kind == "F32":
                    g = zl.nodes.Float32Deconstruct()(c, zl.nodes.TransposeSplit()(c, E()), E())
                elif kind == "F16":
                    g = zl.nodes.ConvertNumToStructLE()(c, zl.nodes.TransposeSplit()(c, E()))
                else:
                    g = zl.graphs.Compress()(c)
                c.select_starting_graph(g)
                cc = zl.CCtx()
                cc.ref_compressor(c)
                cc.set_parameter(zl.CParam.StickyParameters, 1)
                t.cctx[kind] = cc
                t.keep.append(c)
            t.dctx = zl.DCtx()
        return t

    def _input(self, dt, buf):
        zl = self.zl
        if dt in ("BF16", "F16"):
            return "BF16" if dt == "BF16" else "F16", zl.Input(
                zl.Type.Numeric, np.frombuffer(buf, np.uint16)
            )
        if dt == "F32":
            return "F32", zl.Input(zl.Type.Numeric, np.frombuffer(buf, np.uint32))
        return "other", zl.Input(zl.Type.Serial, np.frombuffer(buf, np.uint8))

    def _c1(self, s_buf):
        dt, buf = s_buf
        t = self._ctxs()
        kind, inp = self._input(dt, buf)
        return t.cctx[kind].compress([inp])

    def _d1(self, frame):
        t = self._ctxs()
        outs = t.dctx.decompress(frame)
        return outs[0].content.as_bytes()

    def warmup(self):
        items = [(dt, synthetic(dt, 1 << 14)) for dt in ("BF16", "F32", "F16", None)] * (2 * self.T)
        frames = list(self.pool.map(self._c1, items))
        outs = list(self.pool.map(self._d1, frames))
        assert all(o == b for o, (_, b) in zip(outs, items))

    def compress(self, _):
        mv = memoryview(self.data)
        # Empty tensors and the header are not coded; an odd-length float
        # segment (not in valid safetensors) goes through the generic graph.
        items = []
        for s in self.segs:
            if s.name == "__header__" or s.size == 0:
                items.append(None)
            else:
                dt = (
                    s.dtype
                    if s.dtype in ("BF16", "F16", "F32") and s.size % ST_WIDTH[s.dtype] == 0
                    else None
                )
                items.append((dt, mv[s.begin : s.end]))
        return list(self.pool.map(lambda it: self._c1(it) if it is not None else None, items))

    def size(self, comp):
        return per_tensor_size(self.segs, [f if f is not None else b"" for f in comp])

    def decompress(self, comp):
        return list(self.pool.map(lambda f: self._d1(f) if f is not None else None, comp))

    def close(self):
        self.pool.shutdown()


PEER_CLASSES = {
    "zipnn": Zipnn,
    "glyd": Glyd,
    "lmzip": Lmzip,
    "z4ai": Z4ai,
    "openzl": Openzl,
    "zstd3": Zstd3,
}


# --------------------------------------------------------------------------


def assemble(segs, data, decoded):
    """The restored file in memory: raw-stored segments (the header) copied
    from the input, decoded tensors copied into place. Timed as part of
    decompress for per-tensor peers, so that every in-memory peer's
    decompress produces the same thing: the file's bytes."""
    out = bytearray(len(data))
    mv = memoryview(data)
    for s, o in zip(segs, decoded):
        if o is None:
            out[s.begin : s.end] = mv[s.begin : s.end]
        else:
            if len(o) != s.size:
                raise ValueError(f"{s.name}: decoded {len(o)} bytes, expected {s.size}")
            out[s.begin : s.end] = o
    return out


def check_roundtrip(peer, out, orig_sha, decoded=None):
    """out: the restored file (bytes-like, or a path via peer.rebuild)."""
    if decoded is not None:  # per-tensor: header + decoded tensors already assembled
        if sha(out) == orig_sha:
            return "identical"
        mv = memoryview(peer.data)
        ok = all(
            o is not None and o == mv[s.begin : s.end]
            for s, o in zip(peer.segs, decoded)
            if s.dtype is not None
        )
        return "tensors-identical" if ok else "FAILED"
    rebuilt = peer.rebuild(out)
    if not isinstance(rebuilt, (bytes, bytearray, memoryview)):
        rebuilt = bytes(rebuilt)
    return "identical" if sha(rebuilt) == orig_sha else "FAILED"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", required=True, choices=sorted(PEER_CLASSES))
    ap.add_argument("--setting", default=None)
    ap.add_argument("--file", required=True)
    ap.add_argument(
        "--dtype",
        choices=sorted(CLI_DTYPES),
        default=None,
        help="element type for a non-safetensors file (one buffer)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tmpdir", default=None, help="for file-to-file modes (default: system temp)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    settings, default_setting, dist = PEERS[args.peer]
    args.setting = args.setting or default_setting
    if args.setting not in settings:
        ap.error(f"--setting for {args.peer} must be one of {settings}")
    if args.threads < 1 or args.runs < 1:
        ap.error("--threads and --runs must be >= 1")

    with open(args.file, "rb") as f:
        data = f.read()
    orig_sha = sha(data)
    kind, segs = build_layout(data, args.dtype)
    if kind == "safetensors" and args.dtype:
        log(f"note: {args.file} is safetensors; --dtype ignored (per-tensor dtypes used)")

    peer = PEER_CLASSES[args.peer](args, data, kind, segs)
    peer.setup()
    peer.warmup()

    c_s, d_s, dt_s, sizes, rts = [], [], [], [], []
    try:
        for r in range(args.runs):
            st = peer.prep_c()
            gc.collect()
            t0 = time.perf_counter()
            comp = peer.compress(st)
            c_s.append(time.perf_counter() - t0)
            sizes.append(peer.size(comp))
            del st
            st = peer.prep_d(comp)
            gc.collect()
            t0 = time.perf_counter()
            out = peer.decompress(st)
            t1 = time.perf_counter()
            decoded = None
            if peer.per_tensor:
                try:
                    decoded, out = out, assemble(peer.segs, data, out)
                except ValueError as e:
                    log(f"round trip: {e}")
                    decoded, out = out, b""
                dt_s.append(t1 - t0)
            d_s.append(time.perf_counter() - t0)
            rts.append(check_roundtrip(peer, out, orig_sha, decoded))
            log(
                f"[{args.peer}/{args.setting}] run {r + 1}/{args.runs}: size {sizes[-1]} "
                f"c {c_s[-1]:.3f}s d {d_s[-1]:.3f}s roundtrip {rts[-1]}"
            )
            del out, comp, st, decoded
    finally:
        peer.close()

    n = len(data)
    if "FAILED" in rts:
        rt = "FAILED"
    elif all(x == "identical" for x in rts):
        rt = "identical"
    else:
        rt = "tensors-identical"
    notes = list(peer.notes)
    if len(set(sizes)) > 1:
        notes.append("compressed size differs between runs (non-deterministic)")
    if kind == "buffer" and args.peer in ("zipnn", "z4ai", "openzl"):
        notes.append(
            f"non-safetensors file treated as one {segs[0].dtype} buffer"
            + (f" + {segs[-1].size} raw tail byte(s)" if len(segs) > 1 else "")
        )
    try:
        from importlib.metadata import version

        pv = version(dist)
    except Exception:
        pv = None
    res = {
        "peer": args.peer,
        "setting": args.setting,
        "file": os.path.abspath(args.file),
        "original_bytes": n,
        "compressed_bytes": sizes[-1],
        "fraction": round(sizes[-1] / n, 6),
        "compress_s": [round(x, 6) for x in c_s],
        "decompress_s": [round(x, 6) for x in d_s],
        "compress_MBps_median": round(n / 1e6 / statistics.median(c_s), 2),
        "decompress_MBps_median": round(n / 1e6 / statistics.median(d_s), 2),
        "roundtrip": rt,
        "mode": peer.mode,
        "notes": "; ".join(notes),
        "threads": args.threads,
        "runs": args.runs,
        "dtype": args.dtype,
        "layout": kind,
        "peer_version": pv,
        "compressed_bytes_per_run": sizes,
    }
    if dt_s:  # per-tensor: decode of the tensors alone, without assembling the file
        res["decompress_tensors_only_s"] = [round(x, 6) for x in dt_s]
        res["decompress_tensors_only_MBps_median"] = round(n / 1e6 / statistics.median(dt_s), 2)
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['peer']}/{res['setting']} {os.path.basename(args.file)}: fraction {res['fraction']:.4f} "
            f"compress {res['compress_MBps_median']} MB/s decompress {res['decompress_MBps_median']} MB/s "
            f"roundtrip {rt} [{res['mode']}]"
        )
    return 0 if rt != "FAILED" else 1


if __name__ == "__main__":
    sys.exit(main())
