"""Every file in tests/hostile/ (built by scripts/make_hostile.py) must fail fast and cleanly."""

import io
import json
from pathlib import Path

import pytest
from workbudget import WorkBudget

import zipmodel
from zipmodel import errors
from zipmodel.api import decompress_bytes

HOSTILE = Path(__file__).parent / "hostile"
MANIFEST = json.loads((HOSTILE / "MANIFEST.json").read_text())


HOSTILE_CALLS = 20_000


def _decode_all(path: Path) -> None:
    zipmodel.verify_file(path, threads=2)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_hostile_file_fails_cleanly(name):
    want = MANIFEST[name]
    exc_type = getattr(errors, want["error"])
    path = HOSTILE / name
    # Fail fast, as work done, not seconds (a loaded CI machine): every file fails within
    # 600 calls in zipmodel code (measured) and a few MB; an unbounded loop or allocation
    # shows as a hundredfold.
    with WorkBudget(calls=HOSTILE_CALLS, peak_bytes=64 << 20):
        with pytest.raises(exc_type, match=want["message"]) as info:
            _decode_all(path)
    assert info.value.path == str(path), "the error must name the file"
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_hostile_bytes_raise_zipmodel_errors(name):
    with pytest.raises(errors.ZipmodelError):
        decompress_bytes((HOSTILE / name).read_bytes())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_hostile_file_via_open_and_get_tensor(name):
    with pytest.raises(errors.ZipmodelError):
        with zipmodel.open(io.BytesIO((HOSTILE / name).read_bytes())) as f:
            for k in f:
                f.get_tensor(k)


def test_manifest_covers_the_folder():
    assert sorted(p.name for p in HOSTILE.glob("*.zm")) == sorted(MANIFEST)
    assert len(MANIFEST) >= 30
