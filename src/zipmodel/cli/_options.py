"""Option sets shared by several commands (decorator factories), and the valid range of every
option value: a value outside it is a usage error (exit 2) naming the option and the range,
before any work starts."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..options import (
    DEFAULT_GROUP_SIZE,
    GROUP_SIZES,
    NO_LOSSY,
    PRESETS,
    TARGET_BITS,
    TUNING,
    LossyOptions,
)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


# The pipeline's limits (zipmodel.pipeline.plan.MIN_CHUNK_SIZE, container.format.MAX_CHUNK_RAW;
# tests/test_cli_hardening.py keeps them equal). Spelled out so building the CLI stays light.
CHUNK_SIZE_RANGE = (4 << 10, 64 << 20)
# -T: 0 means every core; more threads than this is a typo, not a machine.
THREADS_MAX = 1024


def human_size(n: int) -> str:
    """``4096`` → ``4K``, ``67108864`` → ``64M`` (the spelling ByteSize reads back)."""
    for unit, mult in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


class ByteSize(click.ParamType):
    """``1M``, ``256K``, ``4MiB`` or a plain number of bytes (K/M/G are powers of 1024),
    optionally within ``[min, max]``."""

    name = "SIZE"

    def __init__(self, min: int = 0, max: int | None = None):
        self.min, self.max = min, max

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            n = value
        else:
            m = _SIZE.match(str(value))
            if not m:
                self.fail(f"{value!r} is not a size like 1M, 256K or 1048576", param, ctx)
            mult = 1024 ** "bkmgt".index((m.group(2) or "b").lower())
            n = int(float(m.group(1)) * mult)
        if n < self.min or (self.max is not None and n > self.max):
            self.fail(f"{value} is outside {self.range_text()}", param, ctx)
        return n

    def range_text(self) -> str:
        if self.max is None:
            return f"{human_size(self.min)} and up"
        return f"{human_size(self.min)}..{human_size(self.max)} ({self.min}..{self.max} bytes)"


def threads_option(f):
    return click.option(
        "-T",
        "--threads",
        type=click.IntRange(0, THREADS_MAX),
        default=0,
        show_default=True,
        help="Worker threads; 0 uses every core. The output does not depend on it.",
    )(f)


LEVEL_HELP = "fast: quickest coding; default: size and speed balanced; max: smallest file, slower."


def level_option(help: str = LEVEL_HELP):
    """--level fast|default|max (default: default). No short form: -l lists, as in zstd."""
    return click.option(
        "--level",
        type=click.Choice(["fast", "default", "max"]),
        default="default",
        show_default=True,
        help=help,
    )


def output_options(f):
    """-q, --json and --no-progress."""
    f = click.option("--no-progress", is_flag=True, help="Never show a progress bar.")(f)
    f = click.option(
        "--json",
        "json_mode",
        is_flag=True,
        help="Print one JSON document with the results on stdout (schema in docs/cli.md).",
    )(f)
    f = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")(f)
    return f


def write_options(f):
    """-o, -c, -f, --rm, -k."""
    f = click.option(
        "-k",
        "--keep-input",
        is_flag=True,
        help="Keep the inputs (the default; accepted for zstd habits).",
    )(f)
    f = click.option(
        "--rm",
        "remove",
        is_flag=True,
        help="Delete each input once its output has been written and verified.",
    )(f)
    f = click.option(
        "-f",
        "--force",
        is_flag=True,
        help="Overwrite existing outputs (and write binary data to a terminal).",
    )(f)
    f = click.option(
        "-c",
        "--stdout",
        "to_stdout",
        is_flag=True,
        help="Write the output to standard output (one input only).",
    )(f)
    f = click.option(
        "-o",
        "--output",
        type=click.Path(allow_dash=True),
        help="Output file (one input only); an existing directory: the output goes in it, under "
        "its usual name. For a folder input: the output folder. Default: next to the input.",
    )(f)
    return f


def chunk_size_option(f):
    lo, hi = CHUNK_SIZE_RANGE
    return click.option(
        "--chunk-size",
        type=ByteSize(lo, hi),
        default="1M",
        show_default=True,
        help="Source bytes per independently decodable chunk "
        f"({human_size(lo)}..{human_size(hi)}). Smaller adapts better, larger decodes faster.",
    )(f)


def check_write_options(paths, output, to_stdout, remove, keep_input, json_mode) -> None:
    """The combinations of -o, -c, --rm, -k and --json that mean nothing (compress, decompress)."""
    if (output or to_stdout) and len(paths) > 1:
        raise click.UsageError("-o/--output and -c/--stdout take a single input")
    if to_stdout and output:
        raise click.UsageError("-o/--output and -c/--stdout exclude each other")
    if to_stdout and remove:
        raise click.UsageError("--rm cannot be used with -c/--stdout")
    if keep_input and remove:
        raise click.UsageError("-k/--keep-input and --rm exclude each other")
    if json_mode and (to_stdout or ("-" in paths and not output)):
        # stdout carries the data: a JSON document after it would corrupt the output
        raise click.UsageError(
            "--json prints on standard output, which the data uses here (-c, or - without -o): "
            "drop --json, or name the output with -o"
        )


def folder_options(f):
    """``--min-size`` and ``--follow-symlinks``: how a model folder is compressed (compress,
    push)."""
    f = click.option(
        "--follow-symlinks",
        is_flag=True,
        help="In folders: store the targets of symlinks that point outside the folder (a Hugging "
        "Face cache snapshot) instead of failing.",
    )(f)
    return click.option(
        "--min-size",
        type=ByteSize(),
        default="1M",
        show_default=True,
        help="In folders: other files than weights (.safetensors, .bin, .pt, .pth, .gguf, ...) are "
        "compressed from this size up; smaller ones are stored as they are.",
    )(f)


# The --lossy presets and ranges come from zipmodel.stages.options (light: no numpy).
LOSSY_PRESETS = PRESETS
# The click parameters that make one LossyOptions (``--lossy`` is its ``preset``).
LOSSY_PARAMS = (
    "lossy",
    "mantissa_bits",
    "group_size",
    "per_tensor",
    "asymmetric",
    "keep",
    "only",
    "target_bits",
    "target_size",
)


def lossy_options(f):
    """--lossy, --mantissa-bits, --group-size, --per-tensor, --asymmetric, --keep, --only,
    --target-bits, --target-size."""
    f = click.option(
        "--target-size",
        type=ByteSize(),
        metavar="SIZE",
        help="Lossy: the whole .zm at about SIZE bytes (4G, 500M, ...): ECSQ steps chosen per "
        "tensor for the least total squared error (docs/lossy.md).",
    )(f)
    f = click.option(
        "--target-bits",
        type=click.FloatRange(*TARGET_BITS),
        metavar="B",
        help="Lossy: B bits per weight on disk over the tensors it may quantize, after "
        "entropy coding: ECSQ steps chosen per tensor for the least total squared error.",
    )(f)
    f = click.option(
        "--only",
        multiple=True,
        metavar="GLOB",
        help="With a lossy stage: only tensors whose name matches (repeatable); the default "
        "exclusions still apply.",
    )(f)
    f = click.option(
        "--keep",
        multiple=True,
        metavar="GLOB",
        help="With a lossy stage: keep tensors whose name matches exact (repeatable).",
    )(f)
    f = click.option(
        "--asymmetric", is_flag=True, help="int4: asymmetric groups (a zero point per group)."
    )(f)
    f = click.option(
        "--per-tensor", is_flag=True, help="fp8: one scale per tensor instead of per row."
    )(f)
    f = click.option(
        "--group-size",
        type=click.IntRange(*GROUP_SIZES),
        default=DEFAULT_GROUP_SIZE,
        show_default=True,
        help="int4/nf4: elements per group sharing one scale.",
    )(f)
    f = click.option(
        "--mantissa-bits",
        type=click.IntRange(0, 22),
        help="Round float mantissas to N bits (alone, or with --lossy bf16).",
    )(f)
    f = click.option(
        "--lossy",
        type=click.Choice(LOSSY_PRESETS),
        help="Quantize float weights (lossy, opt-in): bf16 (from FP32), fp8 (E4M3), int8 "
        "(per row), int4/nf4 (per group), or ggml's blocks q3_k, iq4_xs, q4_k, q5_k, q6_k, "
        "q8_0 (as llama.cpp stores them: export --to gguf writes them as they are). Norms, "
        "biases, 1-D and small tensors stay exact; the error is measured and reported "
        "(docs/lossy.md).",
    )(f)
    return f


def lossy_from_params(params: dict[str, Any]) -> LossyOptions:
    """Take the lossy options out of a command's click ``params`` and make them one checked
    :class:`LossyOptions` (a combination that means nothing is a usage error)."""
    kw = {name: params.pop(name) for name in LOSSY_PARAMS}
    preset = kw.pop("lossy")
    tuned = any(kw[n] != getattr(NO_LOSSY, n) for n in TUNING)
    targeted = kw["target_bits"] is not None or kw["target_size"] is not None
    if preset is None and kw["mantissa_bits"] is None and tuned and not targeted:
        raise click.UsageError(
            "--group-size, --per-tensor, --asymmetric, --keep and --only apply to a lossy "
            "stage: add --lossy PRESET (or --mantissa-bits N)"
        )
    try:
        return LossyOptions(preset=preset, **kw)
    except ValueError as e:
        raise click.UsageError(f"invalid lossy options: {e}") from None


def lossy_kwargs(*values: Any) -> dict[str, Any]:
    """Deprecated: the API keywords of the lossy click values (in :data:`LOSSY_PARAMS`
    order), checked; ``{}`` when nothing lossy is asked for. Use :func:`lossy_from_params`."""
    return lossy_from_params(dict(zip(LOSSY_PARAMS, values, strict=True))).to_kwargs()


def check_rules(rules: Sequence[tuple[Callable[[dict[str, Any]], Any], str]], **opts) -> None:
    """Raise the usage error of the first rule whose condition holds for ``opts`` (a
    command's option rules, written as data: ``(condition, message)`` pairs)."""
    for holds, message in rules:
        if holds(opts):
            raise click.UsageError(message)


def verbose_option(help: str):
    """-v/--verbose (zstd's)."""
    return click.option("-v", "--verbose", is_flag=True, help=help)


def base_option(help: str):
    """--base BASE: the base model of a fine-tune (file, .zm or folder; docs/delta.md)."""

    def deco(f):
        return click.option("--base", type=click.Path(exists=True), metavar="BASE", help=help)(f)

    return deco
