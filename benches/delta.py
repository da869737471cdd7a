"""Fine-tunes against their base: zipmodel standalone, zipmodel --base and ZipNN's delta route.

    python scripts/make_finetune.py          # once: writes ~/.cache/zipmodel-corpus/finetune/
    python benches/delta.py                  # all four pairs, table + results file
    python benches/delta.py --pairs full_fp32 --no-zipnn

For each fine-tune (``full``: every parameter trained; ``head``: only the last layer, pooler
and classifier head trained) in fp32 and bf16, against the base of the same dtype:

* zipmodel standalone: ``compress FT`` (level default);
* zipmodel delta: ``compress FT --base BASE`` (per tensor the smallest of standalone, xor,
  sub, or nothing for an unchanged tensor);
* ZipNN's delta route: every fine-tune tensor that the base has (same name, dtype, shape)
  XOR the base's, the safetensors file rebuilt with those tensors, then ZipNN per tensor
  (``run_peer.py --peer zipnn``, its own venv). ZipNN's own delta scripts XOR whole files and
  refuse files of different lengths (the fine-tunes carry a classifier head the base lacks),
  so the per-tensor XOR is the route at its best.

Every round trip is checked byte for byte: zipmodel's by decompressing with the base and
comparing SHA-256; ZipNN's by run_peer.py (the XOR file rebuilt) and by XORing that file
back against the base here. The table goes to stdout and to
``benches/results-delta-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import zipmodel
from zipmodel import api
from zipmodel.container.reader import ContainerReader
from zipmodel.readers import read_layout

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))
VENVS = Path(
    os.environ.get("ZIPMODEL_BENCH_VENVS", Path.home() / ".cache" / "zipmodel-bench" / "venvs")
)
PAIRS = ["full_fp32", "full_bf16", "head_fp32", "head_bf16"]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(8 << 20):
            h.update(b)
    return h.hexdigest()


def xor_file(ft: Path, base: Path, out: Path) -> int:
    """Write ``ft`` with every tensor the base has (name, dtype, shape) XOR the base's.

    Returns how many tensors were XORed. XORing the result with the base again gives ``ft``.
    """
    a = np.fromfile(ft, np.uint8)
    b = np.fromfile(base, np.uint8)
    la, lb = read_layout(a), read_layout(b)
    by_name = {s.name: s for s in lb.tensors()}
    res = a.copy()
    n = 0
    for s in la.tensors():
        o = by_name.get(s.name)
        if o is None or o.dtype != s.dtype or o.shape != s.shape:
            continue
        res[s.offset : s.end] ^= b[o.offset : o.end]
        n += 1
    res.tofile(out)
    return n


def tensor_costs(zm: Path, ft: Path, base: Path) -> dict:
    """Stored bytes of the fine-tune's tensors by how they relate to the base."""
    a = np.fromfile(ft, np.uint8)
    b = np.fromfile(base, np.uint8)
    by_name = {s.name: s for s in read_layout(b).tensors()}
    with ContainerReader(zm) as r:
        idx = r.index
        frames = idx.chunks["frame_size"].astype(np.int64)
        out = {"unchanged": [0, 0, 0], "changed": [0, 0, 0], "new": [0, 0, 0], "stages": {}}
        for e in idx.segments:
            s = e.segment
            if s.kind != "tensor":
                continue
            stored = int(frames[e.first_chunk : e.first_chunk + e.n_chunks].sum())
            o = by_name.get(s.name)
            if o is None:
                kind = "new"
            elif np.array_equal(a[s.offset : s.end], b[o.offset : o.end]):
                kind = "unchanged"
            else:
                kind = "changed"
            row = out[kind]
            row[0] += 1
            row[1] += s.size
            row[2] += stored
            stage = e.stage.name if getattr(e, "stage", None) is not None else "standalone"
            out["stages"][stage] = out["stages"].get(stage, 0) + 1
    return out


def run_zipmodel(ft: Path, base: Path, tmp: Path, threads: int) -> dict:
    res = {}
    for mode in ("standalone", "delta"):
        zm = tmp / f"{ft.stem}.{mode}.zm"
        kw = {"base": base} if mode == "delta" else {}
        t0 = time.perf_counter()
        rep = api.compress_file(ft, zm, threads=threads, force=True, **kw)
        ct = time.perf_counter() - t0
        back = tmp / f"{ft.stem}.{mode}.restored"
        t0 = time.perf_counter()
        api.decompress_file(zm, back, threads=threads, force=True, check_sha256=True, **kw)
        dt_ = time.perf_counter() - t0
        ok = sha256(back) == sha256(ft)
        back.unlink()
        res[mode] = {
            "bytes": rep.output_bytes,
            "compress_s": round(ct, 3),
            "decompress_s": round(dt_, 3),
            "identical": ok,
        }
        if mode == "delta":
            res[mode]["tensors"] = tensor_costs(zm, ft, base)
        zm.unlink()
    return res


def run_zipnn(ft: Path, base: Path, tmp: Path, threads: int) -> dict:
    py = VENVS / "zipnn" / "bin" / "python"
    if not py.exists():
        return {"error": f"no ZipNN venv at {py} (bash benches/peers/setup_peers.sh zipnn)"}
    xf = tmp / f"{ft.stem}.xor.safetensors"
    n = xor_file(ft, base, xf)
    back = tmp / f"{ft.stem}.unxor"
    xor_file(xf, base, back)
    unxor_ok = sha256(back) == sha256(ft)
    back.unlink()
    cmd = [str(py), str(HERE / "peers" / "run_peer.py"), "--peer", "zipnn", "--file", str(xf)]
    cmd += ["--threads", str(threads), "--runs", "1", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, check=False)
    xf.unlink()
    if p.returncode:
        return {"error": p.stderr.strip()[-500:]}
    r = json.loads(p.stdout)
    return {
        "bytes": int(r["compressed_bytes"]),
        "xored_tensors": n,
        "identical": r.get("roundtrip") == "identical" and unxor_ok,
        "compress_s": round(min(r["compress_s"]), 3),
        "decompress_s": round(min(r["decompress_s"]), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=CORPUS / "finetune")
    ap.add_argument("--pairs", nargs="+", default=PAIRS, choices=PAIRS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-zipnn", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="results file (default: dated)")
    args = ap.parse_args()
    if not (args.dir / "base_fp32.safetensors").exists():
        sys.exit(f"no fine-tune pairs in {args.dir}: run python scripts/make_finetune.py first")
    rows = []
    with tempfile.TemporaryDirectory(prefix="zm-delta-") as td:
        tmp = Path(td)
        for pair in args.pairs:
            kind = pair.split("_")[1]
            ft = args.dir / f"{pair}.safetensors"
            base = args.dir / f"base_{kind}.safetensors"
            print(f"{pair}: zipmodel ...", file=sys.stderr, flush=True)
            z = run_zipmodel(ft, base, tmp, args.threads)
            zn = {} if args.no_zipnn else run_zipnn(ft, base, tmp, args.threads)
            rows.append({"pair": pair, "size": ft.stat().st_size, "zipmodel": z, "zipnn": zn})
    lines = table(rows)
    print("\n".join(lines))
    date = dt.datetime.now(dt.timezone.utc).date().isoformat()
    out = args.out or HERE / f"results-delta-{date}.md"
    head = [
        f"# Fine-tune deltas, {date}",
        "",
        f"zipmodel {zipmodel.__version__}, `python benches/delta.py --threads {args.threads}`, "
        f"pairs from `scripts/make_finetune.py` ({args.dir}). Sizes in bytes; % of the "
        "fine-tune's file. Every round trip byte-identical unless marked.",
        "",
    ]
    out.write_text(
        "\n".join(head + lines) + "\n\n```json\n" + json.dumps(rows, indent=1) + "\n```\n"
    )
    print(f"wrote {out}", file=sys.stderr)


def table(rows: list[dict]) -> list[str]:
    def pct(n: int, size: int) -> str:
        return f"{n:,} ({100 * n / size:.2f}%)"

    lines = [
        "| pair | fine-tune | zipmodel standalone | zipmodel --base | ZipNN XOR route | "
        "--base vs ZipNN | round trips |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        z, zn, size = r["zipmodel"], r["zipnn"], r["size"]
        zb = z["delta"]["bytes"]
        zn_cell = pct(zn["bytes"], size) if "bytes" in zn else zn.get("error", "not run")[:40]
        vs = f"{zb / zn['bytes']:.3f}x" if "bytes" in zn else "-"
        ok = all(x.get("identical") for x in (z["standalone"], z["delta"])) and (
            zn.get("identical", True)
        )
        lines.append(
            f"| {r['pair']} | {size:,} | {pct(z['standalone']['bytes'], size)} | {pct(zb, size)} "
            f"| {zn_cell} | {vs} | {'identical' if ok else 'FAILED'} |"
        )
    lines += [
        "",
        "Where the `--base` bytes go (tensors: count, original bytes -> stored bytes in frames; "
        "the index and headers are the rest of the file):",
        "",
        "| pair | unchanged | changed | new (not in base) | stages |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        t = r["zipmodel"]["delta"]["tensors"]

        def cell(k: str, t=t) -> str:
            n, a, b = t[k]
            return f"{n}: {a:,} -> {b:,}"

        stages = ", ".join(f"{k} {v}" for k, v in sorted(t["stages"].items()))
        lines.append(
            f"| {r['pair']} | {cell('unchanged')} | {cell('changed')} | {cell('new')} | {stages} |"
        )
    lines += [
        "",
        "Times (s, compress / decompress, threads as above): "
        + "; ".join(
            f"{r['pair']}: standalone {r['zipmodel']['standalone']['compress_s']}/"
            f"{r['zipmodel']['standalone']['decompress_s']}, --base "
            f"{r['zipmodel']['delta']['compress_s']}/{r['zipmodel']['delta']['decompress_s']}"
            + (
                f", ZipNN {r['zipnn']['compress_s']}/{r['zipnn']['decompress_s']}"
                if "compress_s" in r["zipnn"]
                else ""
            )
            for r in rows
        ),
    ]
    return lines


if __name__ == "__main__":
    main()
