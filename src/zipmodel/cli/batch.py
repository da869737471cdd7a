"""``zipmodel batch``: a thin shell over :func:`zipmodel.batching.batch`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click

from ..errors import ZipmodelError
from ._options import (
    base_option,
    check_rules,
    chunk_size_option,
    folder_options,
    level_option,
    lossy_from_params,
    lossy_options,
    output_options,
)
from ._output import Output, human_bytes

RULES = [
    (lambda o: o["lossy"].enabled and o["base"], "--base and a lossy stage cannot be combined"),
    (lambda o: not o["sources"] and not o["manifest"], "name SOURCES or a --manifest FILE.jsonl"),
    (
        lambda o: o["workers"] and o["scheduler"],
        "--workers sizes the local cluster: drop it with --scheduler",
    ),
]


@click.command()
@click.argument("sources", nargs=-1, type=click.Path())
@click.option(
    "--manifest",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE.jsonl",
    help='Sources listed one JSON object a line: {"source": PATH, "base": PATH, "output": '
    "PATH} (base and output optional; source and base relative to the manifest's folder, "
    "output to OUTDIR).",
)
@click.option(
    "-o",
    "--output-dir",
    "output_dir",
    required=True,
    type=click.Path(file_okay=False),
    metavar="OUTDIR",
    help="Folder of the outputs (SOURCE -> OUTDIR/NAME.zm) and of batch.jsonl.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 4096),
    help="Worker processes of the local cluster. Default: the cores / --threads-per-worker.",
)
@click.option(
    "--threads-per-worker",
    "threads",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="zipmodel threads in each task (-T of compress); a worker process runs one task at a "
    "time, so its memory is chunk size x threads.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Run on this existing Dask cluster (tcp://host:8786) instead of a local one; every "
    "worker must see the same paths.",
)
@level_option()
@chunk_size_option
@folder_options
@lossy_options
@base_option(
    "Compress every source against this base model, as compress --base does (a manifest "
    "line's base wins).",
)
@output_options
def batch(
    sources,
    manifest,
    output_dir,
    workers,
    threads,
    scheduler,
    level,
    chunk_size,
    min_size,
    follow_symlinks,
    base,
    quiet,
    json_mode,
    no_progress,
    **lossy_params,
):
    """Compress many model files and folders on Dask: SOURCE -> OUTDIR/NAME.zm.

    Each source (a file, or a model folder as one task) is compressed in a worker process
    exactly as `zipmodel compress` would: the same container, byte for byte, written
    atomically. By default a local cluster of --workers processes runs here; --scheduler
    runs the same batch on an existing Dask cluster (Slurm, PBS, Kubernetes: docs/batch.md).

    OUTDIR/batch.jsonl gets one line per source as it finishes (status, sizes, ratio,
    seconds, worker, SHA-256 of source and output). Running the same command again skips the
    sources whose recorded output still holds (sizes and times checked, SHA-256 only where
    they moved). Sources with identical content are compressed once. A killed worker's task
    runs again elsewhere; a source that fails is recorded with its message and the others go
    on (exit code 1 at the end). Ctrl-C cancels the tasks and leaves no partial output.

    Needs Dask: pip install 'zipmodel[batch]'.
    """
    from .. import batching

    out = Output("batch", quiet=quiet, json_mode=json_mode, progress=not no_progress)
    lossy = lossy_from_params(lossy_params)
    check_rules(
        RULES, lossy=lossy, base=base, sources=sources, manifest=manifest, workers=workers,
        scheduler=scheduler,
    )  # fmt: skip

    with _progress(out) as progress:
        rep = batching.batch(
            sources,
            output_dir,
            manifest=manifest,
            workers=workers,
            threads_per_worker=threads,
            scheduler=scheduler,
            level=level,
            chunk_size=chunk_size,
            min_size=min_size,
            follow_symlinks=follow_symlinks,
            base=base,
            progress=progress,
            on_item=_item_line(out),
            lossy=lossy,
        )
    _report(out, rep, output_dir)
    sys.exit(out.finish())


def _item_line(out: Output):
    """What is said as each source finishes (errors with their recorded message)."""

    def line(item) -> None:
        r = item.record
        if item.status == "failed":
            # the recorded message, worded by the library (a KilledWorker is no bug of ours)
            out.error(
                item.source, ZipmodelError(r.get("message") or "failed", hint=r.get("hint", ""))
            )
            return
        sizes = f"{human_bytes(r['source_bytes'])} -> {human_bytes(r['output_bytes'])}"
        if item.status == "duplicate":
            out.line(f"{item.source} = {r['duplicate_of']} -> {r['output']}  (same content)")
        else:
            out.line(
                f"{item.source} -> {r['output']}  {sizes}  ({100 * r['ratio']:.2f}%)  "
                f"{r['seconds']:.1f} s  {r['worker']}"
            )

    return line


def _report(out: Output, rep, output_dir) -> None:
    """The results (one per source, --json) and the closing line."""
    from .. import batching

    for item in rep.items:
        if item.status == "failed":  # reported by line() as it finished
            continue
        if item.status == "skipped" and not item.output:  # already compressed: not a source
            out.warn(item.source, item.record["message"])
            continue
        r = item.record
        out.result(
            item.kind,
            item.source,
            {
                "output": r.get("output"),
                "status": "skipped" if item.status == "skipped" else r["status"],
                **{
                    k: r.get(k)
                    for k in (
                        "source_bytes",
                        "output_bytes",
                        "ratio",
                        "seconds",
                        "worker",
                        "source_sha256",
                        "output_sha256",
                        "duplicate_of",
                    )
                    if k in r
                },
            },
        )
    done = sum(i.status in ("ok", "duplicate") for i in rep.items)
    skipped = sum(i.status == "skipped" and bool(i.output) for i in rep.items)
    out.line(
        f"batch: {done} compressed, {skipped} already done, {len(rep.failed)} failed  "
        f"({rep.seconds:.1f} s, {rep.workers} workers) -> {Path(output_dir) / batching.RECORD}"
    )


@contextmanager
def _progress(out: Output):
    """A progress bar over the batch's source bytes, with sources done and failed (a no-op
    off a terminal, with -q or --json)."""
    with out.progress("batch") as bar:
        if bar is None:
            yield None
            return

        def update(s) -> None:
            left = s.sources - s.skipped
            counts = f"{s.done}/{left} done" + (f", {s.failed} failed" if s.failed else "")
            if s.skipped:
                counts += f", {s.skipped} skipped"
            bar(s.bytes_done, s.bytes_total or None, f"batch {counts}")

        yield update
