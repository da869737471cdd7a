"""Time to a full state dict: safetensors against ``zipmodel.load`` and ZipNN, in one run.

    python benches/load.py                          # minilm_fp32 + minilm_bf16 from the corpus
    python benches/load.py --runs 5 --threads 1 2   # more runs
    python benches/load.py --levels default         # containers of one level only
    python benches/load.py --big 1.5                # + a generated 1.5 GB bf16 checkpoint,
                                                    #   with peak RSS of compress / decompress

Every file is in the page cache (read once, and every method runs once untimed first). Each
timer runs from the file on disk to a dict of arrays whose every page has been touched (one
byte per 4 KiB read inside the timer, for every method, so a loader that maps lazily is not
timed for less work). Two settings, two tables:

- **one process** (``--runs`` rounds in this process, every method once per round, in a new
  seeded order each round): repeated loads, where the allocator hands each load the memory
  the last one freed (glibc keeps freed blocks under 32 MiB), so page faults mostly drop out;
- **fresh process** (``--fresh-runs`` rounds, each load in a new process, numpy rows and
  ZipNN, shuffled the same way; ``--fresh-runs 0`` skips it): how a model is loaded in
  practice, once per process. Imports and a warm-up on a small file are untimed; the timed
  load gets fresh memory. This table also gives the CPU time of the loading process (all its
  threads).

Rows:

- ``safetensors numpy`` / ``safetensors torch``: ``safetensors.{numpy,torch}.load_file``
  (the numpy loader reads bfloat16 only once ``ml_dtypes`` is imported, which this script does).
- ``zipmodel numpy Tn <level>`` / ``zipmodel torch Tn <level>``: ``zipmodel.load`` of the
  ``.zm`` written at that level (written once, untimed), ``threads=n``.
- ``zipnn Tn``: ZipNN 0.5.4 per tensor (``benches/peers/zipnn_load.py`` in the zipnn venv):
  read its file, decompress every tensor with ZipNN's ``threads=n``, view as arrays. Its
  timer runs in that child process; imports and set-up are outside it, as for the others.

The ratio column is the time over safetensors' own for the same framework (numpy rows and
ZipNN over ``safetensors numpy``, torch rows over ``safetensors torch``).
``safetensors.torch.load_file`` returns tensors on a private memory map of the file: it copies
nothing (its pages come from the page cache on first touch), where every other row here
produces arrays in memory of their own.
``--big`` also runs ``zipmodel compress`` and ``decompress`` of the generated file under
``/usr/bin/time -v`` and reports wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
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


def _st_numpy():
    import ml_dtypes  # noqa: F401  (registers "bfloat16" with numpy: safetensors' numpy loader needs it)
    from safetensors.numpy import load_file

    return load_file


def methods(src: Path, zms: dict[str, Path], threads: list[int], torch_rows: bool = True) -> dict:
    """name -> callable that loads a state dict (untimed set-up already done)."""
    st_numpy = _st_numpy()
    out = {"safetensors numpy": lambda: st_numpy(str(src))}
    torch_ok = False
    if torch_rows:
        try:
            import torch  # noqa: F401
            from safetensors.torch import load_file as st_torch

            out["safetensors torch"] = lambda: st_torch(str(src))
            torch_ok = True
        except ImportError:
            pass
    frameworks = ["numpy", "torch"] if torch_ok else ["numpy"]
    for fw in frameworks:
        for level, zm in zms.items():
            for t in threads:
                out[f"zipmodel {fw} T{t} {level}"] = lambda t=t, zm=zm, fw=fw: zipmodel.load(
                    zm, framework=fw, threads=t
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


def containers(src: Path, tmp: Path, levels: list[str], threads: int) -> dict[str, Path]:
    out = {}
    for level in levels:
        zm = tmp / f"{src.name}.{level}.zm"
        if not zm.exists():
            rep = zipmodel.compress_file(src, zm, level=level, threads=threads)
            print(f"# {src.name} {level}: {rep.input_bytes / 1e6:.1f} MB -> {rep.ratio:.4f}",
                  file=sys.stderr)  # fmt: skip
        out[level] = zm
    return out


def bench_file(src: Path, zms: dict[str, Path], threads: list[int], runs: int) -> dict:
    for p in (src, *zms.values()):  # page cache
        with open(p, "rb") as f:
            while f.read(64 << 20):
                pass
    fns = methods(src, zms, threads)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in list(fns.items()):  # warm-up (kernels, pools); drop what cannot load
        try:
            touch_any(fn())
        except Exception as e:
            print(f"# {src.name}: {name}: n/a ({type(e).__name__}: {e})", file=sys.stderr)
            del fns[name]
    for rnd in range(runs):
        order = list(fns)
        random.Random(rnd).shuffle(order)  # a new (seeded) order each round: what runs
        for name in order:  # before a method changes its time (the heap it finds, caches)
            fn = fns[name]
            gc.collect()
            t0 = time.perf_counter()
            sd = fn()
            touch_any(sd)
            times[name].append(time.perf_counter() - t0)
            del sd
    return {k: statistics.median(v) if v else None for k, v in times.items()}


def one_tensor(zm: Path) -> tuple:
    """Random access: the smallest tensor through ``zipmodel.open``, and the bytes it read."""
    with zipmodel.open(zm) as f:
        small = min(f.keys(), key=lambda k: f.tensor_info(k).nbytes)
        f.get_tensor(small)
        return small, f.tensor_info(small).nbytes, f.bytes_read, zm.stat().st_size


# -- fresh processes ------------------------------------------------------------------------


def make_small(path: Path) -> None:
    """A 1 MB safetensors file of F32, BF16 and I64 tensors: the untimed warm-up of a fresh
    process (imports, compiled kernels, thread pool) that leaves its heap small."""
    from safetensors.numpy import save_file

    _st_numpy()
    import ml_dtypes

    rng = np.random.default_rng(1)
    w = (rng.standard_normal((256, 384)) * 0.05).astype(np.float32)
    save_file(
        {
            "f32": w,
            "bf16": w.astype(ml_dtypes.bfloat16),
            "ids": np.arange(512, dtype=np.int64),
        },
        str(path),
    )


def child(spec: dict) -> dict:
    """One fresh-process load (run as ``load.py --child JSON``): warm up on the small file,
    then time one load of the target, with its CPU time."""
    if spec["method"] == "safetensors":
        load_file = _st_numpy()
        touch_any(load_file(spec["warm"]))
        fn = lambda: load_file(spec["file"])  # noqa: E731
    else:
        touch_any(zipmodel.load(spec["warm"], threads=spec["threads"]))
        fn = lambda: zipmodel.load(spec["file"], threads=spec["threads"])  # noqa: E731
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    touch_any(fn())
    return {"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def bench_fresh(src: Path, zms: dict[str, Path], small: dict, threads: list[int], runs: int):
    """name -> (median wall s, median CPU s), each load in a new process; rounds interleave
    the methods."""
    specs = {"safetensors numpy": {"method": "safetensors", "file": str(src), "warm": small["st"]}}
    for level, zm in zms.items():
        for t in threads:
            specs[f"zipmodel numpy T{t} {level}"] = {
                "method": "zipmodel", "file": str(zm), "warm": small[level], "threads": t,
            }  # fmt: skip
    got: dict[str, list[dict]] = {k: [] for k in specs}
    for rnd in range(runs):
        order = list(specs)
        random.Random(rnd).shuffle(order)
        for name in order:
            spec = specs[name]
            r = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps(spec)],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                raise RuntimeError(f"{name}: {r.stderr[-2000:]}")
            got[name].append(json.loads(r.stdout.strip().splitlines()[-1]))
    out = {
        k: (statistics.median(x["wall"] for x in v), statistics.median(x["cpu"] for x in v))
        for k, v in got.items()
    }
    for t in threads:
        z = run_zipnn(src, t, runs, fresh=True)
        if z is not None:
            out[f"zipnn T{t}"] = z
    return out


def run_zipnn(src: Path, threads: int, runs: int, fresh: bool = False):
    """ZipNN's load in its venv: median seconds of ``runs`` loads in one process, or with
    ``fresh`` (median wall s, median CPU s) of ``runs`` processes that each load once."""
    py = VENVS / "zipnn" / "bin" / "python"
    if not py.exists():
        print(f"# zipnn venv not found at {py}", file=sys.stderr)
        return None
    cmd = [str(py), str(HERE / "peers" / "zipnn_load.py"), "--file", str(src)]
    cmd += ["--threads", str(threads), "--runs", str(runs)] + (["--fresh"] if fresh else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"# zipnn failed: {r.stderr[-2000:]}", file=sys.stderr)
        return None
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    if not fresh:
        print(
            f"# zipnn T{threads} {src.name}: {doc['compressed_bytes'] / doc['original_bytes']:.4f}"
            f" of the file, {doc['roundtrip']}",
            file=sys.stderr,
        )
        return doc["median_s"]
    return doc["median_s"], doc["median_cpu_s"]


def table(results: dict[str, dict], cpu: bool = False) -> str:
    """Seconds per file, and the ratio to safetensors' loader for the same framework (numpy
    rows and ZipNN to ``safetensors numpy``, torch rows to ``safetensors torch``). With
    ``cpu`` each value is ``(wall, cpu)`` and the CPU seconds get a column too."""
    files = list(results)
    rows: list[str] = []
    for r in results.values():
        rows += [k for k in r if k not in rows]
    col = " s | x safetensors" + (" | CPU s" if cpu else "")
    head = "| method | " + " | ".join(f"{f}{col}" for f in files) + " |"
    lines = [head, "|---|" + ("---|---|---|" if cpu else "---|---|") * len(files)]
    for m in rows:
        cells = []
        for f in files:
            s = results[f]
            ref = s.get("safetensors torch") if "torch" in m else s.get("safetensors numpy")
            v = s.get(m)
            wall, c = v if cpu and v is not None else (v, None)
            ref = ref[0] if cpu and ref is not None else ref
            if wall is None or not ref:
                cells.append("n/a | " + ("| " if cpu else ""))
            else:
                cells.append(f"{wall:.3f} | {wall / ref:.2f}" + (f" | {c:.3f}" if cpu else ""))
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
    ap.add_argument("--levels", default="fast,default", help="container levels (comma-separated)")
    ap.add_argument("--runs", type=int, default=3, help="rounds in one process")
    ap.add_argument(
        "--fresh-runs", type=int, default=None, help="fresh-process rounds (default: --runs)"
    )
    ap.add_argument("--no-zipnn", action="store_true", help="skip the ZipNN rows")
    ap.add_argument(
        "--big", type=float, default=0, metavar="GB", help="add a generated bf16 checkpoint of GB"
    )
    ap.add_argument("--tmpdir", default=None, help="where containers and the big file go")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # one fresh-process load (internal)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    files = [Path(f) for f in args.files] if args.files else [CORPUS / f for f in DEFAULT_FILES]
    levels = [x.strip() for x in args.levels.split(",") if x.strip()]
    fresh_runs = args.runs if args.fresh_runs is None else args.fresh_runs
    results, fresh, one = {}, {}, {}
    with tempfile.TemporaryDirectory(prefix="zipmodel-load-bench-", dir=args.tmpdir) as td:
        tmp = Path(td)
        if args.big:
            big = tmp / "big_bf16.safetensors"
            make_big(big, args.big)
            files.append(big)
        small = {"st": tmp / "small.safetensors"}
        make_small(small["st"])
        small.update(containers(small["st"], tmp, levels, max(args.threads)))
        small = {k: str(v) for k, v in small.items()}
        for src in files:
            zms = containers(src, tmp, levels, max(args.threads))
            results[src.name] = bench_file(src, zms, args.threads, args.runs)
            if not args.no_zipnn:
                for t in args.threads:
                    results[src.name][f"zipnn T{t}"] = run_zipnn(src, t, args.runs)
            if fresh_runs:
                fresh[src.name] = bench_fresh(src, zms, small, args.threads, fresh_runs)
                if args.no_zipnn:
                    fresh[src.name] = {k: v for k, v in fresh[src.name].items() if "zipnn" not in k}
            one[src.name] = one_tensor(zms[levels[-1]])
        cores = os.cpu_count()
        print(f"\nload to a full state dict, one process: median of {args.runs}, {cores} cores\n")
        print(table(results))
        if fresh:
            print(
                f"\nload to a full state dict, a fresh process per load: median of {fresh_runs}\n"
            )
            print(table(fresh, cpu=True))
        print(f"\nrandom access: one small tensor through zipmodel.open ({levels[-1]})")
        for name, (t, nbytes, read, size) in one.items():
            print(f"- {name}: {t} ({nbytes} B) read {read} B of the {size} B container")
        if args.big:
            print(f"\n{big.name}: peak RSS (/usr/bin/time -v)\n")
            print("\n".join(big_rss(big, tmp, max(args.threads))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
