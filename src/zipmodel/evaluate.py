"""How much a compressed model still agrees with its original: sentence-embedding cosine.

:func:`embedding_agreement` loads a sentence-embedding model folder (e.g. all-MiniLM-L6-v2)
twice with ``transformers`` — as it is, and with its weight files replaced by what a
compressed copy decodes to — embeds a fixed set of sentences with both (mean pooling over the
attention mask, as sentence-transformers does), and reports the cosine similarity per sentence.
A lossless copy gives 1.0 everywhere; a lossy one shows what the quantization cost.

The compressed side is a compressed folder (``zipmodel compress FOLDER``: ``.zm`` files and
``zipmodel.json``) or one ``.zm`` file standing for one weight file of the original folder.
Its ``.zm`` files are decoded with :func:`zipmodel.decompress_file` into a temporary mirror of
the original folder (the other files are linked), so ``from_pretrained`` reads exactly what a
user of the decompressed model would. Needs the ``eval`` extra (torch, transformers), imported
on first use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import MissingDependencyError, ZipmodelError
from .formats import SUFFIX

__all__ = ["EvalReport", "embedding_agreement", "load_sentences"]

SENTENCES = "eval_sentences.txt"
_HINT = "pip install 'zipmodel[eval]'"


@dataclass
class EvalReport:
    """Cosine similarity of each sentence's embedding, original vs compressed."""

    original: str
    compressed: str
    sentences: list[str]
    cosines: list[float]
    replaced: list[str] = field(default_factory=list)  # weight files taken from the compressed side
    dim: int = 0
    seconds: float = 0.0

    @property
    def mean_cosine(self) -> float:
        return sum(self.cosines) / len(self.cosines)

    @property
    def min_cosine(self) -> float:
        return min(self.cosines)

    @property
    def worst(self) -> int:
        """Index of the sentence whose embeddings agree least."""
        return min(range(len(self.cosines)), key=self.cosines.__getitem__)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": "zipmodel.eval/1",
            "original": self.original,
            "compressed": self.compressed,
            "replaced": self.replaced,
            "sentences": len(self.sentences),
            "embedding_dim": self.dim,
            "mean_cosine": self.mean_cosine,
            "min_cosine": self.min_cosine,
            "worst_sentence": self.sentences[self.worst],
            "cosines": self.cosines,
            "seconds": round(self.seconds, 3),
        }


def load_sentences(path: str | os.PathLike | None = None) -> list[str]:
    """The bundled evaluation sentences, or one sentence per non-empty line of ``path``."""
    if path is None:
        text = resources.files("zipmodel").joinpath("data", SENTENCES).read_text("utf-8")
    else:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ZipmodelError(f"cannot read sentences: {exc}", path=path) from None
    out = [s.strip() for s in text.splitlines() if s.strip()]
    if not out:
        raise ZipmodelError("no sentences (one per line expected)", path=path)
    return out


def _deps():
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"zipmodel eval needs torch and transformers ({exc.name or exc} is missing)", hint=_HINT
        ) from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # our output is the table, not theirs
    return torch, transformers


def _check_original(path: Path) -> None:
    if not path.is_dir():
        raise ZipmodelError(
            "not a model folder (give the folder with config.json and the weights)", path=path
        )
    if not (path / "config.json").is_file():
        raise ZipmodelError("no config.json: not a transformers model folder", path=path)


def _mirror(original: Path, compressed: Path, tmp: Path) -> list[str]:
    """Build ``tmp``: the original folder's files linked, its weights decoded from ``compressed``.

    Returns the relative paths that were replaced by decoded files.
    """
    from . import api
    from .folder import ZM, is_zm_folder, read_manifest

    files = [p for p in original.rglob("*") if p.is_file()]
    for src in files:
        dst = tmp / src.relative_to(original)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.symlink(src.resolve(), dst)
        except OSError:  # no symlinks here (Windows without the privilege): copy
            shutil.copyfile(src, dst)

    def put(zm: Path, rel: str) -> None:
        dst = tmp / rel
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        api.decompress_file(zm, dst)

    if compressed.is_dir():
        if not is_zm_folder(compressed):
            raise ZipmodelError("not a compressed folder (no zipmodel.json)", path=compressed)
        manifest = read_manifest(compressed)
        replaced = [e.path for e in manifest.files if e.stored == ZM]
        for e in manifest.files:
            if e.stored == ZM:
                put(compressed / e.stored_path, e.path)
        if not replaced:
            raise ZipmodelError(
                "the compressed folder holds no .zm file to evaluate", path=compressed
            )
        return replaced
    if not compressed.is_file():
        raise ZipmodelError("no such file or folder", path=compressed)
    # One .zm: it stands for the original file of the same name (minus .zm), or for the
    # folder's only weight file.
    name = compressed.name.removesuffix(SUFFIX)
    candidates = [p for p in files if p.name == name]
    if len(candidates) != 1:
        weights = [p for p in files if p.suffix in (".safetensors", ".bin")]
        if len(weights) != 1:
            raise ZipmodelError(
                f"cannot tell which file of {original} this stands for (no single {name!r} and "
                f"{len(weights)} weight files)",
                path=compressed,
            )
        candidates = weights
    rel = candidates[0].relative_to(original).as_posix()
    put(compressed, rel)
    return [rel]


def _embed(torch, transformers, folder: Path, sentences: Sequence[str], batch_size: int):
    """Mean-pooled embeddings (float64, one row per sentence) of the model in ``folder``."""
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
    model.eval()
    rows = []
    with torch.no_grad():
        for a in range(0, len(sentences), batch_size):
            enc = tok(
                list(sentences[a : a + batch_size]),
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state.to(torch.float64)
            mask = enc["attention_mask"].unsqueeze(-1).to(torch.float64)
            rows.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))
    return torch.cat(rows)


def embedding_agreement(
    original: str | os.PathLike,
    compressed: str | os.PathLike,
    *,
    sentences: Sequence[str] | None = None,
    batch_size: int = 32,
) -> EvalReport:
    """Embed ``sentences`` (default: the bundled set) with the original model folder and with
    its compressed copy; the cosine similarity of each pair."""
    t0 = time.perf_counter()
    torch, transformers = _deps()
    orig, comp = Path(original), Path(compressed)
    _check_original(orig)
    sents = list(sentences) if sentences is not None else load_sentences()
    ref = _embed(torch, transformers, orig, sents, batch_size)
    tmp = Path(tempfile.mkdtemp(prefix=".zipmodel-eval-"))
    try:
        replaced = _mirror(orig, comp, tmp)
        got = _embed(torch, transformers, tmp, sents, batch_size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cos = torch.nn.functional.cosine_similarity(ref, got, dim=1)
    return EvalReport(
        original=str(original),
        compressed=str(compressed),
        sentences=sents,
        cosines=[float(c) for c in cos],
        replaced=replaced,
        dim=int(ref.shape[1]),
        seconds=time.perf_counter() - t0,
    )
