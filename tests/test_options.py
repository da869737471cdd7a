"""LossyOptions: one frozen value, checked where it is made, that every entry point takes."""

from __future__ import annotations

import dataclasses

import pytest

from zipmodel.options import DEFAULT_GROUP_SIZE, LossyOptions


def test_frozen_defaults_and_replace():
    o = LossyOptions()
    assert not o.enabled and o.group_size == DEFAULT_GROUP_SIZE
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.group_size = 32  # type: ignore[misc]
    n = LossyOptions("nf4", keep=["a*"])
    assert n.enabled and n.keep == ("a*",)
    assert n.replace(group_size=32).group_size == 32
    with pytest.raises(ValueError, match="group size"):
        n.replace(group_size=16)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"group_size": 32}, "group_size tune a lossy stage"),
        ({"keep": ("x",)}, "keep tune"),
        ({"preset": "int5"}, "unknown lossy preset"),
        ({"preset": "int4", "group_size": 256}, "group size must be in"),
        ({"preset": "int8", "per_tensor": True}, "fp8 option"),
        ({"keep": "x", "preset": "int8"}, "sequence of name globs"),
    ],
)
def test_rejects(kw, msg):
    with pytest.raises(ValueError, match=msg):
        LossyOptions(**kw)


def test_of_and_api_agree(tmp_path):
    import numpy as np

    import zipmodel

    assert LossyOptions.of("int4", group_size=32) == LossyOptions("int4", group_size=32)
    o = LossyOptions("int8")
    assert LossyOptions.of(o) is o
    with pytest.raises(ValueError, match="not both"):
        LossyOptions.of(o, group_size=32)
    with pytest.raises(TypeError, match="unexpected"):
        LossyOptions.of("int8", groupsize=32)
    # the API checks as the CLI does: a tuning keyword alone is an error, not ignored
    src = tmp_path / "x.bin"
    src.write_bytes(np.arange(4096, dtype=np.float32).tobytes())
    with pytest.raises(ValueError, match="tune a lossy stage"):
        zipmodel.compress_file(src, group_size=32)
    assert not (tmp_path / "x.bin.zm").exists()
