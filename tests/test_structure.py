"""Structure real checkpoints have: BF16-origin FP32, constant tensors, a .pth and its twin."""

from __future__ import annotations

import io

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save

from zipmodel.api import compress_bytes, decompress_bytes


def llm_like(rng, shape, scale=0.02) -> np.ndarray:
    """Weights with per-row scales, as trained layers have (heavier tails than a Gaussian)."""
    rows = np.exp(rng.normal(0.0, 0.3, size=(shape[0], 1))).astype(np.float32)
    return (rng.standard_t(5, size=shape) * scale * rows).astype(np.float32)


def test_bf16_origin_fp32_is_coded_as_bf16():
    """An FP32 checkpoint upcast from BF16 (low 16 bits zero) costs what the BF16 one does."""
    rng = np.random.default_rng(0)
    tensors = {
        f"layers.{i}.weight": llm_like(rng, (256, 512))
        .astype(ml_dtypes.bfloat16)
        .astype(np.float32)
        for i in range(4)
    }
    raw = save(tensors)
    z = compress_bytes(raw)
    assert decompress_bytes(z) == raw
    ratio = len(z) / len(raw)
    as_bf16 = save({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()})
    bf16_bytes = len(compress_bytes(as_bf16))
    assert ratio < 0.36, ratio
    assert len(z) < bf16_bytes * 1.01 + 4096  # the zero low halves cost (almost) nothing


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.int64])
def test_constant_tensors_cost_bytes(dtype):
    zeros = np.zeros((1024, 1024), dtype)
    ones = np.ones((512, 512), dtype)
    raw = save({"zeros": zeros, "ones": ones})
    z = compress_bytes(raw)
    assert decompress_bytes(z) == raw
    # about 100 bytes per 1 MiB chunk: a header, one entry per stream, a one-byte payload
    assert len(z) < 2000 + len(raw) // 4096, len(z)


def test_pth_and_safetensors_twin_within_one_percent():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    tensors = {
        "embed.weight": llm_like(rng, (1000, 256)),
        "layer.0.q.weight": llm_like(rng, (256, 256)),
        "layer.0.mlp.weight": llm_like(rng, (1024, 256)),
        "layer.0.norm.weight": np.ones(256, np.float32),
    }
    for dt in (np.float32, ml_dtypes.bfloat16):
        arrays = {k: v.astype(dt) for k, v in tensors.items()}
        st = save(arrays)
        buf = io.BytesIO()
        sd = {
            k: torch.from_numpy(v.view(np.int16) if dt is ml_dtypes.bfloat16 else v).view(
                torch.bfloat16 if dt is ml_dtypes.bfloat16 else torch.float32
            )
            for k, v in arrays.items()
        }
        torch.save(sd, buf)
        pth = buf.getvalue()
        zs, zp = compress_bytes(st), compress_bytes(pth)
        assert decompress_bytes(zp) == pth
        # the same tensors: sizes within 1% of each other (headers differ by a few kB)
        assert abs(len(zp) - len(zs)) / len(zs) < 0.01, (dt, len(zs), len(zp))
