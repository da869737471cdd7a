import os
from pathlib import Path

import pytest
from corpusdir import CorpusDir
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("expensive", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

CORPUS = Path(os.environ.get("ZIPMODEL_CORPUS", Path.home() / ".cache" / "zipmodel-corpus"))


@pytest.fixture(scope="session")
def corpus() -> CorpusDir:
    """The real-model corpus (shared/corpus/fetch.sh): ``corpus / name`` skips the test when
    that file is absent, so a partial corpus runs the tests whose files it has."""
    if not CORPUS.is_dir():
        pytest.skip(f"real-model corpus not found in {CORPUS} (run shared/corpus/fetch.sh)")
    return CorpusDir(CORPUS)
