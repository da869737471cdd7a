"""``zipmodel info``."""

from __future__ import annotations

import sys

import click

from ._errors import EXIT_OK, exit_code_for, report
from ._output import Output, codec_mix, dtype_table, human_bytes


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
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
    on any size of file.
    """
    from .. import api

    out = Output(json_mode=json_mode)
    docs, code = [], EXIT_OK
    for path in paths:
        try:
            with api.open(path) as f:
                s = f.summary()
                writer = f.index.writer
            if json_mode:
                d = s.to_json(tensors=tensors is not False)
                d["path"] = path
                d["writer"] = writer
                docs.append(d)
                continue
            out.line(
                f"{path}: {s.source_format} {s.source_name}  {human_bytes(s.original_bytes)} -> "
                f"{human_bytes(s.container_bytes)} ({100 * s.ratio:.2f}%)  "
                f"level {s.options.get('level', '?')}, chunks of {human_bytes(s.options.get('chunk_size', 0))}, "
                f"written by {writer}"
            )
            out.line(f"  sha256 {s.sha256}")
            out.table(dtype_table(s))
            show = (
                tensors if tensors is not None else (len(s.tensors) <= 200 and sys.stderr.isatty())
            )
            if show and s.tensors:
                out.table(_tensor_table(s.tensors, sort))
        except Exception as exc:
            report(exc)
            code = max(code, exit_code_for(exc))
    if json_mode:
        out.emit_json({"schema": "zipmodel.info/1", "files": docs})
    sys.exit(code)


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
            r.transform,
            codec_mix(r.codecs),
        )
    return t
