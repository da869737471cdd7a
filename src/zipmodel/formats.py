"""Names of the source formats zipmodel reads (light: the CLI imports it for ``--help``)."""

from __future__ import annotations

__all__ = ["FORMATS"]

# "auto" detects the format from the content; "raw" treats any file as opaque bytes.
FORMATS = ("auto", "safetensors", "torch", "ctranslate2", "gguf", "raw")
