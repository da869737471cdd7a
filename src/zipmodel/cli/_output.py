"""All output goes through here: human lines and tables (rich) on stderr, or on stdout for a
listing (``info``, ``verify``: what the command was asked for, as ``zstd -l``); progress bars
only on a terminal; the ``--json`` document (one envelope for every command) on stdout."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

# --json: every command prints one document of this shape (docs/cli.md holds its JSON Schema).
JSON_VERSION = 2


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _stderr_is_tty() -> bool:
    return _is_tty(sys.stderr)


class Output:
    """Where a command prints: ``quiet`` silences the human side, ``json_mode`` moves results
    to one JSON document on stdout, progress bars only appear on an interactive stderr.

    ``listing`` sends the human lines and tables to stdout (the command's answer, for a
    pipe); diagnostics (errors, warnings, progress) stay on stderr. The command records each
    input's result, error or warning here, and :meth:`finish` prints the JSON envelope and
    returns the exit code.
    """

    def __init__(
        self,
        command: str = "",
        *,
        quiet: bool = False,
        json_mode: bool = False,
        progress: bool = True,
        listing: bool = False,
    ):
        self.command = command
        self.quiet = quiet
        self.json_mode = json_mode
        self.listing = listing
        self.show_progress = (
            progress
            and not quiet
            and not json_mode
            and _stderr_is_tty()
            and os.environ.get("CI", "") in ("", "0", "false")
        )
        self._console = None
        self.results: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.warnings: list[dict[str, Any]] = []
        self.code = 0

    @property
    def is_tty(self) -> bool:
        """Whether the human output goes to a terminal."""
        return _is_tty(sys.stdout if self.listing else sys.stderr)

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            # Off a terminal (logs, CI, a pipe), do not squeeze tables into 80 columns.
            width = None if self.is_tty else 200
            self._console = Console(
                stderr=not self.listing,
                no_color=bool(os.environ.get("NO_COLOR")),
                highlight=False,
                width=width,
            )
        return self._console

    def line(self, text: str) -> None:
        """One line of human output, unless quiet or JSON."""
        if not self.quiet and not self.json_mode:
            click.echo(text, err=not self.listing)

    def table(self, table) -> None:
        if not self.quiet and not self.json_mode:
            self.console.print(table)

    # -- the --json envelope ------------------------------------------------------------------
    def result(self, kind: str, path: str, doc: dict[str, Any]) -> None:
        """Record one input's result (``kind``: file, folder, repo or eval)."""
        # ``path`` names the input as given ("-" for standard input, never a spool file)
        doc = {k: v for k, v in doc.items() if k not in ("input", "path")}
        self.results.append({"kind": kind, "path": path, **doc})

    def error(self, path: str, exc: BaseException, *, verifying: bool = False) -> int:
        """Report a failed input on stderr, record it, and return its exit code."""
        from ._errors import exit_code_for, message_for, report

        report(exc)
        code = exit_code_for(exc, verifying=verifying)
        msg, hint = message_for(exc)
        self.errors.append({"path": path, "message": msg, "hint": hint, "exit_code": code})
        self.code = max(self.code, code)
        return code

    def warn(self, path: str, message: str) -> None:
        """A skipped input: a warning on stderr (unless quiet), recorded; the exit code stays."""
        if not self.quiet:
            click.echo(f"zipmodel: warning: {message}", err=True)
        self.warnings.append({"path": path, "message": message})

    def document(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "version": JSON_VERSION,
            "ok": not self.errors,
            "exit_code": self.code,
            "results": self.results,
            "errors": self.errors,
            "warnings": self.warnings,
        }

    def finish(self) -> int:
        """Print the JSON envelope under --json; the exit code (the highest of the inputs')."""
        if self.json_mode:
            emit_json(self.document())
        return self.code

    @contextmanager
    def progress(self, description: str) -> Iterator:
        """A callable ``update(done, total, description=None)`` driving a progress bar (a
        no-op when hidden); a description given replaces the bar's label."""
        if not self.show_progress:
            yield None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=None)

            def update(done, total, description: str | None = None) -> None:
                label = {} if description is None else {"description": description}
                bar.update(task, completed=done, total=total, **label)

            yield update


def emit_json(doc: dict[str, Any]) -> None:
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def codec_mix(codecs: dict[str, int]) -> str:
    total = sum(codecs.values())
    if not total:
        return "-"
    parts = sorted(codecs.items(), key=lambda kv: -kv[1])
    return " ".join(f"{k} {100 * v / total:.0f}%" for k, v in parts)


def dtype_table(summary, *, title: str | None = None, seconds: dict[str, float] | None = None):
    """The per-dtype table shared by compress and info."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("dtype")
    t.add_column("tensors", justify="right")
    t.add_column("original", justify="right")
    t.add_column("compressed", justify="right")
    t.add_column("ratio", justify="right")
    if seconds is not None:
        t.add_column("MB/s/thread", justify="right")
    t.add_column("codecs (by stream bytes)")
    for r in summary.dtypes:
        row = [
            r.dtype,
            str(r.tensors) if r.dtype != "verbatim" else "-",
            human_bytes(r.original_bytes),
            human_bytes(r.compressed_bytes),
            f"{100 * r.ratio:.2f}%",
        ]
        if seconds is not None:
            s = seconds.get(r.dtype, 0.0)
            row.append(f"{r.original_bytes / 1e6 / s:.0f}" if s > 0 else "-")
        row.append(codec_mix(r.codecs))
        t.add_row(*row)
    total = [
        "total",
        str(sum(r.tensors for r in summary.dtypes)),
        human_bytes(summary.original_bytes),
        human_bytes(summary.container_bytes),
        f"{100 * summary.ratio:.2f}%",
    ]
    if seconds is not None:
        total.append("")
    total.append(f"index+headers {human_bytes(summary.overhead_bytes)}")
    t.add_row(*total, style="bold")
    return t


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def quality_table(summary, *, title: str | None = "lossy tensors: measured error"):
    """Per staged tensor: stage, stored bits per weight, relative RMS / max abs error, SNR;
    and the exact total over them (shared by compress and info)."""
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for col, just in [
        ("tensor", "left"),
        ("stage", "left"),
        ("shape", "left"),
        ("bits/weight", "right"),
        ("rel RMS", "right"),
        ("max abs", "right"),
        ("SNR dB", "right"),
    ]:
        t.add_column(col, justify=just)
    for r in summary.tensors:
        if not r.lossy:
            continue
        q = r.quality or {}
        t.add_row(
            r.name,
            r.stage,
            "×".join(map(str, r.shape)) or "scalar",
            f"{r.bits_per_weight:.2f}",
            _fmt(q.get("rel_rms"), ".2e"),
            _fmt(q.get("max_abs"), ".2e"),
            _fmt(q.get("snr_db"), ".1f"),
        )
    tot = summary.quality_total()
    if tot is not None:
        kept = len(summary.tensors) - tot["tensors"]
        t.add_row(
            f"total: {tot['tensors']} tensors ({kept} kept exact)",
            "",
            f"{tot['elements']:,} weights",
            f"{tot['bits_per_weight']:.2f}",
            _fmt(tot.get("rel_rms"), ".2e"),
            _fmt(tot.get("max_abs"), ".2e"),
            _fmt(tot.get("snr_db"), ".1f"),
            style="bold",
        )
    return t
