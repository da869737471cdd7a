"""``zipmodel export``."""

from __future__ import annotations

import sys

import click

from ._options import base_option, threads_option
from ._output import Output, human_bytes


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--to",
    "to",
    type=click.Choice(["gguf"]),
    required=True,
    help="Format to write: gguf (llama.cpp).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Output file (default: the container's name without .zm and the source's suffix, "
    "plus .gguf: model.safetensors.zm -> model.gguf).",
)
@click.option("-f", "--force", is_flag=True, help="Overwrite an existing output.")
@threads_option
@base_option("The base model a container compressed with --base needs (docs/delta.md).")
@click.option("--json", "json_mode", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def export(path, to, output, force, threads, base, json_mode, quiet):
    """Write a container as a file other tools load directly: --to gguf (llama.cpp).

    Tensors a ggml preset stored (compress --lossy q4_k, q8_0, ...) are written as their
    stored blocks, verbatim, with their ggml type; every other tensor in its stored dtype
    (what decompress restores; types GGUF lacks widened exactly, U8 -> I16, FP8 -> F32, ...).
    A GGUF source keeps its metadata and tensor order, so llama.cpp runs the result; other
    sources get minimal metadata without general.architecture, which llama.cpp needs
    (docs/export.md). Needs the gguf package: pip install 'zipmodel[gguf]'.

    The output is written to a temporary file, checked with gguf's reader and renamed into
    place; an existing output needs -f.
    """
    from .. import export as exp

    out = Output("export", quiet=quiet, json_mode=json_mode)
    try:
        rep = exp.export_file(path, output, to=to, force=force, threads=threads, base=base)
        types = ", ".join(f"{k} {n}" for k, n in sorted(rep.types.items(), key=lambda kv: -kv[1]))
        out.line(
            f"{path} -> {rep.output}  {rep.tensors} tensors ({types})  "
            f"{human_bytes(rep.output_bytes)}  metadata: {rep.metadata}"
        )
        if rep.metadata == "minimal":
            out.line(
                "  note: no general.architecture (the source was not a GGUF): gguf tools read "
                "it, llama.cpp needs architecture metadata (docs/export.md)"
            )
        out.result("file", path, rep.to_json())
    except Exception as exc:
        out.error(path, exc)
    sys.exit(out.finish())
