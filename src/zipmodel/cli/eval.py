"""``zipmodel eval``."""

from __future__ import annotations

import sys

import click

from ._output import Output


@click.command("eval")
@click.argument("original", type=click.Path(exists=True, file_okay=False))
@click.argument("compressed", type=click.Path(exists=True))
@click.option(
    "--sentences",
    type=click.Path(exists=True, dir_okay=False),
    help="Evaluate on these sentences (one per line) instead of the bundled set of 125.",
)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--json", "json_mode", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
def eval_cmd(original, compressed, sentences, batch_size, json_mode, quiet):
    """Compare a sentence-embedding model with its compressed copy: cosine of the embeddings.

    ORIGINAL is a transformers model folder (config.json, tokenizer, weights), e.g.
    all-MiniLM-L6-v2. COMPRESSED is the folder `zipmodel compress ORIGINAL` made, or one .zm
    file standing for one of ORIGINAL's weight files. Both models embed the same sentences
    (mean pooling over the tokens); the mean and the minimum cosine similarity per sentence are
    reported: 1.0 for a lossless copy, a little less after --lossy.

    Needs torch and transformers: pip install 'zipmodel[eval]'.
    """
    from .. import evaluate

    out = Output("eval", quiet=quiet, json_mode=json_mode)
    try:
        sents = evaluate.load_sentences(sentences) if sentences else None
        rep = evaluate.embedding_agreement(
            original, compressed, sentences=sents, batch_size=batch_size
        )
    except Exception as exc:  # one message and exit code 1, as in every command
        out.error(compressed, exc)
        sys.exit(out.finish())
    d = rep.to_json()
    d.pop("schema", None)  # the envelope says what the document is
    out.result("eval", compressed, d)
    if json_mode:
        sys.exit(out.finish())
    from rich.table import Table

    t = Table(title=f"{compressed} vs {original}", title_justify="left", header_style="bold")
    t.add_column("sentences", justify="right")
    t.add_column("dim", justify="right")
    t.add_column("mean cosine", justify="right")
    t.add_column("min cosine", justify="right")
    t.add_column("least similar sentence")
    worst = rep.sentences[rep.worst]
    t.add_row(
        str(len(rep.sentences)),
        str(rep.dim),
        f"{rep.mean_cosine:.6f}",
        f"{rep.min_cosine:.6f}",
        worst if len(worst) <= 60 else worst[:57] + "...",
    )
    out.table(t)
    out.line(f"decoded from {compressed}: {', '.join(rep.replaced)}  ({rep.seconds:.1f} s)")
    sys.exit(out.finish())
