"""``zipmodel compress``."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from ..dtypes import HINT_CHOICES
from ..formats import FORMATS, SUFFIX
from ._options import (
    base_option,
    check_rules,
    check_write_options,
    chunk_size_option,
    folder_options,
    level_option,
    lossy_from_params,
    lossy_options,
    output_options,
    threads_option,
    verbose_option,
    write_options,
)
from ._output import Output, dtype_table, human_bytes, quality_table
from ._stdin import STDIN_NAME, default_paths, spooled_stdin

# What compress refuses before any work, as (condition, message) on its options.
RULES = (
    (
        lambda o: o["lossy"].enabled and o["remove"],
        "--rm with a lossy stage would delete the only exact copy",
    ),
    (lambda o: o["lossy"].enabled and o["base"], "--base and a lossy stage cannot be combined"),
)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(allow_dash=True))
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Accepted for familiarity: a folder PATH is always compressed as a whole into PATH.zm/.",
)
@write_options
@threads_option
@level_option()
@chunk_size_option
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
@verbose_option("Also print the per-dtype table when stderr is not a terminal.")
@output_options
def compress(
    paths,
    recursive,
    output,
    to_stdout,
    force,
    remove,
    keep_input,
    threads,
    level,
    chunk_size,
    dtype,
    fmt,
    min_size,
    follow_symlinks,
    base,
    verbose,
    quiet,
    json_mode,
    no_progress,
    **lossy_params,
):
    """Compress model files: PATH -> PATH.zm, losslessly unless --lossy.

    Inputs are never modified and kept unless --rm. Each output is written to a temporary file
    and renamed into place, so a failure or Ctrl-C leaves nothing behind. A PATH of "-" reads
    standard input (and writes standard output unless -o is given): a pipe is first copied to a
    temporary file in $TMPDIR (the source is memory-mapped), so memory stays flat but the disk
    needs room for one copy of the input. Without a PATH, a pipe on standard input is read.

    An input already ending in .zm is skipped with a warning (exit code 0) unless -f, -o or
    -c is given.

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
    out = Output("compress", quiet=quiet, json_mode=json_mode, progress=not no_progress)
    paths = default_paths(paths)
    lossy = lossy_from_params(lossy_params)
    check_rules(RULES, lossy=lossy, remove=remove, base=base)
    check_write_options(paths, output, to_stdout, remove, keep_input, json_mode)
    o = dict(
        output=output,
        to_stdout=to_stdout,
        force=force,
        remove=remove,
        threads=threads,
        level=level,
        chunk_size=chunk_size,
        dtype=dtype,
        fmt=fmt,
        min_size=min_size,
        follow_symlinks=follow_symlinks,
        base=base,
        lossy=lossy,
        verbose=verbose,
    )
    for path in paths:
        try:
            if path != "-" and os.path.isdir(path):
                _folder_input(out, path, o)
            else:
                _file_input(out, path, o)
        except click.UsageError:
            raise
        except Exception as exc:
            out.error(path, exc)
    sys.exit(out.finish())


# What one input may not be given, as (condition on its options, message).
FOLDER_RULES = (
    (lambda o: o["to_stdout"], "-c/--stdout cannot write a folder"),
    (
        lambda o: o["dtype"] or o["fmt"] != "auto",
        "--dtype and --format apply to files, not folders",
    ),
)
FILE_RULES = (
    (
        lambda o: o["stdout_mode"] and sys.stdout.isatty() and not o["force"],
        "refusing to write binary data to a terminal (use -f, or redirect)",
    ),
    (lambda o: o["stdin"] and o["remove"], "--rm cannot be used with standard input"),
)


def _folder_input(out: Output, path: str, o: dict) -> None:
    check_rules(FOLDER_RULES, **o)
    if _already_compressed(out, path, o["output"], o["force"]):
        return
    d = _compress_folder(
        out,
        path,
        o["output"],
        force=o["force"],
        remove=o["remove"],
        threads=o["threads"],
        level=o["level"],
        chunk_size=o["chunk_size"],
        min_size=o["min_size"],
        follow_symlinks=o["follow_symlinks"],
        base=o["base"],
        lossy=o["lossy"],
    )
    out.result("folder", path, d)


def _file_input(out: Output, path: str, o: dict) -> None:
    from .. import api

    stdin = path == "-"
    stdout_mode = o["to_stdout"] or (stdin and not o["output"])
    check_rules(FILE_RULES, stdin=stdin, stdout_mode=stdout_mode, **o)
    if not stdin and not stdout_mode and _already_compressed(out, path, o["output"], o["force"]):
        return
    dst = None if stdout_mode else output_in_dir(o["output"], path, decompress=False)
    with contextlib.ExitStack() as stack:
        # a pipe is spooled to a temporary file first (the container needs seeks)
        src = stack.enter_context(spooled_stdin()).name if stdin else path
        label = "stdin" if stdin else Path(path).name
        advance = stack.enter_context(out.progress(f"compress {label}"))
        rep = api.compress_file(
            src,
            sys.stdout.buffer if stdout_mode else dst,
            level=o["level"],
            chunk_size=o["chunk_size"],
            dtype=o["dtype"],
            format=o["fmt"],
            threads=o["threads"],
            force=o["force"],
            progress=advance,
            name="" if stdin else None,
            meta=not stdin,  # a spooled pipe's 0600 temp is no source mode to keep
            base=o["base"],
            lossy=o["lossy"],
        )
    if stdout_mode:
        sys.stdout.buffer.flush()
    if stdin:
        _report_stdin(out, path, rep)
        return
    if rep.note:
        out.line(f"zipmodel: note: {path}: {rep.note}")
    if o["remove"]:
        api.verify_file(rep.output, against=path, threads=o["threads"], base=o["base"])
        os.unlink(path)
    out.line(
        f"{rep.input} -> {rep.output}  {human_bytes(rep.input_bytes)} -> "
        f"{human_bytes(rep.output_bytes)}  ({100 * rep.ratio:.2f}%)  "
        f"{rep.mb_per_s:.0f} MB/s"
        + ("  lossy" if rep.summary.lossy else "")
        + ("  (input removed)" if o["remove"] else "")
    )
    if o["verbose"] or out.is_tty:
        out.table(dtype_table(rep.summary, seconds=rep.dtype_seconds))
    if rep.summary.lossy:
        out.table(quality_table(rep.summary))
    out.result("file", path, rep.to_json())


def _report_stdin(out: Output, path: str, rep) -> None:
    rep.input = "-"
    out.line(
        f"{STDIN_NAME} -> {rep.output}: {human_bytes(rep.input_bytes)} -> "
        f"{human_bytes(rep.output_bytes)}  ({100 * rep.ratio:.2f}%)"
        + ("  lossy" if rep.summary.lossy else "")
    )
    if rep.summary.lossy:
        out.table(quality_table(rep.summary))
    out.result("file", path, rep.to_json())


def _already_compressed(out: Output, path: str, output, force: bool) -> bool:
    """An input named ``*.zm`` is not compressed again by default (gzip's rule; zstd would
    make ``x.zst.zst``): a warning, and the other inputs go on."""
    if output or force or not Path(path).name.endswith(SUFFIX) or not os.path.exists(path):
        return False
    out.warn(path, f"{path}: already has {SUFFIX} suffix -- ignored (-f compresses it again)")
    return True


def output_in_dir(output, path: str, *, decompress: bool):
    """``-o DIR`` for a file input, DIR an existing directory: the output goes in it, under
    the name it would get next to the input (as ``cp FILE DIR``)."""
    if not output or output == "-" or not os.path.isdir(output):
        return output
    if path == "-":
        raise click.UsageError(
            f"-o {output} is a directory, and standard input has no name to put in it: "
            "name the output file"
        )
    from ..api import default_output

    return os.path.join(output, default_output(path, decompress=decompress).name)


def _compress_folder(out: Output, path: str, output, *, remove: bool, threads: int, **kw) -> dict:
    from .. import folder

    with out.progress(f"compress {Path(path).resolve().name}/") as advance:
        rep = folder.compress_dir(path, output, threads=threads, progress=advance, **kw)
    kept = ""
    if remove:
        folder.verify_dir(rep.output, against=path, threads=threads, base=kw.get("base"))
        gone = folder.remove_listed(path, [e.path for e in rep.files], rep.directories)
        kept = "  (input removed)" if gone else "  (input files removed; unlisted ones kept)"
    out.line(folder_line(rep) + kept)
    d = rep.to_json()
    if kw["lossy"].enabled:
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
