"""Start-up cost as a new user meets it: a fresh venv, an empty home, the first run of each
command, then warm runs; beside ZipNN's and zstd's first and warm runs on the same files.

    python benches/startup.py [--rounds 3] [--corpus DIR] [--no-install]

Each round makes a new virtual environment, runs ``pip install <repo>`` into it with an empty
HOME, XDG_CACHE_HOME and pip cache (NUMBA_CACHE_DIR unset, so Numba caches beside the
installed kernels, as for a user), then times, in fresh processes and in this order:

    info      zipmodel info on a default-level container (no kernel at all)
    decompress   the first decompress of a default-level container of minilm_bf16 (45 MB)
    compress     the first compress of minilm_fp32 (91 MB, default level)
    decompress max  the first decompress of a --level max container (after the two above)
    warm rows    the same commands once more (cache loaded), and a 4-byte file

then in a second fresh venv the first compress alone (nothing compiled before it), and in the
first round a third whose first command is ``zipmodel warmup`` (every kernel).

The containers are made once, up front, with the zipmodel of this checkout (the same bytes a
fresh install writes). ZipNN (its venv from benches/peers/setup_peers.sh, skipped when absent)
and zstd -3 (the zstd CLI) run the same files as whole-process commands: the first run after
the page cache holds the input, then warm runs. Medians over the rounds; every figure is the
wall time of one process, so it includes Python's start-up and imports.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ZIPNN_VENV = Path(
    os.environ.get("ZIPMODEL_BENCH_VENVS", Path.home() / ".cache/zipmodel-bench/venvs")
) / "zipnn"

ZIPNN_SCRIPT = r"""
import sys, zipnn
mode, src, dst, dtype = sys.argv[1:5]
z = zipnn.ZipNN(input_format="byte", bytearray_dtype=dtype, threads=2)
data = bytearray(open(src, "rb").read())
out = z.compress(data) if mode == "c" else z.decompress(bytes(data))
open(dst, "wb").write(bytes(out))
"""


def timed(cmd, env, *, cwd=None) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return dt


def fresh_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "ZIPMODEL_", "PIP_"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PIP_CACHE_DIR=str(home / "pip"))
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warm-runs", type=int, default=5)
    ap.add_argument(
        "--corpus", default=os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache/zipmodel-corpus")
    )
    args = ap.parse_args()
    corpus = Path(args.corpus)
    bf16, fp32 = corpus / "minilm_bf16.safetensors", corpus / "minilm_fp32.safetensors"
    if not (bf16.exists() and fp32.exists()):
        raise SystemExit(f"needs minilm_bf16/minilm_fp32 in {corpus} (shared/corpus/fetch.sh)")
    work = Path(tempfile.mkdtemp(prefix="zipmodel-startup-"))
    try:
        run(args, work, bf16, fp32)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path, bf16: Path, fp32: Path) -> None:
    import zipmodel

    tiny = work / "four.bin"
    tiny.write_bytes(b"abcd")
    inputs = {"default": work / "bf16.zm", "max": work / "bf16-max.zm", "tiny": work / "four.zm"}
    zipmodel.compress_file(bf16, inputs["default"], force=True)
    zipmodel.compress_file(bf16, inputs["max"], level="max", force=True)
    zipmodel.compress_file(tiny, inputs["tiny"], force=True)
    for p in (bf16, fp32, *inputs.values()):
        p.read_bytes()  # page cache: the rows time start-up and work, not the disk
    rows: dict[str, list[float]] = {}

    def add(name, secs):
        rows.setdefault(name, []).append(secs)

    for r in range(args.rounds):
        home = work / f"home{r}"
        home.mkdir()
        env = fresh_env(home)
        venv = work / f"venv{r}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        zm = [str(venv / "bin" / "zipmodel")]
        install = timed([str(venv / "bin" / "pip"), "install", "-q", str(REPO)], env)
        add("pip install .", install)
        out = work / f"out{r}"
        out.mkdir()
        t_info = timed([*zm, "info", str(inputs["default"])], env)
        t_dec = timed([*zm, "decompress", str(inputs["default"]), "-o", str(out / "a"), "-f"], env)
        t_comp = timed([*zm, "compress", str(fp32), "-o", str(out / "b.zm"), "-f"], env)
        t_max = timed([*zm, "decompress", str(inputs["max"]), "-o", str(out / "c"), "-f"], env)
        add("first info", t_info)
        add("first decompress (default, 45 MB bf16)", t_dec)
        add("first compress (91 MB fp32)", t_comp)
        add("first decompress --level max (after those)", t_max)
        add("pip install . + first decompress", install + t_dec)
        add("pip install . + first compress", install + t_comp)
        for _ in range(args.warm_runs):
            add("warm info", timed([*zm, "info", str(inputs["default"])], env))
            add("warm decompress 4-byte file", timed(
                [*zm, "decompress", str(inputs["tiny"]), "-o", str(out / "t"), "-f"], env))
            add("warm decompress (default, 45 MB bf16)", timed(
                [*zm, "decompress", str(inputs["default"]), "-o", str(out / "a"), "-f"], env))
            add("warm compress (91 MB fp32)", timed(
                [*zm, "compress", str(fp32), "-o", str(out / "b.zm"), "-f"], env))
        add("import zipmodel", timed([str(venv / "bin" / "python"), "-c", "import zipmodel"], env))
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        # a second fresh venv whose first command is compress (nothing compiled before it)
        # and, in the first round, a third whose first command is warmup
        for what in ("compress", "warmup") if r == 0 else ("compress",):
            home.mkdir()
            env = fresh_env(home)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            zm = [str(venv / "bin" / "zipmodel")]
            install = timed([str(venv / "bin" / "pip"), "install", "-q", str(REPO)], env)
            if what == "compress":
                t = timed([*zm, "compress", str(fp32), "-o", str(out / "b.zm"), "-f"], env)
                add("first compress in a fresh venv (nothing compiled before)", t)
                add("pip install . + first compress, fresh venv", install + t)
            else:
                add("zipmodel warmup in a fresh venv (every kernel, 2 processes)", timed([*zm, "warmup"], env))
            shutil.rmtree(venv, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    peers = peer_rows(args, work, bf16, fp32)
    print_table(rows, peers, args)


def peer_rows(args, work: Path, bf16: Path, fp32: Path) -> dict[str, dict[str, list[float]]]:
    peers: dict[str, dict[str, list[float]]] = {}
    env = dict(os.environ)
    if shutil.which("zstd"):
        z = peers.setdefault("zstd -3", {})
        subprocess.run(["zstd", "-q", "-f", "-3", str(bf16), "-o", str(work / "bf16.zst")], check=True)
        z["info"] = [timed(["zstd", "-l", str(work / "bf16.zst")], env) for _ in range(args.warm_runs)]
        z["decompress"] = [timed(["zstd", "-q", "-f", "-d", str(work / "bf16.zst"), "-o", str(work / "z1")], env) for _ in range(args.warm_runs)]
        z["compress"] = [timed(["zstd", "-q", "-f", "-3", str(fp32), "-o", str(work / "z2.zst")], env) for _ in range(args.warm_runs)]
    py = ZIPNN_VENV / "bin" / "python"
    if py.exists():
        z = peers.setdefault("ZipNN 0.5.4", {})
        script = work / "zipnn_cli.py"
        script.write_text(ZIPNN_SCRIPT)
        subprocess.run([str(py), str(script), "c", str(bf16), str(work / "bf16.znn"), "bfloat16"], check=True)
        z["decompress"] = [timed([str(py), str(script), "d", str(work / "bf16.znn"), str(work / "n1"), "bfloat16"], env) for _ in range(args.warm_runs)]
        z["compress"] = [timed([str(py), str(script), "c", str(fp32), str(work / "n2"), "float32"], env) for _ in range(args.warm_runs)]
    return peers


def print_table(rows, peers, args) -> None:
    med = statistics.median
    print(f"zipmodel start-up, fresh venv and empty HOME per round; medians of {args.rounds} rounds "
          f"(warm rows: {args.warm_runs} runs a round); seconds, wall, one process each\n")
    print("| step | median | min | max |")
    print("|---|---|---|---|")
    for name, v in rows.items():
        print(f"| {name} | {med(v):.2f} | {min(v):.2f} | {max(v):.2f} |")
    if peers:
        print("\npeers on the same files, whole processes (first run = warm: no compile step); "
              f"medians of {args.warm_runs}\n")
        print("| peer | info / list | decompress (45 MB bf16) | compress (91 MB fp32) |")
        print("|---|---|---|---|")
        for peer, v in peers.items():
            cells = [f"{med(v[k]):.2f}" if k in v else "-" for k in ("info", "decompress", "compress")]
            print(f"| {peer} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
