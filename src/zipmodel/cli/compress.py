"""``zipmodel compress``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..dtypes import HINT_CHOICES
from ..formats import FORMATS
from ._errors import EXIT_OK, exit_code_for, report
from ._options import ByteSize, output_options, threads_option, write_options
from ._output import Output, dtype_table, human_bytes


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False, allow_dash=True))
@write_options
@threads_option
@click.option(
    "-l",
    "--level",
    type=click.Choice(["fast", "default", "max"]),
    default="default",
    show_default=True,
    help="fast: quickest coding; default: size and speed balanced; max: smallest file, slower.",
)
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
@output_options
def compress(
    paths,
    output,
    to_stdout,
    force,
    remove,
    threads,
    level,
    chunk_size,
    dtype,
    fmt,
    quiet,
    json_mode,
    no_progress,
):
    """Compress model files: PATH -> PATH.zm, losslessly.

    Inputs are never modified and kept unless --rm. Each output is written to a temporary file
    and renamed into place, so a failure or Ctrl-C leaves nothing behind. A PATH of "-" reads
    standard input (and writes standard output unless -o is given).
    """
    from .. import api

    out = Output(quiet=quiet, json_mode=json_mode, progress=not no_progress)
    if (output or to_stdout) and len(paths) > 1:
        raise click.UsageError("-o/--output and -c/--stdout take a single input")
    if to_stdout and output:
        raise click.UsageError("-o/--output and -c/--stdout exclude each other")
    if to_stdout and remove:
        raise click.UsageError("--rm cannot be used with -c/--stdout")
    results, errors, code = [], [], EXIT_OK
    for path in paths:
        try:
            stdout_mode = to_stdout or (path == "-" and not output)
            if stdout_mode and sys.stdout.isatty() and not force:
                raise click.UsageError(
                    "refusing to write binary data to a terminal (use -f, or redirect)"
                )
            if path == "-":
                if remove:
                    raise click.UsageError("--rm cannot be used with standard input")
                data = sys.stdin.buffer.read()
                blob = api.compress_bytes(
                    data,
                    level=level,
                    chunk_size=chunk_size,
                    dtype=dtype,
                    format=fmt,
                    threads=threads,
                )
                if stdout_mode:
                    sys.stdout.buffer.write(blob)
                    sys.stdout.buffer.flush()
                else:
                    _write_atomic(output, blob, force)
                out.line(f"stdin: {human_bytes(len(data))} -> {human_bytes(len(blob))}")
                results.append({"input": "-", "input_bytes": len(data), "output_bytes": len(blob)})
                continue
            with out.progress(f"compress {Path(path).name}") as advance:
                rep = api.compress_file(
                    path,
                    sys.stdout.buffer if stdout_mode else output,
                    level=level,
                    chunk_size=chunk_size,
                    dtype=dtype,
                    format=fmt,
                    threads=threads,
                    force=force,
                    progress=advance,
                )
            if stdout_mode:
                sys.stdout.buffer.flush()
            if rep.note:
                out.line(f"zipmodel: note: {path}: {rep.note}")
            if remove:
                api.verify_file(rep.output, against=path, threads=threads)
                os.unlink(path)
            out.line(
                f"{rep.input} -> {rep.output}  {human_bytes(rep.input_bytes)} -> "
                f"{human_bytes(rep.output_bytes)}  ({100 * rep.ratio:.2f}%)  "
                f"{rep.mb_per_s:.0f} MB/s" + ("  (input removed)" if remove else "")
            )
            if not quiet and not json_mode and sys.stderr.isatty():
                out.table(dtype_table(rep.summary, seconds=rep.dtype_seconds))
            results.append(rep.to_json())
        except click.UsageError:
            raise
        except Exception as exc:
            report(exc)
            errors.append({"input": path, "error": str(exc)})
            code = max(code, exit_code_for(exc))
    if json_mode:
        out.emit_json({"schema": "zipmodel.compress/1", "files": results, "errors": errors})
    sys.exit(code)


def _write_atomic(path: str, blob: bytes, force: bool) -> None:
    from .._io import atomic_output

    with atomic_output(path, force=force) as (fd, _), os.fdopen(fd, "wb", closefd=False) as f:
        f.write(blob)
