"""Regenerate docs/cli.md from the commands' --help (tests/test_docs.py checks it is current).

python scripts/gen_cli_docs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAD = """# Command line

`zipmodel` follows zstd's conventions: `X` → `X.zm` and back, inputs kept unless `--rm`,
existing outputs refused unless `-f`, `-c` for standard output, `-T` threads (0 = all cores),
`-q` quiet. Human output (summary lines, tables, progress bars) goes to **stderr**, progress bars
only on a terminal and never when `CI` is set; `NO_COLOR` is respected. With `--json` a command
prints one JSON document on **stdout**.

## Exit codes

| code | meaning |
|---|---|
| 0 | success |
| 1 | error: unreadable or damaged input, existing output without `-f`, I/O failure; for `push`/`pull` also a Hub error (missing repository or revision, refused token, no network), with a hint naming the next command |
| 2 | usage error (bad option or argument) |
| 3 | verification mismatch: `verify` (or `decompress --check`) found that a container does not reproduce its source, or a file `pull` downloaded does not match the SHA-256 in `zipmodel.json` |
| 130 | interrupted (Ctrl-C); no partial output is left |

With several inputs, a command goes on after a failed one and exits with the highest code.

## JSON output (schema version 1)

- `compress --json`: `{"schema": "zipmodel.compress/1", "files": [...], "errors": [{"input", "error"}]}`;
  each file: `input`, `output`, `input_bytes`, `output_bytes`, `ratio` (output/input), `seconds`,
  `mb_per_s`, `summary` (as in `info`, without the tensor list), and `note` when the input was
  not parsed as its apparent format.
- `decompress --json`: `{"schema": "zipmodel.decompress/1", "files": [{"input", "output",
  "input_bytes", "output_bytes", "seconds", "mb_per_s", "sha256_checked"}], "errors": [...]}`.
- `info --json`: `{"schema": "zipmodel.info/1", "files": [{"path", "writer", "source": {"name",
  "format", "bytes", "sha256"}, "container_bytes", "overhead_bytes", "ratio", "options",
  "dtypes": [{"dtype", "tensors", "original_bytes", "compressed_bytes", "codecs", "ratio"}],
  "tensors": [{"name", "dtype", "shape", "original_bytes", "compressed_bytes", "codecs",
  "transform", "ratio"}]}]}`. `codecs` maps a codec name to the stream bytes it coded.
- `verify --json`: `{"schema": "zipmodel.verify/1", "results": [{"path", "ok", "source_bytes",
  "sha256", "against", "seconds"} or {"path", "ok": false, "error", "exit_code"}]}`.
- Lossy containers ([lossy.md](lossy.md)): `compress`, `decompress`, `verify` results and `info`
  summaries carry `"lossy"` (true/false). When true: `compress` and `info` hold `"quality"`, the
  exact total over the quantized tensors (`rel_rms`, `max_abs`, `snr_db` (null when infinite),
  `bits` before coding, `bits_per_weight` after, `tensors`, `elements`, `original_bytes`,
  `compressed_bytes`, and the sums `sq_err`, `sq_ref`, `count`, `nonfinite`, `stored_bits`), the
  tensor list (also in `compress`), and each quantized tensor has `stage`, `lossy`, `quality` (the
  same keys for that tensor) and `bits_per_weight`; `verify` gives the original's `sha256` as
  recorded and `restored_sha256` of the bytes decompress writes. A folder's `compress`/`info`
  result has `lossy`, `quality` over all its files, and (`info`) `lossy_files`.

Folders (`compress DIR`, `decompress DIR.zm`, `info DIR.zm`, `verify DIR.zm`; see
[folders.md](folders.md)):

- `compress --json` and `decompress --json` also hold `"folders": [...]`, each `{"input", "output",
  "files", "compressed_files", "copied_files", "original_bytes", "stored_bytes", "ratio"
  (stored/original), "seconds", "mb_per_s"}` (MB/s of original bytes).
- `info --json` also holds `"folders": [...]`, each as above without `input`, `output`, `seconds`,
  `mb_per_s`, plus `path`, `writer`, `entries` (the manifest's file entries) and `dtypes` (merged
  over the folder's `.zm` files, as in `info` for one file).
- `verify --json`: a folder's result is `{"path", "ok", "files", "source_bytes", "against",
  "seconds"}`.

- `eval --json`: `{"schema": "zipmodel.eval/1", "original", "compressed", "replaced" (weight
  files taken from the compressed side), "sentences" (count), "embedding_dim", "mean_cosine",
  "min_cosine", "worst_sentence", "cosines" (one per sentence), "seconds"}`.

The Hub ([hub.md](hub.md)); each prints one document, also on failure:

- `push --json`: `{"schema": "zipmodel.push/1", "ok": true, "repo_id", "revision", "commit",
  "commit_url", "files", "compressed_files", "original_bytes", "stored_bytes" (the compressed
  folder), "uploaded_files", "uploaded_bytes" (what went up, model card and manifest included),
  "ratio" (uploaded/original), "seconds"}`.
- `pull --json`: `{"schema": "zipmodel.pull/1", "ok": true, "repo_id", "revision", "commit",
  "path" (the restored folder), "snapshot" (the compressed files in the Hugging Face cache),
  "reused" (the folder was already restored: nothing downloaded or decoded), "files",
  "compressed_files", "original_bytes", "stored_bytes", "downloaded_bytes" (stored bytes that
  were not in the cache), "download_seconds", "restore_seconds", "seconds"}`. Without `--json`,
  `pull` prints only the restored folder's path on stdout.
- On failure: `{"schema", "ok": false, "error", "hint", "exit_code"}`, and the command exits
  with `exit_code`.

Fields may be added within a schema version; none are removed or change meaning.

## Commands
"""


def render() -> str:
    from click.testing import CliRunner

    from zipmodel.cli import cli

    parts = [HEAD]
    for name in sorted(cli.commands):
        out = CliRunner().invoke(cli, [name, "--help"], terminal_width=100).output
        parts.append(f"\n### `zipmodel {name}`\n\n```\n{out.rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    (ROOT / "docs" / "cli.md").write_text(render())
    print("wrote docs/cli.md")
