"""Names of the source formats zipmodel reads, and the file names it knows (light: the CLI
imports it for ``--help``)."""

from __future__ import annotations

__all__ = ["FORMATS", "SUFFIX", "WEIGHT_SUFFIXES"]

# "auto" detects the format from the content; "raw" treats any file as opaque bytes.
FORMATS = ("auto", "safetensors", "torch", "ctranslate2", "gguf", "raw")

# A container is the source's name + SUFFIX (``model.safetensors`` → ``model.safetensors.zm``).
SUFFIX = ".zm"
# Weight files by name: a folder compresses them whatever their size (when it saves bytes),
# and a base folder's only weight file is the base of a single file.
WEIGHT_SUFFIXES = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".h5", ".msgpack",
)  # fmt: skip
