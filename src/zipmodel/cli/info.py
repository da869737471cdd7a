"""``zipmodel info``."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import replace

import click

from ._output import Output, codec_mix, dtype_table, human_bytes, quality_table
from ._stdin import STDIN_NAME, spooled_stdin


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--json", "json_mode", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option(
    "--tensors/--no-tensors",
    default=None,
    help="List every tensor (default: on a terminal, when there are at most 200 tensors).",
)
@click.option(
    "--sort",
    type=click.Choice(["file", "size", "ratio", "name"]),
    default="file",
    show_default=True,
    help="Order of the tensor list.",
)
def info(paths, json_mode, tensors, sort):
    """Show what a container holds: sizes, ratios and codecs per dtype and per tensor.

    Reads only the file header, the index and the trailer: nothing is decoded, so it is fast
    on any size of file. For a compressed folder (PATH.zm/): every file listed in zipmodel.json,
    how it is stored, and the sizes per dtype over all its .zm files.

    The listing goes to standard output (as zstd -l; zipmodel -l PATH is the same command),
    errors to stderr. A PATH of "-" reads a container from standard input (copied to a
    temporary file in $TMPDIR first).
    """
    from .. import api

    out = Output("info", json_mode=json_mode, listing=True)
    for path in paths:
        try:
            if path != "-" and os.path.isdir(path):
                out.result("folder", path, _folder_info(out, path))
                continue
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(spooled_stdin()).name if path == "-" else path
                f = stack.enter_context(api.open(src))
                s = f.summary()
                writer = f.index.writer
            name = STDIN_NAME if path == "-" else path
            if json_mode:
                d = s.to_json(tensors=tensors is not False)
                d["writer"] = writer
                out.result("file", path, d)
                continue
            out.line(
                f"{name}: {s.source_format} {s.source_name}  {human_bytes(s.original_bytes)} -> "
                f"{human_bytes(s.container_bytes)} ({100 * s.ratio:.2f}%)  "
                f"level {s.options.get('level', '?')}, chunks of {human_bytes(s.options.get('chunk_size', 0))}, "
                f"written by {writer}"
            )
            out.line(f"  sha256 {s.sha256}" + ("  (of the original)" if s.lossy else ""))
            if s.lossy:
                out.line(
                    "  lossy: some tensors were quantized; they decompress dequantized, so the "
                    "restored file differs from the original"
                )
            if s.base is not None:
                out.line(f"  base {s.base.get('name', '?')}  sha256 {s.base.get('sha256')}")
                out.line("  against the base: " + _delta_mix(s.tensors))
            out.table(dtype_table(s))
            if s.lossy:
                out.table(quality_table(s))
            show = tensors if tensors is not None else (len(s.tensors) <= 200 and out.is_tty)
            if show and s.tensors:
                out.table(_tensor_table(s.tensors, sort))
        except Exception as exc:
            out.error(path, exc)
    sys.exit(out.finish())


def _delta_mix(tensors) -> str:
    """Tensors by how they are stored against a base: count, original -> stored bytes."""
    groups: dict[str, list[int]] = {}
    for t in tensors:
        g = groups.setdefault(t.stage or "standalone", [0, 0, 0])
        g[0] += 1
        g[1] += t.original_bytes
        g[2] += t.compressed_bytes
    names = {"same": "unchanged (stored as nothing)", "xor": "xor delta", "sub": "sub delta"}
    return ", ".join(
        f"{names.get(k, k)} {n} ({human_bytes(a)} -> {human_bytes(b)})"
        for k, (n, a, b) in sorted(groups.items(), key=lambda kv: -kv[1][1])
    )


def _tensor_table(rows, sort):
    from rich.table import Table

    key = {
        "size": lambda t: -t.original_bytes,
        "ratio": lambda t: t.ratio,
        "name": lambda t: t.name,
    }.get(sort)
    rows = sorted(rows, key=key) if key else rows
    t = Table(header_style="bold")
    for col, just in [
        ("tensor", "left"),
        ("dtype", "left"),
        ("shape", "left"),
        ("original", "right"),
        ("compressed", "right"),
        ("ratio", "right"),
        ("stage", "left"),
        ("codecs", "left"),
    ]:
        t.add_column(col, justify=just)
    for r in rows:
        t.add_row(
            r.name,
            r.dtype,
            "×".join(map(str, r.shape)) or "scalar",
            human_bytes(r.original_bytes),
            human_bytes(r.compressed_bytes),
            f"{100 * r.ratio:.1f}%",
            r.transform + (f" ({r.note})" if r.note else ""),
            codec_mix(r.codecs),
        )
    return t


def folder_summaries(path: str, rep) -> dict:
    """The index summary of every .zm file of the compressed folder ``path`` (by original path)."""
    from .. import api, folder

    out = {}
    for e in rep.files:
        if e.stored == folder.ZM:
            with api.open(os.path.join(path, e.stored_path)) as f:  # the index only
                out[e.path] = f.summary()
    return out


def merged_tensors(path: str, summaries: dict):
    """One summary whose tensors are every file's, named ``file:tensor`` (the lossy report)."""
    from ..summary import Summary

    tensors = [replace(t, name=f"{p}:{t.name}") for p, s in summaries.items() for t in s.tensors]
    lossy = any(s.lossy for s in summaries.values())
    return Summary(path, "folder", 0, 0, 0, "", [], tensors, {}, lossy=lossy)


def _folder_info(out: Output, path: str) -> dict:
    """Per-file table from the manifest, and dtype sizes merged over the .zm indexes."""
    from rich.table import Table

    from .. import folder
    from ..summary import DtypeSummary, Summary

    rep = folder.read_manifest(path)
    merged: dict[str, DtypeSummary] = {}
    overhead = 0
    summaries = folder_summaries(path, rep)
    every = merged_tensors(path, summaries)
    lossy_files = {p for p, s in summaries.items() if s.lossy}
    for e in rep.files:
        if e.stored != folder.ZM:
            continue
        s = summaries[e.path]
        e.format = s.source_format
        overhead += s.overhead_bytes
        for r in s.dtypes:
            m = merged.setdefault(r.dtype, DtypeSummary(r.dtype))
            m.tensors += r.tensors
            m.original_bytes += r.original_bytes
            m.compressed_bytes += r.compressed_bytes
            for k, v in r.codecs.items():
                m.codecs[k] = m.codecs.get(k, 0) + v
    zm = [e for e in rep.files if e.stored == folder.ZM]
    dtypes = Summary(
        path,
        "folder",
        sum(e.size for e in zm),
        sum(e.stored_size for e in zm),
        overhead,
        "",
        sorted(merged.values(), key=lambda r: -r.original_bytes),
        [],
        {},
    )
    n, k = len(rep.files), rep.compressed_files
    out.line(
        f"{path}: folder of {n} files ({k} compressed, {n - k} copied)  "
        f"{human_bytes(rep.original_bytes)} -> {human_bytes(rep.stored_bytes)} "
        f"({100 * rep.ratio:.2f}%)  written by {rep.writer}"
    )
    t = Table(header_style="bold")
    for col, just in [
        ("file", "left"),
        ("stored as", "left"),
        ("format", "left"),
        ("original", "right"),
        ("stored", "right"),
        ("ratio", "right"),
    ]:
        t.add_column(col, justify=just)
    for e in rep.files:
        ratio = e.stored_size / e.size if e.size else 1.0
        t.add_row(
            e.path,
            (e.stored_path + ("  (lossy)" if e.path in lossy_files else ""))
            if e.stored == folder.ZM
            else "copy",
            e.format or "-",
            human_bytes(e.size),
            human_bytes(e.stored_size),
            f"{100 * ratio:.1f}%",
        )
    t.add_row(
        "total",
        f"{k} compressed",
        "",
        human_bytes(rep.original_bytes),
        human_bytes(rep.stored_bytes),
        f"{100 * rep.ratio:.2f}%",
        style="bold",
    )
    out.table(t)
    for e in rep.files:  # stored against another file (dedup across the folder) or a base
        if e.base:
            against = e.base.get("path") or f"base {e.base.get('name')} ({e.base['sha256'][:16]}…)"
            mix = ", ".join(f"{k} {n} ({human_bytes(b)})" for k, (n, b) in (e.stages or {}).items())
            out.line(f"  {e.path}: stored against {against}: {mix}")
    tot = rep.totals()
    if tot.get("deduplicated_tensors"):
        out.line(
            f"  {tot['deduplicated_tensors']} tensors ({human_bytes(tot['deduplicated_bytes'])}) "
            "stored once: the same bytes as a tensor of an earlier file or the base"
        )
    if zm:
        out.table(dtype_table(dtypes, title="compressed files by dtype"))
    if lossy_files:
        out.table(quality_table(every, title="lossy tensors (all files): measured error"))
    d = rep.to_json(files=True)
    d["writer"] = rep.writer
    d["dtypes"] = dtypes.to_json(tensors=False)["dtypes"]
    d["lossy"] = bool(lossy_files)
    if lossy_files:
        d["lossy_files"] = sorted(lossy_files)
        d["quality"] = every.quality_total()
    for key in ("input", "output", "seconds", "mb_per_s"):
        d.pop(key)
    return d
