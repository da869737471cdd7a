"""``zipmodel pull``."""

from __future__ import annotations

import sys

import click

from ._options import output_options, threads_option
from ._output import Output, human_bytes
from .push import hub_options, quiet_hub


@click.command()
@click.argument("repo_id")
@hub_options
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False),
    help="Restore into this folder. Default: $ZIPMODEL_HUB_CACHE (~/.cache/zipmodel/hub) "
    "/models--ORG--NAME/COMMIT.",
)
@click.option(
    "-f",
    "--force",
    is_flag=True,
    help="Replace an -o folder that does not hold this revision.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Hugging Face cache for the compressed files. Default: HF_HUB_CACHE (~/.cache/huggingface/hub).",
)
@threads_option
@output_options
def pull(
    repo_id, revision, token, output, force, cache_dir, threads, quiet, json_mode, no_progress
):
    """Download a model pushed with zipmodel push and restore the original folder.

    The compressed files come through huggingface_hub into the Hugging Face cache (HF_TOKEN,
    HF_ENDPOINT and HF_HUB_OFFLINE apply as usual); every restored file is checked against the
    SHA-256 in zipmodel.json. The restored folder is built under a temporary name and renamed
    into place when complete, so an interrupted pull leaves nothing that looks like a model.
    Pulling a revision that is already restored downloads and decodes nothing.

    Prints the restored folder's path on stdout (from_pretrained loads it as it is):
    MODEL=$(zipmodel pull org/name)
    """
    from .. import hub

    out = Output("pull", quiet=quiet, json_mode=json_mode, progress=not no_progress)
    try:
        quiet_hub(out)
        with out.progress(f"restore {repo_id}") as advance:
            res = hub.pull(
                repo_id,
                revision=revision,
                local_dir=output,
                token=token,
                cache_dir=cache_dir,
                force=force,
                threads=threads,
                progress=advance,
            )
    except Exception as exc:
        out.error(repo_id, exc)
        sys.exit(out.finish())
    f = res.folder
    if res.reused:
        out.line(f"{repo_id}@{res.commit[:12]}: already restored, nothing downloaded")
    else:
        out.line(
            f"{repo_id}@{res.commit[:12]} -> {res.path}/  {len(f.files)} files, "
            f"{human_bytes(res.downloaded_bytes)} downloaded in {res.download_seconds:.1f} s, "
            f"{human_bytes(f.original_bytes)} restored in {res.restore_seconds:.1f} s  SHA-256 ok"
        )
    d = res.to_json()
    d["output"] = d.pop("path")  # the restored folder; ``path`` names the input (REPO_ID)
    out.result("repo", repo_id, d)
    if not json_mode and not quiet:
        click.echo(str(res.path))
    sys.exit(out.finish())
