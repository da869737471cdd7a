"""Lossy presets on all-MiniLM-L6-v2: size after entropy coding, error, embedding cosine.

    python benches/lossy.py                    # the corpus's minilm folder, all rows
    python benches/lossy.py --no-eval          # skip the embedding cosine (no torch needed)
    python benches/lossy.py -o benches/results-lossy-2026-11-29.md
    python benches/lossy.py --ecsq             # --target-bits 3.0/4.25/6.0 vs llama.cpp Q3_K,
                                               # Q4_K, IQ4_XS, Q6_K on the same tensors

One row per preset, each a ``zipmodel.compress_file(model.safetensors, lossy=...)`` with the
default selection rules (norms, biases, 1-D and small tensors kept exact; the same tensors in
every row). Columns:

Rows: the presets as ``zipmodel compress --lossy`` runs them, plus ``int8 absmax`` (int8
with ``Int8Stage(entropy_cap=None)``: scale = absmax / 127 always) and ``int8 g32`` (int8 with
a BF16 scale per 32 elements, ``Int8Stage(group_size=32)``: Q8_0's layout), both through
``compress_file(stages=...)``, for comparison.

- ``bits/w coded``: stored bytes of the quantized tensors (codes + scales + zero points, after
  the lossless stage's entropy coders) × 8 / their element count, from the container's index;
- ``bits/w stored``: the same before entropy coding (4-bit codes counted as 4 bits);
- ``file``: the whole ``.zm`` over the original ``model.safetensors`` (fp32, 90.9 MB);
- ``rel RMS`` / ``SNR dB`` / ``max abs``: error totals over the quantized tensors
  (``zipmodel.quality``: float64 sums over the dequantized values);
- ``cos mean`` / ``cos min``: ``zipmodel eval`` — mean-pooled embeddings of the 125 bundled
  sentences, original folder vs the folder with this ``.zm`` decoded in place.

Peer rows (``gguf`` package's numpy quantizers, ``gguf.quants.quantize``/``dequantize``) run
on the very same tensors, each flattened into blocks of 32 along storage order (every
selected tensor's element count is a multiple of 32). Their ``bits/w stored`` is the block
format's own size (Q8_0 8.5, Q4_0 4.5, Q4_1 5.0); ``bits/w coded`` is those blocks after
zipmodel's lossless GGUF block split and entropy coders (what ``zipmodel compress`` would
make of a GGUF file holding them); ``file`` puts the coded blocks in place of the same
tensors in the lossless row's container. Q4_K has no numpy quantizer in gguf (NotImplementedError), so it
is left out. The cosine of a peer row is measured on a safetensors file with its dequantized
tensors, coded losslessly.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))
DEFAULT_OUT = HERE / "results-lossy-2026-11-29.md"

# (label, preset, options); a preset that is a callable builds the stage itself.
ROWS: list[tuple[str, object, dict]] = [
    ("lossless", None, {}),
    ("bf16", "bf16", {}),
    ("fp8 (per channel)", "fp8", {}),
    ("fp8 per tensor", "fp8", {"per_tensor": True}),
    ("int8 (per channel)", "int8", {}),
    ("int8 absmax (per channel)", "int8-absmax", {}),
    ("int8 g32 (Q8_0 layout)", "int8-g32", {}),
    ("int4 g64", "int4", {}),
    ("int4 asym g64", "int4", {"asymmetric": True}),
    ("int4 g32", "int4", {"group_size": 32}),
    ("int4 asym g32", "int4", {"asymmetric": True, "group_size": 32}),
    ("nf4 g64", "nf4", {}),
    ("nf4 g32", "nf4", {"group_size": 32}),
    ("mantissa 7 bits", None, {"mantissa_bits": 7}),
    ("mantissa 4 bits", None, {"mantissa_bits": 4}),
]
PEERS = ["Q8_0", "Q4_0", "Q4_1"]


def _stage_options(preset, opts):
    """compress_file keywords for a row."""
    if preset in ("int8-g32", "int8-absmax"):
        from zipmodel.stages.quant import Int8Stage
        from zipmodel.stages.rules import stage_chooser

        if preset == "int8-g32":
            return {"stages": stage_chooser(Int8Stage(group_size=32))}
        return {"stages": stage_chooser(Int8Stage())}
    if preset is None and not opts:
        return {}
    return {"lossy": preset, **opts}


def _cosine(folder: Path, zm: Path, enabled: bool) -> tuple[float, float] | None:
    if not enabled:
        return None
    from zipmodel.evaluate import embedding_agreement

    rep = embedding_agreement(folder, zm)
    return rep.mean_cosine, rep.min_cosine


def run_zipmodel(src: Path, folder: Path, tmp: Path, label, preset, opts, evaluate: bool) -> dict:
    import zipmodel
    from zipmodel.quality import total

    out = tmp / (label.replace(" ", "_").replace("(", "").replace(")", "") + ".zm")
    t0 = time.perf_counter()
    rep = zipmodel.compress_file(src, out, force=True, **_stage_options(preset, opts))
    seconds = time.perf_counter() - t0
    s = rep.summary
    staged = [t for t in s.tensors if t.stage is not None]
    n = sum(int(np.prod(t.shape)) for t in staged)
    row = {
        "label": label,
        "tensors": len(staged),
        "elements": n,
        "names": [t.name for t in staged],
        "coded_bits": 8 * sum(t.compressed_bytes for t in staged) / n if n else None,
        "file": s.container_bytes / s.original_bytes,
        "container_bytes": s.container_bytes,
        "staged_bytes": sum(t.compressed_bytes for t in staged),
        "tensor_bytes": {t.name: t.compressed_bytes for t in s.tensors},
        "seconds": seconds,
    }
    if staged:
        q = total(t.quality for t in staged)
        row.update(stored_bits=q.bits, rel_rms=q.rel_rms, snr_db=q.snr_db, max_abs=q.max_abs)
    row["cos"] = _cosine(folder, out, evaluate)
    return row


def run_peer(src: Path, folder: Path, tmp: Path, qname: str, names, lossless: dict, evaluate: bool):
    import gguf
    from gguf.quants import dequantize, quantize
    from safetensors.numpy import load_file, save_file

    import zipmodel
    from zipmodel.quality import measure, total

    qt = getattr(gguf.GGMLQuantizationType, qname)
    tensors = load_file(str(src))
    blocks, stats, n = [], [], 0
    for name in names:
        x = tensors[name]
        b = quantize(x.reshape(-1, 32), qt)
        y = dequantize(b, qt).reshape(x.shape).astype(np.float32)
        stats.append(measure(x, y, stored_bits=8 * b.nbytes))
        blocks.append(b.reshape(-1))
        tensors[name] = y
        n += x.size
    q = total(stats)
    coded = len(zipmodel.compress_bytes(np.concatenate(blocks).tobytes(), dtype=f"GGUF_{qname}"))
    cos = None
    if evaluate:
        st = tmp / f"{qname}.safetensors"
        save_file(tensors, str(st))
        zm = tmp / "model.safetensors.zm"
        zipmodel.compress_file(st, zm, force=True)
        cos = _cosine(folder, zm, True)
    own = sum(lossless["tensor_bytes"][k] for k in names)  # those tensors coded losslessly
    file_bytes = lossless["container_bytes"] - own + coded
    return {
        "label": f"gguf {qname}",
        "tensors": len(names),
        "elements": n,
        "coded_bits": 8 * coded / n,
        "stored_bits": q.bits,
        "file": file_bytes / os.path.getsize(src),
        "rel_rms": q.rel_rms,
        "snr_db": q.snr_db,
        "max_abs": q.max_abs,
        "cos": cos,
        "seconds": None,
    }


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict]) -> str:
    head = (
        "| row | tensors | bits/w coded | bits/w stored | file | rel RMS | SNR dB | max abs "
        "| cos mean | cos min |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        cos = r.get("cos") or (None, None)
        lines.append(
            f"| {r['label']} | {r['tensors']} | {_f(r.get('coded_bits'), '.3f')} "
            f"| {_f(r.get('stored_bits'), '.3f')} | {_f(r['file'], '.4f')} "
            f"| {_f(r.get('rel_rms'), '.5f')} | {_f(r.get('snr_db'), '.2f')} "
            f"| {_f(r.get('max_abs'), '.3g')} | {_f(cos[0], '.6f')} | {_f(cos[1], '.6f')} |"
        )
    return "\n".join(lines)


def targets(rows: dict[str, dict]) -> list[str]:
    """Issue 6's targets, each with the figure that decides it."""
    out = []

    def check(ok: bool, text: str) -> None:
        out.append(f"- [{'x' if ok else ' '}] {text}")

    def cos(label):
        c = rows[label].get("cos")
        return c[0] if c else float("nan")

    i8 = rows["int8 (per channel)"]
    check(
        i8["coded_bits"] <= 7.0 and cos("int8 (per channel)") >= 0.999,
        f"int8 ≤ 7.0 bits/weight ({i8['coded_bits']:.3f}) with mean cosine ≥ 0.999 "
        f"({cos('int8 (per channel)'):.6f})",
    )
    check(
        cos("fp8 (per channel)") >= 0.998,
        f"fp8 mean cosine ≥ 0.998 ({cos('fp8 (per channel)'):.6f})",
    )
    for label in ("int4 g64", "nf4 g64"):
        r = rows[label]
        check(
            r["coded_bits"] <= 4.6 and cos(label) >= 0.95,
            f"{label} ≤ 4.6 bits/weight ({r['coded_bits']:.3f}) with mean cosine ≥ 0.95 ({cos(label):.6f})",
        )
    b = rows["bf16"]
    check(b["file"] <= 0.34, f"bf16 from fp32: file ≤ 0.34 of the fp32 file ({b['file']:.4f})")
    for peer, mine in (
        ("gguf Q8_0", "int8 g32 (Q8_0 layout)"),
        ("gguf Q4_0", "int4 g32"),
        ("gguf Q4_0", "nf4 g32"),
        ("gguf Q4_1", "int4 asym g32"),
    ):
        if peer not in rows:
            continue
        p, m = rows[peer], rows[mine]
        check(
            m["rel_rms"] <= p["rel_rms"]
            and m["coded_bits"] <= min(p["stored_bits"], p["coded_bits"]),
            f"{mine}: rel RMS {m['rel_rms']:.5f} at {m['coded_bits']:.3f} bits/w vs {peer} "
            f"{p['rel_rms']:.5f} at {p['stored_bits']:.2f} stored / {p['coded_bits']:.3f} coded",
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=CORPUS / "minilm")
    ap.add_argument("--fp32", type=Path, default=CORPUS / "minilm_fp32.safetensors",
                    help="fp32 file for the bf16 row (default: the corpus's minilm_fp32)")  # fmt: skip
    ap.add_argument("--no-eval", action="store_true", help="skip the embedding cosine")
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    src = args.folder / "model.safetensors"
    if not src.is_file():
        print(f"{src}: not found (run shared/corpus/fetch.sh)", file=sys.stderr)
        return 1
    evaluate = not args.no_eval
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="zipmodel-lossy-") as td:
        tmp = Path(td)
        for label, preset, opts in ROWS:
            f = args.fp32 if preset == "bf16" and args.fp32.is_file() else src
            r = run_zipmodel(f, args.folder, tmp, label, preset, opts, evaluate)
            print(f"{label}: {r.get('coded_bits') or 0:.3f} bits/w, file {r['file']:.4f}, "
                  f"{r['seconds']:.1f} s, cos {r['cos']}", file=sys.stderr)  # fmt: skip
            rows.append(r)
        by = {r["label"]: r for r in rows}
        names = by["int8 (per channel)"]["names"]
        for q in PEERS:
            r = run_peer(src, args.folder, tmp, q, names, by["lossless"], evaluate)
            print(f"{r['label']}: {r['coded_bits']:.3f} bits/w, cos {r['cos']}", file=sys.stderr)
            rows.append(r)
            by[r["label"]] = r
    import zipmodel

    doc = [
        f"# Lossy presets on all-MiniLM-L6-v2 ({datetime.date.today().isoformat()})",
        "",
        f"`python benches/lossy.py` — zipmodel {zipmodel.__version__}, numpy {np.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs. Source: `{src.name}` of the corpus's "
        f"`minilm` folder ({os.path.getsize(src):,} bytes, fp32; the bf16 row compresses "
        f"`{args.fp32.name}`, the same bytes). {by['int8 (per channel)']['tensors']} tensors "
        f"({by['int8 (per channel)']['elements']:,} weights) are quantized in every row; see the "
        "docstring of benches/lossy.py for what each column means.",
        "",
        table(rows),
        "",
        "Targets (issue 6):",
        "",
        *targets(by),
        "",
    ]
    text = "\n".join(doc)
    print(text)
    args.output.write_text(text)
    return 0


# -- issue 18: --target-bits (ECSQ) against llama.cpp's K-quants on the same tensors ------

ECSQ_TARGETS = (3.0, 4.25, 6.0)
GGML_PEERS = (("Q3_K", 3.0), ("Q4_K", 4.25), ("IQ4_XS", 4.25), ("Q6_K", 6.0))  # (type, our row)
GGML_DIR = HERE.parent.parent / "shared" / "peers" / "ggml"


def _ggml_quantize():
    """``quantize(x, type)`` of ../shared/peers/ggml, or None when the library is absent."""
    if not (GGML_DIR / "libggml-base.so").is_file():
        return None
    sys.path.insert(0, str(GGML_DIR))
    try:
        from ggml_quant import quantize
    except Exception as e:  # the .so does not load here
        print(f"ggml peer unavailable: {e}", file=sys.stderr)
        return None
    return quantize


def _values(src: Path, names: list[str]) -> dict[str, np.ndarray]:
    """The float32 values of the named tensors, read through zipmodel's own readers (so a
    CTranslate2 .bin works as a safetensors file does)."""
    from zipmodel.readers import read_layout
    from zipmodel.stages.quant_common import as_values

    data = np.fromfile(src, np.uint8)
    layout = read_layout(data, path=str(src))
    segs = {s.name: s for s in layout.segments if s.name in set(names)}
    return {n: as_values(data[segs[n].offset : segs[n].offset + segs[n].size], segs[n].dtype)
            .reshape(segs[n].shape) for n in names}  # fmt: skip


def run_ecsq(src: Path, folder: Path | None, tmp: Path, evaluate: bool) -> list[dict]:
    """Rows for ``compress_file(src, target_bits=B)`` and the ggml peers on its tensors."""
    import zipmodel

    rows = []
    names: list[str] = []
    for tb in ECSQ_TARGETS:
        out = tmp / f"ecsq-{tb}.zm"
        t0 = time.perf_counter()
        rep = zipmodel.compress_file(src, out, force=True, target_bits=tb)
        seconds = time.perf_counter() - t0
        q = rep.summary.quality_total()
        names = [t.name for t in rep.summary.staged()]
        row = {"label": f"ecsq --target-bits {tb}", "bits": q["bits_per_weight"],
               "rel_rms": q["rel_rms"], "seconds": seconds, "tensors": q["tensors"],
               "elements": q["elements"], "target": tb}  # fmt: skip
        if evaluate and folder is not None and tb == 4.25:
            row["cos"] = _cosine(folder, out, True)
        rows.append(row)
        print(f"{src.name} {row['label']}: {row['bits']:.4f} bits/w, rel RMS "
              f"{row['rel_rms']:.5f}, {seconds:.1f} s", file=sys.stderr)  # fmt: skip
    quantize = _ggml_quantize()
    if quantize is None:
        return rows
    vals = _values(src, names)
    for qtype, _ in GGML_PEERS:
        err = ref = 0.0
        nbytes = count = 0
        deq = {}
        for n, w in vals.items():
            # rows of 256 in storage order (every selected tensor here has 256 | its size,
            # but MiniLM's rows are 384 long: llama.cpp itself would pick another type there)
            y, nb = quantize(w.reshape(-1, 256), qtype)
            w64 = w.reshape(-1).astype(np.float64)
            err += float(np.square(y.reshape(-1).astype(np.float64) - w64).sum())
            ref += float(np.square(w64).sum())
            nbytes += nb
            count += w.size
            deq[n] = y.reshape(w.shape)
        row = {"label": f"llama.cpp {qtype}", "bits": 8 * nbytes / count,
               "rel_rms": (err / ref) ** 0.5, "tensors": len(vals), "elements": count}  # fmt: skip
        if evaluate and folder is not None and qtype == "IQ4_XS":
            from safetensors.numpy import load_file, save_file

            full = load_file(str(src))
            full.update({n: v.astype(full[n].dtype) for n, v in deq.items()})
            st = tmp / "iq4_xs.safetensors"
            save_file(full, str(st))
            zipmodel.compress_file(st, tmp / "iq4_xs.zm", force=True)
            row["cos"] = _cosine(folder, tmp / "iq4_xs.zm", True)
        rows.append(row)
        print(f"{src.name} {row['label']}: {row['bits']:.4f} bits/w, rel RMS "
              f"{row['rel_rms']:.5f}", file=sys.stderr)  # fmt: skip
    return rows


def ecsq_main(argv) -> int:
    ap = argparse.ArgumentParser(description="--target-bits (ECSQ) vs llama.cpp K-quants")
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--folder", type=Path, default=CORPUS / "minilm")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("-o", "--output", type=Path, default=HERE / "results-lossy-2026-12-07.md")
    args = ap.parse_args(argv)
    files = args.files or [CORPUS / "minilm_fp32.safetensors", CORPUS / "minilm_bf16.safetensors",
                           CORPUS / "whisper_tiny_ct2.bin"]  # fmt: skip
    import zipmodel

    doc = [
        f"# --target-bits (ECSQ) against llama.cpp's quantizers ({datetime.date.today()})",
        "",
        f"`python benches/lossy.py --ecsq` — zipmodel {zipmodel.__version__}, {platform.machine()},"
        f" {os.cpu_count()} CPUs, `compress_file(..., target_bits=B)` at the default level and "
        "threads. Bits: the container's bytes of the quantized tensors (codes, escapes, frames) "
        "× 8 / their weights; llama.cpp's: its packed blocks (no entropy coding), run on the "
        "very same tensors through `../shared/peers/ggml/ggml_quant.py` `quantize()`, each "
        "tensor in storage order as rows of 256 (MiniLM's and Whisper's rows are 384 long: "
        "llama.cpp would store those in another type). rel RMS = sqrt(sum sq err / sum sq) "
        "over those tensors. Cosine: `zipmodel eval` on MiniLM (the peer's dequantized tensors "
        "in a safetensors, coded losslessly).",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="zipmodel-ecsq-") as td:
        for f in files:
            if not f.is_file():
                print(f"{f}: not found, skipped", file=sys.stderr)
                continue
            folder = (
                args.folder if f.name == "minilm_fp32.safetensors" and not args.no_eval else None
            )
            rows = run_ecsq(f, folder, Path(td), folder is not None)
            doc += [f"## {f.name} ({rows[0]['tensors']} tensors, {rows[0]['elements']:,} weights)",
                    "", "| row | bits/weight | rel RMS | vs peer | compress s | cosine mean / min |",
                    "|---|---|---|---|---|---|"]  # fmt: skip
            by = {r["label"]: r for r in rows}
            for r in rows:
                vs = ""
                if r["label"].startswith("ecsq"):
                    peers = [
                        q for q, t in GGML_PEERS if t == r["target"] and f"llama.cpp {q}" in by
                    ]
                    vs = ", ".join(f"{r['rel_rms'] / by[f'llama.cpp {q}']['rel_rms'] - 1:+.1%} vs {q}"
                                   for q in peers)  # fmt: skip
                cos = r.get("cos")
                doc.append(f"| {r['label']} | {r['bits']:.4f} | {r['rel_rms']:.5f} | {vs} | "
                           f"{r.get('seconds', 0):.1f} | "
                           f"{'' if cos is None else f'{cos[0]:.5f} / {cos[1]:.5f}'} |")  # fmt: skip
            doc.append("")
    text = "\n".join(doc)
    print(text)
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ecsq":
        sys.exit(ecsq_main(sys.argv[2:]))
    sys.exit(main())
