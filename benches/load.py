"""Time to a full state dict: safetensors against ``zipmodel.load`` and ZipNN, in one run.

    python benches/load.py                          # minilm_fp32 + minilm_bf16 from the corpus
    python benches/load.py --runs 5 --threads 1 2   # more runs
    python benches/load.py --big 1.5                # + a generated 1.5 GB bf16 checkpoint,
                                                    #   with peak RSS of compress / decompress

Each cell is the median of ``--runs`` interleaved runs (every method once per round), page
cache warm (every file is read once and every method runs once untimed first), in this
process: from the file on disk to a dict of arrays whose every page has been touched (one byte
per 4 KiB read inside the timer, for every method, so a loader that maps lazily is not timed
for less work). Rows:

- ``safetensors numpy`` / ``safetensors torch``: ``safetensors.{numpy,torch}.load_file``
  (the numpy loader reads bfloat16 only once ``ml_dtypes`` is imported, which this script does).
- ``zipmodel numpy Tn`` / ``zipmodel torch Tn``: ``zipmodel.load`` of the ``.zm`` written at
  the default level (written once, untimed), ``threads=n``.
- ``zipnn Tn``: ZipNN 0.5.4 per tensor (``benches/peers/zipnn_load.py`` in the zipnn venv):
  read its file, decompress every tensor with ZipNN's ``threads=n``, view as arrays. Its
  timer runs in that child process; imports and set-up are outside it, as for the others.

The ratio column is the time over safetensors' own for the same framework (numpy rows and
ZipNN over ``safetensors numpy``, torch rows over ``safetensors torch``; on BF16 files, where
safetensors' numpy loader cannot, over torch's). ``safetensors.torch.load_file`` returns
tensors on a private memory map of the file, so its pages come from the page cache on first
touch rather than being copied up front.
``--big`` also runs ``zipmodel compress`` and ``decompress`` of the generated file under
``/usr/bin/time -v`` and reports wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import zipmodel

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))
VENVS = Path(
    os.environ.get("ZIPMODEL_BENCH_VENVS", Path.home() / ".cache" / "zipmodel-bench" / "venvs")
)
DEFAULT_FILES = ["minilm_fp32.safetensors", "minilm_bf16.safetensors"]
PAGE = 4096


def _torch_flat_bytes(t):
    import torch

    return t.reshape(-1).view(torch.uint8).numpy()


def methods(src: Path, zm: Path, threads: list[int]) -> dict:
    """name -> callable that loads a state dict (untimed set-up already done)."""
    import ml_dtypes  # noqa: F401  (registers "bfloat16" with numpy: safetensors' numpy loader needs it)
    from safetensors.numpy import load_file as st_numpy

    out = {"safetensors numpy": lambda: st_numpy(str(src))}
    try:
        import torch  # noqa: F401
        from safetensors.torch import load_file as st_torch

        out["safetensors torch"] = lambda: st_torch(str(src))
    except ImportError:
        pass
    for t in threads:
        out[f"zipmodel numpy T{t}"] = lambda t=t: zipmodel.load(zm, threads=t)
    if "safetensors torch" in out:
        for t in threads:
            out[f"zipmodel torch T{t}"] = lambda t=t: zipmodel.load(
                zm, framework="torch", threads=t
            )
    return out


def touch_any(sd: dict) -> int:
    """Read one byte of every page of every tensor (the sum keeps it from being skipped)."""
    total = 0
    for t in sd.values():
        a = _torch_flat_bytes(t) if type(t).__module__.startswith("torch") else t
        a = np.asarray(a).reshape(-1).view(np.uint8)
        total += int(a[::PAGE].sum()) if a.size else 0
    return total


def bench_file(src: Path, tmp: Path, threads: list[int], runs: int, zipnn: bool) -> dict:
    zm = tmp / (src.name + ".zm")
    if not zm.exists():
        rep = zipmodel.compress_file(src, zm, threads=max(threads))
        print(f"# {src.name}: {rep.input_bytes / 1e6:.1f} MB -> {rep.ratio:.4f}", file=sys.stderr)
    for p in (src, zm):  # page cache
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass
    fns = methods(src, zm, threads)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in list(fns.items()):  # warm-up (kernels, pools); drop what cannot load
        try:
            touch_any(fn())
        except Exception as e:  # safetensors numpy on BF16
            print(f"# {src.name}: {name}: n/a ({type(e).__name__}: {e})", file=sys.stderr)
            del fns[name]
            times[name] = []
    for _ in range(runs):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            sd = fn()
            touch_any(sd)
            times[name].append(time.perf_counter() - t0)
            del sd
    res = {k: statistics.median(v) if v else None for k, v in times.items()}
    if zipnn:
        for t in threads:
            res[f"zipnn T{t}"] = run_zipnn(src, t, runs)
    with zipmodel.open(zm) as f:  # random access: one small tensor
        small = min(f.keys(), key=lambda k: f.tensor_info(k).nbytes)
        f.get_tensor(small)
        one = (small, f.tensor_info(small).nbytes, f.bytes_read, zm.stat().st_size)
    return {"seconds": res, "one_tensor": one, "size": src.stat().st_size}


def run_zipnn(src: Path, threads: int, runs: int) -> float | None:
    py = VENVS / "zipnn" / "bin" / "python"
    if not py.exists():
        print(f"# zipnn venv not found at {py}", file=sys.stderr)
        return None
    cmd = [str(py), str(HERE / "peers" / "zipnn_load.py"), "--file", str(src)]
    cmd += ["--threads", str(threads), "--runs", str(runs)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"# zipnn failed: {r.stderr[-2000:]}", file=sys.stderr)
        return None
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    print(
        f"# zipnn T{threads} {src.name}: {doc['compressed_bytes'] / doc['original_bytes']:.4f} "
        f"of the file, {doc['roundtrip']}",
        file=sys.stderr,
    )
    return doc["median_s"]


def table(results: dict[str, dict]) -> str:
    """Seconds per file, and the ratio to safetensors' loader for the same framework (numpy
    rows and ZipNN to ``safetensors numpy``, or to torch's where numpy has no such dtype)."""
    files = list(results)
    rows = []
    for r in results.values():
        rows += [k for k in r["seconds"] if k not in rows]
    head = "| method | " + " | ".join(f"{f} s | x safetensors" for f in files) + " |"
    lines = [head, "|---|" + "---|---|" * len(files)]
    for m in rows:
        cells = []
        for f in files:
            s = results[f]["seconds"]
            ref = s.get("safetensors torch") if "torch" in m else None
            ref = ref or s.get("safetensors numpy") or s.get("safetensors torch")
            v = s.get(m)
            cells.append("n/a | " if v is None else f"{v:.3f} | {v / ref:.2f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_big(path: Path, gb: float, seed: int = 0) -> None:
    """An llm-like bf16 checkpoint of about ``gb`` GB, written one tensor at a time.

    Hidden 2048, MLP 5632, vocab 32000: per-matrix std ~ 1/sqrt(fan_in) with a per-row spread,
    norms near 1, embeddings and an untied head.
    """
    import struct

    h, ff, vocab = 2048, 5632, 32000
    per_layer = 4 * h * h + 3 * h * ff + 2 * h
    layers = max(1, round((gb * 1e9 / 2 - 2 * vocab * h) / per_layer))
    shapes = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [(p + f"self_attn.{n}_proj.weight", (h, h)) for n in "qkvo"]
        shapes += [(p + "mlp.gate_proj.weight", (ff, h)), (p + "mlp.up_proj.weight", (ff, h))]
        shapes += [(p + "mlp.down_proj.weight", (h, ff))]
        shapes += [
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    header, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    js = json.dumps(header).encode()
    js += b" " * (-len(js) % 8)
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)) + js)
        for _name, shape in shapes:
            if len(shape) == 1:
                w = 1.0 + 0.05 * rng.standard_normal(shape, np.float32)
            else:
                rows = rng.uniform(0.5, 1.5, (shape[0], 1)).astype(np.float32)
                w = rng.standard_normal(shape, np.float32)
                w *= rows / np.sqrt(shape[1])
            f.write((w.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    print(
        f"# generated {path.name}: {layers} layers, {path.stat().st_size / 1e9:.2f} GB",
        file=sys.stderr,
    )


def time_v(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of ``cmd`` under ``/usr/bin/time -v``."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    rss = wall = 0.0
    for line in r.stderr.splitlines():
        line = line.strip()
        if line.startswith("Maximum resident set size"):
            rss = int(line.rsplit(":", 1)[1]) / 1024
        elif line.startswith("Elapsed (wall clock) time"):
            parts = [float(x) for x in line.rsplit(" ", 1)[1].split(":")]
            wall = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return wall, rss


def big_rss(src: Path, tmp: Path, threads: int) -> list[str]:
    zm, back = tmp / "big_rss.zm", tmp / "big_rss.restored"
    cli = [sys.executable, "-m", "zipmodel"]
    out = []
    for what, cmd in (
        ("compress", [*cli, "compress", str(src), "-o", str(zm), "-T", str(threads), "-q", "-f"]),
        (
            "decompress",
            [*cli, "decompress", str(zm), "-o", str(back), "-T", str(threads), "-q", "-f"],
        ),
        (
            "load (numpy)",
            [
                sys.executable,
                "-c",
                f"import zipmodel; zipmodel.load({str(zm)!r}, threads={threads})",
            ],
        ),
    ):
        wall, rss = time_v(cmd)
        out.append(f"| {what} T{threads} | {wall:.2f} | {rss:.0f} |")
    back.unlink(missing_ok=True)
    return ["| step | wall s | peak RSS MB |", "|---|---|---|", *out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--files", nargs="*", default=None, help="safetensors files (default: corpus minilm)"
    )
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-zipnn", action="store_true", help="skip the ZipNN rows")
    ap.add_argument(
        "--big", type=float, default=0, metavar="GB", help="add a generated bf16 checkpoint of GB"
    )
    ap.add_argument("--tmpdir", default=None, help="where containers and the big file go")
    args = ap.parse_args()
    files = [Path(f) for f in args.files] if args.files else [CORPUS / f for f in DEFAULT_FILES]
    results = {}
    with tempfile.TemporaryDirectory(prefix="zipmodel-load-bench-", dir=args.tmpdir) as td:
        tmp = Path(td)
        if args.big:
            big = tmp / "big_bf16.safetensors"
            make_big(big, args.big)
            files.append(big)
        for src in files:
            results[src.name] = bench_file(src, tmp, args.threads, args.runs, not args.no_zipnn)
        print(f"\nload to a full state dict, median of {args.runs}, {os.cpu_count()} cores\n")
        print(table(results))
        print("\nrandom access: one small tensor through zipmodel.open")
        for name, r in results.items():
            t, nbytes, read, size = r["one_tensor"]
            print(f"- {name}: {t} ({nbytes} B) read {read} B of the {size} B container")
        if args.big:
            print(f"\n{big.name}: peak RSS (/usr/bin/time -v)\n")
            print("\n".join(big_rss(big, tmp, max(args.threads))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
