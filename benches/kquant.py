"""Our ggml block quantizers vs llama.cpp's, and per-tensor type mixes at a bits budget (issue 18).

    NUMBA_CACHE_DIR=... python benches/kquant.py [--corpus DIR] [--effort 1] [--json out.json]

Tensors: as ../shared/peers/ggml/ggml_quant.py selects them, the >= 2-D tensors whose rows
(product of all dims but the first) are a multiple of 256, of MiniLM (fp32 safetensors) and
whisper-tiny (fp16, CTranslate2, read with ``zipmodel.readers.read_layout``).

Per type: bits/weight of the blocks (nominal), bits/weight after zipmodel codes them
(``api.compress_bytes(blocks, dtype="GGUF_<TYPE>", format="raw")``, default level, one
container per tensor: 8 x container bytes / weights), aggregate relative RMS error
sqrt(sum err^2 / sum ref^2) of ours and of ggml's ``ggml_quantize_chunk`` (no imatrix).

Mixes: one type per tensor (GGUF allows that), chosen to minimise the total squared error
under a total coded-bits budget (Lagrangian choice, then greedy upgrades into what is left),
against ggml's uniform Q3_K / Q4_K / Q6_K at their nominal bits.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from zipmodel.api import compress_bytes
from zipmodel.stages.kquant_blocks import dequantize_blocks, quantize_blocks

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peers" / "ggml"
TYPES = ("q3_k", "iq4_xs", "q4_k", "q5_k", "q6_k", "q8_0")
BUDGETS = ((3.0, "q3_k"), (4.25, "q4_k"), (6.0, "q6_k"))


def load_minilm(corpus: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return dict(load_file(str(corpus / "minilm_fp32.safetensors")))


def load_whisper(corpus: Path) -> dict[str, np.ndarray]:
    from zipmodel.readers import read_layout

    data = np.fromfile(corpus / "whisper_tiny_ct2.bin", np.uint8)
    out = {}
    for s in read_layout(data).tensors():
        if s.dtype in ("F16", "F32") and s.shape:
            dt = np.float16 if s.dtype == "F16" else np.float32
            out[s.name] = data[s.offset : s.offset + s.size].view(dt).reshape(s.shape)
    return out


def select(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ggml_quant.py's rule: >= 2-D, rows a multiple of 256, float weights (not MiniLM's int64
    position_ids); as float32 (rows, row length)."""
    return {
        k: np.ascontiguousarray(v, np.float32).reshape(v.shape[0], -1)
        for k, v in sd.items()
        if np.issubdtype(v.dtype, np.floating) and v.ndim >= 2 and (v.size // v.shape[0]) % 256 == 0
    }


def measure(tensors: dict[str, np.ndarray], effort: int, ggml) -> dict:
    """Per tensor and type: weights, ref energy, our (nominal bits, coded bits, sq err) and
    ggml's (nominal bits, sq err)."""
    res = {"tensors": {}, "seconds": {q: 0.0 for q in TYPES}}
    for name, w in tensors.items():
        w64 = w.astype(np.float64)
        row = {"n": int(w.size), "ref": float((w64**2).sum()), "ours": {}, "ggml": {}}
        for q in TYPES:
            t0 = time.perf_counter()
            b = quantize_blocks(w, q, effort=effort)
            res["seconds"][q] += time.perf_counter() - t0
            y = dequantize_blocks(b, q).reshape(w.shape)
            coded = len(compress_bytes(b.tobytes(), dtype=f"GGUF_{q.upper()}", format="raw"))
            row["ours"][q] = {
                "bits": 8 * b.size,
                "coded": 8 * coded,
                "err": float(((y - w64) ** 2).sum()),
            }
            if ggml is not None:
                g, nbytes = ggml.quantize(w, q.upper())
                row["ggml"][q] = {"bits": 8 * nbytes, "err": float(((g - w64) ** 2).sum())}
        res["tensors"][name] = row
    return res


def allocate(opts: list[list[tuple[float, float]]], budget: float) -> tuple[list[int], float]:
    """One option (bits, err) per tensor minimising total err with total bits <= budget:
    the Lagrangian choice at the smallest multiplier that fits, then greedy upgrades (best
    error drop per extra bit) into the bits left. Returns (choices, total bits); [] if even
    the cheapest options do not fit."""

    def pick(lam: float) -> list[int]:
        return [min(range(len(o)), key=lambda i, o=o: o[i][1] + lam * o[i][0]) for o in opts]

    def bits(ch: list[int]) -> float:
        return sum(o[c][0] for o, c in zip(opts, ch))

    cheapest = [min(range(len(o)), key=lambda i, o=o: (o[i][0], o[i][1])) for o in opts]
    if bits(cheapest) > budget:
        return [], bits(cheapest)
    lo, hi = 0.0, 1.0
    while bits(pick(hi)) > budget:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if bits(pick(mid)) > budget:
            lo = mid
        else:
            hi = mid
    ch = pick(hi)
    while True:
        left = budget - bits(ch)
        best = None
        for t, o in enumerate(opts):
            b0, e0 = o[ch[t]]
            for i, (b, e) in enumerate(o):
                if e < e0 and b - b0 <= left:
                    gain = (e0 - e) / max(b - b0, 1e-9)
                    if best is None or gain > best[0]:
                        best = (gain, t, i)
        if best is None:
            return ch, bits(ch)
        ch[best[1]] = best[2]


def report(model: str, res: dict) -> list[str]:
    rows = list(res["tensors"].values())
    n = sum(r["n"] for r in rows)
    ref = sum(r["ref"] for r in rows)
    has_ggml = bool(rows and rows[0]["ggml"])
    out = [
        f"### {model}: {len(rows)} tensors, {n:,} weights",
        "",
        "| type | bits stored | bits coded | ours rel RMS | ggml rel RMS | ours / ggml | MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for q in TYPES:
        bits = sum(r["ours"][q]["bits"] for r in rows) / n
        coded = sum(r["ours"][q]["coded"] for r in rows) / n
        e = (sum(r["ours"][q]["err"] for r in rows) / ref) ** 0.5
        g = (sum(r["ggml"][q]["err"] for r in rows) / ref) ** 0.5 if has_ggml else float("nan")
        mbs = 4 * n / 1e6 / max(res["seconds"][q], 1e-9)
        out.append(
            f"| {q.upper()} | {bits:.4f} | {coded:.4f} | {e:.5f} | {g:.5f} | {e / g:.3f} | "
            f"{mbs:.1f} |"
        )
    out += [
        "",
        "Mixes (one type per tensor, min total squared error at total bits <= budget x weights):",
        "",
        "| budget bits/w | ours: bits coded | ours rel RMS | ggml uniform | its bits | its rel RMS"
        " | ours / ggml | target (<= 0.9) | ggml's own types mixed at the budget (nominal bits) |",
        "|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for budget, peer in BUDGETS:
        opts = [[(r["ours"][q]["coded"], r["ours"][q]["err"]) for q in TYPES] for r in rows]
        ch, b = allocate(opts, budget * n)
        if has_ggml:
            gb = sum(r["ggml"][peer]["bits"] for r in rows) / n
            ge = (sum(r["ggml"][peer]["err"] for r in rows) / ref) ** 0.5
            gopts = [[(r["ggml"][q]["bits"], r["ggml"][q]["err"]) for q in TYPES] for r in rows]
            gch, gbits = allocate(gopts, budget * n)
            if gch:
                gmix_e = (sum(o[c][1] for o, c in zip(gopts, gch)) / ref) ** 0.5
                gmix = f"{gmix_e:.5f} at {gbits / n:.3f} bits"
            else:
                gmix = f"infeasible (cheapest {gbits / n:.3f} bits)"
        else:
            gb = ge = float("nan")
            gmix = "-"
        if not ch:
            out.append(
                f"| {budget} | infeasible: cheapest mix codes at {b / n:.4f} | - | {peer.upper()} | "
                f"{gb:.4f} | {ge:.5f} | - | not met | {gmix} |"
            )
            continue
        e = (sum(o[c][1] for o, c in zip(opts, ch)) / ref) ** 0.5
        mix = ", ".join(f"{TYPES[i].upper()}x{ch.count(i)}" for i in range(len(TYPES)) if i in ch)
        ok = "met" if e <= 0.9 * ge else "not met"
        out.append(
            f"| {budget} | {b / n:.4f} ({mix}) | {e:.5f} | {peer.upper()} | {gb:.4f} | {ge:.5f} | "
            f"{e / ge:.3f} | {ok} | {gmix} |"
        )
    out += ["", "Per tensor (bits coded per weight, squared error) for each of our types:", ""]
    out.append("| tensor | weights | " + " | ".join(q.upper() for q in TYPES) + " |")
    out.append("|---|---:|" + "---|" * len(TYPES))
    for name, r in res["tensors"].items():
        cells = [f"{r['ours'][q]['coded'] / r['n']:.3f}, {r['ours'][q]['err']:.3e}" for q in TYPES]
        out.append(f"| {name} | {r['n']:,} | " + " | ".join(cells) + " |")
    return [*out, ""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "zipmodel-corpus")
    ap.add_argument("--effort", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the per-tensor measurements here")
    ap.add_argument("--models", default="minilm,whisper")
    a = ap.parse_args()
    ggml = None
    if (PEER / "libggml-base.so").exists():
        sys.path.insert(0, str(PEER))
        import ggml_quant as ggml
    else:
        print(f"(no ggml peer at {PEER}: ggml columns are NaN)", file=sys.stderr)
    loaders = {"minilm": ("all-MiniLM-L6-v2 fp32", load_minilm),
               "whisper": ("whisper-tiny fp16 (CTranslate2)", load_whisper)}  # fmt: skip
    # compile outside the timings
    warm = np.zeros((1, 256), np.float32)
    for q in TYPES:
        dequantize_blocks(quantize_blocks(warm, q), q)
    allres = {}
    lines = [f"effort={a.effort}, threads={os.cpu_count()}", ""]
    for key in a.models.split(","):
        title, load = loaders[key]
        res = measure(select(load(a.corpus)), a.effort, ggml)
        allres[key] = res
        lines += report(title, res)
    print("\n".join(lines))
    if a.json:
        a.json.write_text(json.dumps(allres, indent=1))


if __name__ == "__main__":
    main()
