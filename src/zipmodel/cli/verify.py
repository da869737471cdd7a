"""``zipmodel verify``."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from ._options import base_option, threads_option
from ._output import Output, human_bytes
from ._stdin import STDIN_NAME, spooled_stdin


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option(
    "--against",
    type=click.Path(exists=True),
    help="Also compare the decoded bytes with this original file, or folder for a compressed "
    "folder (one input only).",
)
@threads_option
@base_option(
    "The base model the containers were compressed against (compress --base): a file, .zm "
    "or folder with the same SHA-256; a missing or different one fails with exit code 1.",
)
@click.option("--json", "json_mode", is_flag=True, help="Print the results as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--no-progress", is_flag=True, help="Never show a progress bar.")
def verify(paths, against, threads, base, json_mode, quiet, no_progress):
    """Decode containers completely and check every checksum and the source's SHA-256.

    Nothing is written. A lossy container (compress --lossy) cannot reproduce its source: its
    chunk checksums and each quantized tensor's recorded checksum are checked instead, and
    the result says lossy (exit 0 when they hold; --against is refused with exit 3). Exit code
    3 if a container does not reproduce its source (a checksum or SHA-256 mismatch, or a
    difference from --against), 1 if it cannot be read at all.

    One line per container goes to standard output (zipmodel -t PATH is the same command),
    errors to stderr. A PATH of "-" reads a container from standard input (copied to a
    temporary file in $TMPDIR first).

    A compressed folder (PATH.zm/) is checked file by file against zipmodel.json; with
    --against DIR also against the original folder, which must hold exactly the same files.
    """
    from .. import api

    if against and len(paths) > 1:
        raise click.UsageError("--against takes a single container")
    out = Output(
        "verify", quiet=quiet, json_mode=json_mode, progress=not no_progress, listing=True
    )
    for path in paths:
        try:
            if path != "-" and os.path.isdir(path):
                out.result("folder", path, _verify_folder(out, path, against, threads, base))
                continue
            name = STDIN_NAME if path == "-" else path
            with contextlib.ExitStack() as stack:
                src = stack.enter_context(spooled_stdin()).name if path == "-" else path
                advance = stack.enter_context(out.progress(f"verify {name}"))
                rep = api.verify_file(
                    src, against=against, threads=threads, progress=advance, base=base
                )
            if rep.lossy:
                out.line(
                    f"{name}: OK (lossy)  {human_bytes(rep.source_bytes)} restored, every chunk "
                    "and quantized-tensor checksum holds; it cannot match the original bytes "
                    "(its tensors come back dequantized)"
                )
            else:
                out.line(
                    f"{name}: OK  {human_bytes(rep.source_bytes)} restored, SHA-256 {rep.sha256[:16]}… matches"
                    + (f", identical to {against}" if against else "")
                )
            out.result("file", path, rep.to_json())
        except Exception as exc:
            out.error(path, exc, verifying=True)
    sys.exit(out.finish())


def _verify_folder(out: Output, path: str, against, threads, base) -> dict:
    from .. import folder

    with out.progress(f"verify {path}") as advance:
        rep = folder.verify_dir(path, against=against, threads=threads, progress=advance, base=base)
    out.line(
        f"{path}: OK  {len(rep.files)} files, {human_bytes(rep.original_bytes)} restored, "
        f"every SHA-256 matches {folder.MANIFEST}"
        + (f", identical to {against}" if against else "")
    )
    return {
        "ok": True,
        "files": len(rep.files),
        "source_bytes": rep.original_bytes,
        "against": str(against) if against else None,
        "seconds": round(rep.seconds, 4),
    }
