"""``zipmodel demo``: the whole round trip on the bundled sample checkpoint."""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import click

from ._options import level_option, threads_option
from ._output import Output, dtype_table, human_bytes

SAMPLE = "sample.safetensors"


def sample_path() -> Path:
    """The bundled sample: a small transformer LM trained by scripts/train_sample.py."""
    from importlib.resources import files

    return Path(str(files("zipmodel").joinpath("data", SAMPLE)))


@click.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False),
    help="Keep the files here (default: a temporary folder, removed afterwards).",
)
@level_option("Compression level to demonstrate.")
@threads_option
def demo(workdir, level, threads):
    """Compress, inspect, decompress and verify the bundled sample checkpoint.

    The sample is a small transformer language model trained by this project
    (scripts/train_sample.py), stored as BF16 with F32 norms, like most published checkpoints.
    """
    from .. import api

    out = Output()
    tmp = None
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="zipmodel-demo-")
        workdir = tmp
    try:
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        src = wd / SAMPLE
        shutil.copyfile(sample_path(), src)
        out.line(f"$ zipmodel compress {src}")
        rep = api.compress_file(src, level=level, threads=threads, force=True)
        out.line(
            f"{src.name} -> {Path(rep.output).name}  {human_bytes(rep.input_bytes)} -> "
            f"{human_bytes(rep.output_bytes)}  ({100 * rep.ratio:.2f}%)"
        )
        out.table(dtype_table(rep.summary))
        restored = wd / "restored.safetensors"
        out.line(f"$ zipmodel decompress {rep.output} -o {restored}")
        api.decompress_file(rep.output, restored, threads=threads, force=True)
        a = hashlib.sha256(src.read_bytes()).hexdigest()
        b = hashlib.sha256(restored.read_bytes()).hexdigest()
        out.line(f"sha256 original {a}\nsha256 restored {b}")
        if a != b:
            out.line("MISMATCH")
            sys.exit(3)
        with api.open(rep.output) as f:
            name = f.keys()[0]
            t = f.get_tensor(name)
            out.line(
                f"zipmodel.open(...).get_tensor({name!r}) -> {t.dtype} {list(t.shape)} (read {f.bytes_read} bytes)"
            )
        out.line("round trip is byte-identical" + (f"; files kept in {wd}" if tmp is None else ""))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
