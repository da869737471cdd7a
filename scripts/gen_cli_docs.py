"""Regenerate docs/cli.md from the commands' --help (tests/test_docs.py checks it is current).

python scripts/gen_cli_docs.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAD = """# Command line

`zipmodel` follows zstd's conventions, with the differences listed below: `X` → `X.zm` and
back, inputs kept unless `--rm` (`-k` is accepted and changes nothing), existing outputs
refused unless `-f`, `-c` for standard output, `-` (or no file, when standard input is a pipe)
for standard input, `-T` threads (0 = all cores), `-q` quiet, `-v` verbose (compress), and
the operation flags `-z`, `-d`, `-t`, `-l` in place of a command name: `zipmodel -d x.zm` is
`zipmodel decompress x.zm`, `zipmodel -dc x.zm > x` writes `x` to standard output, `zipmodel
-t x.zm` verifies and `zipmodel -l x.zm` lists (`--level` has no short form: `-l` lists, as
in zstd).

Output: diagnostics (summary lines, warnings, errors, progress bars) go to **stderr**, progress
bars only on a terminal and never when `CI` is set; `NO_COLOR` is respected. The listings of
`info` and `verify` are the commands' answers and go to **stdout** (as `zstd -l`), so
`zipmodel info x.zm | grep BF16` works. With `--json` a command prints one JSON document on
**stdout** (below) and nothing else there; `--json` together with data on stdout (`-c`, or
`-` without `-o`) is a usage error (exit 2) rather than a document appended to the data.

Where zipmodel differs from zstd:

- A command name (or one of `-z`/`-d`/`-t`/`-l`) is required: `zipmodel FILE` does not
  compress.
- An input already ending in `.zm` is skipped with a warning (`x.zm: already has .zm suffix --
  ignored`) and the exit code stays 0, as gzip does; zstd compresses `x.zst` again into
  `x.zst.zst`. `-f`, `-o` or `-c` compress it anyway.
- `-o DIR` where `DIR` is an existing directory puts a file's output inside it under its usual
  name (as `cp FILE DIR`; zstd would refuse or overwrite). For a folder input `-o` names the
  output folder itself.
- `info -` and `verify -` read a container from standard input (copied to a temporary file in
  `$TMPDIR` first); zstd refuses `-l` on standard input. Messages name standard input
  `<stdin>`, never the temporary file.
- `-r` is accepted, but a folder is always compressed as a whole into `DIR.zm/`; there is no
  `--output-dir-flat`.
- A signal (SIGINT, SIGTERM, SIGHUP) removes the temporary output and exits 128 + the signal
  number, saying so on stderr; a second signal during that cleanup ends the process at once.

## Exit codes

| code | meaning |
|---|---|
| 0 | success (also when an input was skipped with a warning) |
| 1 | error: unreadable or damaged input, existing output without `-f`, I/O failure; for `push`/`pull` also a Hub error (missing repository or revision, refused token, no network), with a hint naming the next command |
| 2 | usage error: a bad option, argument or option value (the message names the option and its allowed range) or a combination that means nothing |
| 3 | verification mismatch: `verify` (or `decompress --check`) found that a container does not reproduce its source, or a file `pull` downloaded does not match the SHA-256 in `zipmodel.json` |
| 130 | interrupted (Ctrl-C, SIGINT); no partial output is left |
| 143, 129 | terminated by SIGTERM, SIGHUP (128 + the signal number); no partial output is left |

With several inputs, a command goes on after a failed one and exits with the highest code.

## JSON output (schema version 2)

Every command's `--json` prints one document, the same envelope for all of them, also when
inputs failed (a usage error, exit 2, prints none):

- `command`: the command that ran; `version`: 2; `ok`: no input failed; `exit_code`: the
  command's exit code.
- `results`: one object per input that succeeded, in the order given. Each has `kind` (`file`,
  `folder`, `repo` for push and pull, `eval`) and `path`: the input as given (`-` for standard
  input, the repo id for `pull`). Where the command wrote something, `output` names it.
- `errors`: one object per input that failed: `path`, `message` (as printed on stderr), `hint`
  (the next thing to try, or `""`), `exit_code`.
- `warnings`: inputs skipped on purpose (`compress x.zm`): `path`, `message`.

The result objects per command:

- `compress`, a file: `output`, `input_bytes`, `output_bytes`, `ratio` (output/input),
  `seconds`, `mb_per_s`, `lossy`, `summary` (as `info`'s result, without the tensor list
  unless lossy), and `note` when the input was not parsed as its apparent format.
- `decompress`, a file: `output`, `input_bytes`, `output_bytes`, `seconds`, `mb_per_s`,
  `sha256_checked`, `lossy`.
- `compress`/`decompress`, a folder ([folders.md](folders.md)): `output`, `files`,
  `compressed_files`, `copied_files`, `original_bytes`, `stored_bytes`, `ratio`
  (stored/original), `seconds`, `mb_per_s` (MB/s of original bytes).
- `info`, a file: `writer`, `source` (`name`, `format`, `bytes`, `sha256`), `container_bytes`,
  `overhead_bytes`, `ratio`, `options`, `lossy`, `dtypes` (each `dtype`, `tensors`,
  `original_bytes`, `compressed_bytes`, `codecs`, `ratio`) and, unless `--no-tensors`,
  `tensors` (each `name`, `dtype`, `shape`, `original_bytes`, `compressed_bytes`, `codecs`,
  `transform`, `ratio`). `codecs` maps a codec name to the stream bytes it coded; `base` when
  stored against a base model ([delta.md](delta.md)).
- `info`, a folder: `writer`, `files`, `compressed_files`, `copied_files`, `original_bytes`,
  `stored_bytes`, `ratio`, `entries` (the manifest's file entries), `dtypes` (merged over the
  folder's `.zm` files), `lossy`.
- `verify`, a file: `ok` (true), `lossy`, `source_bytes`, `sha256`, `against`, `seconds`;
  a folder: `ok`, `files`, `source_bytes`, `against`, `seconds`.
- `push`: `repo_id`, `revision`, `commit`, `commit_url`, `files`, `compressed_files`,
  `original_bytes`, `stored_bytes` (the compressed folder), `uploaded_files`, `uploaded_bytes`
  (what went up, model card and manifest included), `ratio` (uploaded/original), `lossy`,
  `seconds`; `path` is the local folder or file.
- `pull`: `output` (the restored folder), `repo_id`, `revision`, `commit`, `snapshot` (the
  compressed files in the Hugging Face cache), `reused` (the folder was already restored:
  nothing downloaded or decoded), `files`, `compressed_files`, `original_bytes`,
  `stored_bytes`, `downloaded_bytes` (stored bytes that were not in the cache),
  `download_seconds`, `restore_seconds`, `seconds`. Without `--json`, `pull` prints only the
  restored folder's path on stdout.
- `eval`: `original`, `compressed`, `replaced` (weight files taken from the compressed side),
  `sentences` (count), `embedding_dim`, `mean_cosine`, `min_cosine`, `worst_sentence`,
  `cosines` (one per sentence), `seconds`; `path` is COMPRESSED.
- `batch` ([batch.md](batch.md)), one per source that has its output: `output`, `status`
  (`ok`; `duplicate`: the same content as `duplicate_of`, whose output it names; `skipped`:
  recorded by an earlier run and still valid), `source_bytes`, `output_bytes`, `ratio`,
  `seconds`, `worker`, `source_sha256`, `output_sha256` (as in `OUTDIR/batch.jsonl`).
- `export` ([export.md](export.md)): `output`, `format` (`gguf`), `tensors`, `types` (ggml
  type name -> tensors written in it), `metadata` (`source`: a GGUF source's key/value pairs
  kept; `minimal`: no `general.architecture`), `output_bytes`, `seconds`, `converted`
  (tensor -> `"U8 -> I16"` for dtypes GGUF lacks, widened exactly).
- Lossy containers ([lossy.md](lossy.md)): when `lossy` is true, `compress` and `info` hold
  `quality`, the exact total over the quantized tensors (`rel_rms`, `max_abs`, `snr_db` (null
  when infinite), `bits` before coding, `bits_per_weight` after, `tensors`, `elements`,
  `original_bytes`, `compressed_bytes`, and the sums `sq_err`, `sq_ref`, `count`, `nonfinite`,
  `stored_bits`), the tensor list (also in `compress`), and each quantized tensor has `stage`,
  `lossy`, `quality` (the same keys for that tensor), `bits_per_weight` and, when the stage
  says how it stored it (a ggml fallback type), `note`; `verify` gives the
  original's `sha256` as recorded and `restored_sha256` of the bytes decompress writes. A
  folder's `compress`/`info` result has `lossy`, `quality` over all its files, and (`info`)
  `lossy_files`.

Fields may be added within a schema version; none are removed or change meaning. Version 1
(zipmodel 0.1: `schema`, `files`, `folders`, per-command keys) is gone. The JSON Schema below
is normative; `tests/test_cli_hardening.py` checks every command's output against it.

<!-- json-schema -->
```json
SCHEMA_JSON
```

## Commands
"""


def _obj(kind: str, *required: str, **types) -> dict:
    """A result object of ``kind``: the keys it always has, and the types of some."""
    props = {"kind": {"const": kind}, "path": {"type": "string"}}
    props.update({k: {"type": v} if isinstance(v, (str, list)) else v for k, v in types.items()})
    return {"type": "object", "required": ["kind", "path", *required], "properties": props}


INT, NUM, STR, BOOL = "integer", "number", "string", "boolean"
FOLDER_TOTALS = dict(
    files=INT, compressed_files=INT, copied_files=INT, original_bytes=INT, stored_bytes=INT
)
SUMMARY = {
    "type": "object",
    "required": ["source", "container_bytes", "overhead_bytes", "ratio", "options", "dtypes",
                 "lossy"],
    "properties": {
        "source": {
            "type": "object",
            "required": ["name", "format", "bytes", "sha256"],
            "properties": {"bytes": {"type": INT}, "sha256": {"type": STR}},
        },
        "container_bytes": {"type": INT},
        "overhead_bytes": {"type": INT},
        "ratio": {"type": NUM},
        "lossy": {"type": BOOL},
        "dtypes": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["dtype", "tensors", "original_bytes", "compressed_bytes", "codecs",
                             "ratio"],
            },
        },
        "tensors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "dtype", "shape", "original_bytes", "compressed_bytes",
                             "codecs", "transform", "ratio"],
            },
        },
    },
}  # fmt: skip


def _results(*defs: str) -> dict:
    one = [{"$ref": f"#/$defs/{d}"} for d in defs]
    return {"type": "array", "items": one[0] if len(one) == 1 else {"oneOf": one}}


COMMANDS = {
    "compress": ("compress_file", "folder_written"),
    "decompress": ("decompress_file", "folder_written"),
    "info": ("info_file", "info_folder"),
    "verify": ("verify_file", "verify_folder"),
    "push": ("push",),
    "pull": ("pull",),
    "eval": ("eval",),
    "batch": ("batch",),
    "export": ("export",),
}

# The --json envelope of every command (version 2), as docs/cli.md prints it.
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "zipmodel --json document, version 2",
    "type": "object",
    "required": ["command", "version", "ok", "exit_code", "results", "errors", "warnings"],
    "properties": {
        "command": {"enum": list(COMMANDS)},
        "version": {"const": 2},
        "ok": {"type": BOOL},
        "exit_code": {"type": INT, "minimum": 0},
        "results": {"type": "array", "items": {"$ref": "#/$defs/result"}},
        "errors": {"type": "array", "items": {"$ref": "#/$defs/error"}},
        "warnings": {"type": "array", "items": {"$ref": "#/$defs/warning"}},
    },
    "oneOf": [
        {"properties": {"command": {"const": c}, "results": _results(*defs)}}
        for c, defs in COMMANDS.items()
    ],
    "$defs": {
        "result": {
            "type": "object",
            "required": ["kind", "path"],
            "properties": {
                "kind": {"enum": ["file", "folder", "repo", "eval"]},
                "path": {"type": STR},
            },
        },
        "error": {
            "type": "object",
            "required": ["path", "message", "hint", "exit_code"],
            "properties": {
                "path": {"type": STR},
                "message": {"type": STR},
                "hint": {"type": STR},
                "exit_code": {"type": INT, "minimum": 1},
            },
        },
        "warning": {
            "type": "object",
            "required": ["path", "message"],
            "properties": {"path": {"type": STR}, "message": {"type": STR}},
        },
        "summary": SUMMARY,
        "compress_file": _obj(
            "file",
            "output", "input_bytes", "output_bytes", "ratio", "seconds", "mb_per_s", "lossy",
            "summary",
            output=STR, input_bytes=INT, output_bytes=INT, ratio=NUM, seconds=NUM, mb_per_s=NUM,
            lossy=BOOL, summary={"$ref": "#/$defs/summary"},
        ),
        "decompress_file": _obj(
            "file",
            "output", "input_bytes", "output_bytes", "seconds", "mb_per_s", "sha256_checked",
            "lossy",
            output=STR, input_bytes=INT, output_bytes=INT, seconds=NUM, mb_per_s=NUM,
            sha256_checked=BOOL, lossy=BOOL,
        ),
        "folder_written": _obj(
            "folder",
            "output", *FOLDER_TOTALS, "ratio", "seconds", "mb_per_s",
            output=STR, ratio=NUM, seconds=NUM, mb_per_s=NUM, **FOLDER_TOTALS,
        ),
        "info_file": {
            "allOf": [
                {"$ref": "#/$defs/summary"},
                _obj("file", "writer", writer=STR),
            ]
        },
        "info_folder": _obj(
            "folder",
            "writer", *FOLDER_TOTALS, "ratio", "entries", "dtypes", "lossy",
            writer=STR, ratio=NUM, entries="array", dtypes="array", lossy=BOOL,
            **FOLDER_TOTALS,
        ),
        "verify_file": _obj(
            "file",
            "ok", "lossy", "source_bytes", "sha256", "against", "seconds",
            ok={"const": True}, lossy=BOOL, source_bytes=INT, sha256=STR,
            against=[STR, "null"], seconds=NUM,
        ),
        "verify_folder": _obj(
            "folder",
            "ok", "files", "source_bytes", "against", "seconds",
            ok={"const": True}, files=INT, source_bytes=INT, against=[STR, "null"],
            seconds=NUM,
        ),
        "push": _obj(
            "repo",
            "repo_id", "revision", "commit", "commit_url", "files", "compressed_files",
            "original_bytes", "stored_bytes", "uploaded_files", "uploaded_bytes", "ratio",
            "lossy", "seconds",
            repo_id=STR, revision=STR, commit=STR, commit_url=STR, files=INT,
            compressed_files=INT, original_bytes=INT, stored_bytes=INT, uploaded_files=INT,
            uploaded_bytes=INT, ratio=NUM, lossy=BOOL, seconds=NUM,
        ),
        "pull": _obj(
            "repo",
            "output", "repo_id", "revision", "commit", "snapshot", "reused", "files",
            "compressed_files", "original_bytes", "stored_bytes", "downloaded_bytes",
            "download_seconds", "restore_seconds", "seconds",
            output=STR, repo_id=STR, revision=STR, commit=STR, snapshot=STR, reused=BOOL,
            files=INT, compressed_files=INT, original_bytes=INT, stored_bytes=INT,
            downloaded_bytes=INT, download_seconds=NUM, restore_seconds=NUM, seconds=NUM,
        ),
        "batch": {
            "type": "object",
            "required": ["kind", "path", "output", "status", "source_bytes", "output_bytes",
                         "ratio", "source_sha256", "output_sha256"],
            "properties": {
                "kind": {"enum": ["file", "folder"]},
                "path": {"type": STR},
                "output": {"type": STR},
                "status": {"enum": ["ok", "duplicate", "skipped"]},
                "source_bytes": {"type": INT},
                "output_bytes": {"type": INT},
                "ratio": {"type": NUM},
                "seconds": {"type": NUM},
                "worker": {"type": [STR, "null"]},
                "source_sha256": {"type": STR},
                "output_sha256": {"type": STR},
                "duplicate_of": {"type": STR},
            },
        },
        "export": _obj(
            "file",
            "output", "format", "tensors", "types", "metadata", "output_bytes", "seconds",
            output=STR, format={"enum": ["gguf"]}, tensors=INT, types="object",
            metadata={"enum": ["source", "minimal"]}, output_bytes=INT, seconds=NUM,
            converted="object",
        ),
        "eval": _obj(
            "eval",
            "original", "compressed", "replaced", "sentences", "embedding_dim", "mean_cosine",
            "min_cosine", "worst_sentence", "cosines", "seconds",
            original=STR, compressed=STR, replaced="array", sentences=INT, embedding_dim=INT,
            mean_cosine=NUM, min_cosine=NUM, worst_sentence=STR, cosines="array", seconds=NUM,
        ),
    },
}  # fmt: skip


def _schema_text(value=None, indent: str = "", lead: int = 0, width: int = 96) -> str:
    """The schema as JSON, each value on one line where it fits in ``width`` columns
    (``lead``: the columns its key takes before it)."""
    import json

    value = SCHEMA if value is None else value
    flat = json.dumps(value)
    if len(indent) + lead + len(flat) <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    inner = indent + "  "
    if isinstance(value, list):
        items = [inner + _schema_text(v, inner) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    items = [
        f"{inner}{json.dumps(k)}: {_schema_text(v, inner, len(json.dumps(k)) + 2)}"
        for k, v in value.items()
    ]
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"


def render() -> str:
    from click.testing import CliRunner

    from zipmodel.cli import cli

    parts = [HEAD.replace("SCHEMA_JSON", _schema_text())]
    for name in sorted(cli.commands):
        out = CliRunner().invoke(cli, [name, "--help"], terminal_width=100).output
        parts.append(f"\n### `zipmodel {name}`\n\n```\n{out.rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    (ROOT / "docs" / "cli.md").write_text(render())
    print("wrote docs/cli.md")
