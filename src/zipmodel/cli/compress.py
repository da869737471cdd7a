"""``zipmodel compress``."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from ..dtypes import HINT_CHOICES
from ..formats import FORMATS
from ._errors import EXIT_OK, exit_code_for, report
from ._options import (
    ByteSize,
    base_option,
    folder_options,
    level_option,
    lossy_kwargs,
    lossy_options,
    output_options,
    threads_option,
    write_options,
)
from ._output import Output, dtype_table, human_bytes, quality_table
from ._stdin import spooled_stdin


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Accepted for familiarity: a folder PATH is always compressed as a whole into PATH.zm/.",
)
@write_options
@threads_option
@level_option()
@click.option(
    "--chunk-size",
    type=ByteSize(),
    default="1M",
    show_default=True,
    help="Source bytes per independently decodable chunk (4K..64M). Smaller adapts better, larger decodes faster.",
)
@click.option(
    "--dtype",
    type=click.Choice(HINT_CHOICES, case_sensitive=False),
    help="Element type of inputs zipmodel cannot parse (each becomes one tensor of this type); "
    "recognised formats keep their own dtypes unless --format raw.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="auto",
    show_default=True,
    help="Input format; auto detects it from the content. raw treats the file as opaque bytes "
    "(or as one --dtype tensor).",
)
@folder_options
@lossy_options
@base_option(
    "Store each tensor the base model also has (same name, dtype, shape) against it: as "
    "nothing when equal, else the smallest of itself, its XOR or its difference with the "
    "base's (lossless; a fine-tune shrinks to what changed). A file, .zm or folder; for a "
    "folder input, a folder whose files match by relative path. Decompressing needs the "
    "same base (its SHA-256 is recorded).",
)
@output_options
def compress(
    paths,
    recursive,
    output,
    to_stdout,
    force,
    remove,
    threads,
    level,
    chunk_size,
    dtype,
    fmt,
    min_size,
    follow_symlinks,
    lossy,
    mantissa_bits,
    group_size,
    per_tensor,
    asymmetric,
    keep,
    only,
    base,
    quiet,
    json_mode,
    no_progress,
):
    """Compress model files: PATH -> PATH.zm, losslessly unless --lossy.

    Inputs are never modified and kept unless --rm. Each output is written to a temporary file
    and renamed into place, so a failure or Ctrl-C leaves nothing behind. A PATH of "-" reads
    standard input (and writes standard output unless -o is given): a pipe is first copied to a
    temporary file in $TMPDIR (the source is memory-mapped), so memory stays flat but the disk
    needs room for one copy of the input.

    A folder (a Hugging Face model folder, say) becomes the folder PATH.zm: weight files are
    compressed to NAME.zm, small files (config, tokenizer, README) copied, and zipmodel.json
    lists every file with its SHA-256 (docs/folders.md). With --rm the folder's files are
    deleted only after the whole output verified against them.

    --lossy PRESET (or --mantissa-bits N) quantizes float weight tensors, chosen by rules
    (--keep/--only; docs/lossy.md), and prints each one's measured error; the quantized codes
    are still entropy coded. Decompressing gives the original dtypes and shapes back,
    dequantized.

    --base BASE stores a fine-tune against its base model, losslessly (docs/delta.md):
    decompress, verify and zipmodel.load then need --base (base=) too. Within a folder,
    tensors repeated across its files are stored once either way.
    """
    from .. import api

    out = Output(quiet=quiet, json_mode=json_mode, progress=not no_progress)
    lossy_kw = lossy_kwargs(lossy, mantissa_bits, group_size, per_tensor, asymmetric, keep, only)
    if lossy_kw and remove:
        raise click.UsageError("--rm with a lossy stage would delete the only exact copy")
    if lossy_kw and base:
        raise click.UsageError("--base and a lossy stage cannot be combined")
    if (output or to_stdout) and len(paths) > 1:
        raise click.UsageError("-o/--output and -c/--stdout take a single input")
    if to_stdout and output:
        raise click.UsageError("-o/--output and -c/--stdout exclude each other")
    if to_stdout and remove:
        raise click.UsageError("--rm cannot be used with -c/--stdout")
    results, folders, errors, code = [], [], [], EXIT_OK
    for path in paths:
        try:
            if path != "-" and os.path.isdir(path):
                if to_stdout:
                    raise click.UsageError("-c/--stdout cannot write a folder")
                if dtype or fmt != "auto":
                    raise click.UsageError("--dtype and --format apply to files, not folders")
                folders.append(
                    _compress_folder(
                        out,
                        path,
                        output,
                        force=force,
                        remove=remove,
                        threads=threads,
                        level=level,
                        chunk_size=chunk_size,
                        min_size=min_size,
                        follow_symlinks=follow_symlinks,
                        base=base,
                        **lossy_kw,
                    )
                )
                continue
            stdout_mode = to_stdout or (path == "-" and not output)
            if stdout_mode and sys.stdout.isatty() and not force:
                raise click.UsageError(
                    "refusing to write binary data to a terminal (use -f, or redirect)"
                )
            stdin = path == "-"
            if stdin and remove:
                raise click.UsageError("--rm cannot be used with standard input")
            with contextlib.ExitStack() as stack:
                # a pipe is spooled to a temporary file first (the container needs seeks)
                src = stack.enter_context(spooled_stdin()).name if stdin else path
                label = "stdin" if stdin else Path(path).name
                advance = stack.enter_context(out.progress(f"compress {label}"))
                rep = api.compress_file(
                    src,
                    sys.stdout.buffer if stdout_mode else output,
                    level=level,
                    chunk_size=chunk_size,
                    dtype=dtype,
                    format=fmt,
                    threads=threads,
                    force=force,
                    progress=advance,
                    name="" if stdin else None,
                    base=base,
                    **lossy_kw,
                )
            if stdout_mode:
                sys.stdout.buffer.flush()
            if stdin:
                rep.input = "-"
                out.line(
                    f"stdin -> {rep.output}: {human_bytes(rep.input_bytes)} -> "
                    f"{human_bytes(rep.output_bytes)}  ({100 * rep.ratio:.2f}%)"
                    + ("  lossy" if rep.summary.lossy else "")
                )
                if rep.summary.lossy:
                    out.table(quality_table(rep.summary))
                results.append(rep.to_json())
                continue
            if rep.note:
                out.line(f"zipmodel: note: {path}: {rep.note}")
            if remove:
                api.verify_file(rep.output, against=path, threads=threads, base=base)
                os.unlink(path)
            out.line(
                f"{rep.input} -> {rep.output}  {human_bytes(rep.input_bytes)} -> "
                f"{human_bytes(rep.output_bytes)}  ({100 * rep.ratio:.2f}%)  "
                f"{rep.mb_per_s:.0f} MB/s"
                + ("  lossy" if rep.summary.lossy else "")
                + ("  (input removed)" if remove else "")
            )
            if not quiet and not json_mode and sys.stderr.isatty():
                out.table(dtype_table(rep.summary, seconds=rep.dtype_seconds))
            if rep.summary.lossy:
                out.table(quality_table(rep.summary))
            results.append(rep.to_json())
        except click.UsageError:
            raise
        except Exception as exc:
            report(exc)
            errors.append({"input": path, "error": str(exc)})
            code = max(code, exit_code_for(exc))
    if json_mode:
        out.emit_json(
            {
                "schema": "zipmodel.compress/1",
                "files": results,
                "folders": folders,
                "errors": errors,
            }
        )
    sys.exit(code)


def _compress_folder(out: Output, path: str, output, *, remove: bool, threads: int, **kw) -> dict:
    from .. import folder
    from ..api import wants_lossy

    with out.progress(f"compress {Path(path).resolve().name}/") as advance:
        rep = folder.compress_dir(path, output, threads=threads, progress=advance, **kw)
    kept = ""
    if remove:
        folder.verify_dir(rep.output, against=path, threads=threads, base=kw.get("base"))
        gone = folder.remove_listed(path, [e.path for e in rep.files], rep.directories)
        kept = "  (input removed)" if gone else "  (input files removed; unlisted ones kept)"
    out.line(folder_line(rep) + kept)
    d = rep.to_json()
    if wants_lossy(kw):
        from .info import folder_summaries, merged_tensors

        every = merged_tensors(str(rep.output), folder_summaries(str(rep.output), rep))
        d["lossy"] = every.lossy
        if every.lossy:
            out.table(quality_table(every, title="lossy tensors (all files): measured error"))
            d["quality"] = every.quality_total()
    return d


def folder_line(rep, *, restored: bool = False) -> str:
    """One summary line for a folder result (shared with decompress)."""
    n, k = len(rep.files), rep.compressed_files
    sizes = [human_bytes(rep.original_bytes), human_bytes(rep.stored_bytes)]
    a, b = reversed(sizes) if restored else sizes
    return (
        f"{rep.input}/ -> {rep.output}/  {n} files ({k} {'decompressed' if restored else 'compressed'}, "
        f"{n - k} copied)  {a} -> {b}  ({100 * rep.ratio:.2f}%)  {rep.mb_per_s:.0f} MB/s"
        + ("  SHA-256 ok" if restored else "")
    )
