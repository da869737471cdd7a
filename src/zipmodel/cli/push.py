"""``zipmodel push``."""

from __future__ import annotations

import sys

import click

from ._options import (
    folder_options,
    level_option,
    lossy_from_params,
    lossy_options,
    output_options,
    threads_option,
)
from ._output import Output, human_bytes


def hub_options(f):
    """--revision and --token, shared by push and pull."""
    f = click.option(
        "--token",
        envvar=None,
        help="Hugging Face token. Default: HF_TOKEN, else the one saved by `hf auth login`.",
    )(f)
    f = click.option(
        "--revision",
        help="Branch (push: created from main when missing), tag or commit (pull). Default: main.",
    )(f)
    return f


def quiet_hub(out: Output) -> None:
    """huggingface_hub's own progress bars follow ours: only on a terminal, never under -q/--json/CI."""
    if not out.show_progress:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@click.command()
@click.argument("repo_id")
@click.argument("path", type=click.Path(exists=True))
@hub_options
@click.option("--private", is_flag=True, help="Create the repository private (when it is new).")
@click.option(
    "-m", "--commit-message", help="Commit message. Default: names the input and zipmodel."
)
@threads_option
@level_option("Compression level, as for compress.")
@folder_options
@lossy_options
@output_options
def push(
    repo_id,
    path,
    revision,
    token,
    private,
    commit_message,
    threads,
    level,
    min_size,
    follow_symlinks,
    quiet,
    json_mode,
    no_progress,
    **lossy_params,
):
    """Compress a model folder (or file) and upload it to the Hugging Face Hub repo REPO_ID.

    Weight files go up as NAME.zm, small files (config, tokenizer) as they are, with
    zipmodel.json (every original file's size and SHA-256) and a model card saying how to
    restore: pip install zipmodel && zipmodel pull REPO_ID. The repository is created when
    missing (private with --private); files already in it are kept. A folder that is already
    compressed (PATH.zm/ from zipmodel compress) is uploaded as it is. Nothing is written next
    to PATH: the compressed folder is staged in $TMPDIR.

    --lossy PRESET (and --keep/--only, docs/lossy.md) quantizes the weights first: the model
    card says so, and a pull gives back the dequantized weights, not the original bytes.
    """
    from .. import hub

    lossy = lossy_from_params(lossy_params)
    out = Output("push", quiet=quiet, json_mode=json_mode, progress=not no_progress)
    try:
        quiet_hub(out)
        with out.progress(f"compress {path}") as advance:
            res = hub.push(
                repo_id,
                path,
                revision=revision,
                private=private or None,
                token=token,
                commit_message=commit_message,
                level=level,
                threads=threads,
                min_size=min_size,
                follow_symlinks=follow_symlinks,
                progress=advance,
                lossy=lossy,
            )
    except Exception as exc:
        out.error(path, exc)
        sys.exit(out.finish())
    f = res.folder
    out.line(
        f"{path} -> {res.repo_id}@{res.revision}  {len(f.files)} files ({f.compressed_files} "
        f"compressed)  {human_bytes(f.original_bytes)} -> {human_bytes(res.uploaded_bytes)} "
        f"uploaded  ({100 * res.uploaded_bytes / max(f.original_bytes, 1):.2f}%)"
        + ("  lossy" if res.lossy else "")
    )
    out.line(f"  commit {res.commit_url}")
    rev = f" --revision {res.revision}" if res.revision != "main" else ""
    out.line(f"  restore with: zipmodel pull {res.repo_id}{rev}")
    out.result("repo", path, res.to_json())
    sys.exit(out.finish())
