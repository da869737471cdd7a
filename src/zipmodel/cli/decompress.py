"""``zipmodel decompress``."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from ._options import (
    base_option,
    check_write_options,
    output_options,
    threads_option,
    write_options,
)
from ._output import Output, human_bytes
from ._stdin import STDIN_NAME, default_paths, spooled_stdin


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(allow_dash=True))
@write_options
@threads_option
@click.option(
    "--check",
    is_flag=True,
    help="Also recompute the SHA-256 of the restored file and compare it with the one recorded "
    "at compression (per-chunk checksums are always verified).",
)
@base_option(
    "The base model the input was compressed against (compress --base): a file, .zm or "
    "folder with the same SHA-256. Without it, or with another base, decompressing fails "
    "naming the SHA-256 expected.",
)
@output_options
def decompress(
    paths,
    output,
    to_stdout,
    force,
    remove,
    keep_input,
    threads,
    check,
    base,
    quiet,
    json_mode,
    no_progress,
):
    """Restore the original files: PATH.zm -> PATH, byte for byte.

    Every frame and chunk checksum is verified while decoding; a damaged container fails with
    exit code 1 and leaves no output. A PATH of "-" reads standard input (and writes standard
    output unless -o is given); the index is at the end of a container, so a pipe is first
    copied to a temporary file in $TMPDIR: memory stays flat, the disk needs room for one copy.
    Without a PATH, a pipe on standard input is read.

    A lossy container (compress --lossy) restores its quantized tensors dequantized, in their
    original dtypes and shapes; each is checked against its recorded checksum (--check cannot
    apply: the original's SHA-256 cannot match).

    A compressed folder (PATH.zm/ holding zipmodel.json) is restored to the folder PATH, every
    file checked against the SHA-256 in zipmodel.json; a mismatch leaves no output folder.
    """
    from .. import api

    from .compress import output_in_dir

    out = Output("decompress", quiet=quiet, json_mode=json_mode, progress=not no_progress)
    paths = default_paths(paths)
    check_write_options(paths, output, to_stdout, remove, keep_input, json_mode)
    for path in paths:
        try:
            if path != "-" and os.path.isdir(path):
                if to_stdout:
                    raise click.UsageError("-c/--stdout cannot write a folder")
                d = _decompress_folder(out, path, output, force, remove, threads, base)
                out.result("folder", path, d)
                continue
            stdin = path == "-"
            stdout_mode = to_stdout or (stdin and not output)
            if stdout_mode and sys.stdout.isatty() and not force:
                raise click.UsageError(
                    "refusing to write binary data to a terminal (use -f, or redirect)"
                )
            if stdin and remove:
                raise click.UsageError("--rm cannot be used with standard input")
            dst = None if stdout_mode else output_in_dir(output, path, decompress=True)
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(spooled_stdin()) if stdin else path
                label = "stdin" if stdin else os.path.basename(path)
                advance = stack.enter_context(out.progress(f"decompress {label}"))
                rep = api.decompress_file(
                    src,
                    sys.stdout.buffer if stdout_mode else dst,
                    threads=threads,
                    force=force,
                    check_sha256=check or remove,
                    progress=advance,
                    base=base,
                )
            if stdin:
                rep.input = STDIN_NAME
            if stdout_mode:
                sys.stdout.buffer.flush()
            if remove:
                os.unlink(path)
            out.line(
                f"{rep.input} -> {rep.output}  {human_bytes(rep.input_bytes)} -> "
                f"{human_bytes(rep.output_bytes)}  {rep.mb_per_s:.0f} MB/s"
                + ("  SHA-256 ok" if rep.sha256_checked else "")
                + ("  lossy: tensors dequantized, checksums ok" if rep.lossy else "")
                + ("  (input removed)" if remove else "")
            )
            out.result("file", path, rep.to_json())
        except click.UsageError:
            raise
        except Exception as exc:
            out.error(path, exc)
    sys.exit(out.finish())


def _decompress_folder(out: Output, path: str, output, force, remove, threads, base) -> dict:
    from .. import folder
    from .compress import folder_line

    with out.progress(f"decompress {os.path.basename(os.path.abspath(path))}/") as advance:
        rep = folder.decompress_dir(
            path, output, threads=threads, force=force, progress=advance, base=base
        )
    kept = ""
    if remove:  # every file was checked against its SHA-256 while being restored
        stored = [e.stored_path for e in rep.files] + [folder.MANIFEST]
        gone = folder.remove_listed(path, stored, rep.directories)
        kept = "  (input removed)" if gone else "  (input files removed; unlisted ones kept)"
    out.line(folder_line(rep, restored=True) + kept)
    return rep.to_json()
