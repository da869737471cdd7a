"""The real-model corpus folder as the ``corpus`` fixture hands it out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


class CorpusDir:
    """``corpus / name`` is the path of that corpus file or folder, and skips the test when
    it is absent: a partial corpus (one fetch failed) runs every test whose files are there."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def __truediv__(self, name: str) -> Path:
        p = self.root / name
        if not p.exists():
            pytest.skip(f"{name} is not in the corpus {self.root} (run shared/corpus/fetch.sh)")
        return p

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __repr__(self) -> str:
        return f"CorpusDir({str(self.root)!r})"
