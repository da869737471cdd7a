"""Write tests/golden/: small sources and their containers, decoded by every test run.

The containers pin the format: a later zipmodel must decode them to the same bytes forever.
Regenerating them is only allowed together with a format version bump (docs/format.md).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import edgecases  # noqa: E402
import zipmodel  # noqa: E402
from zipmodel.api import compress_bytes, decompress_bytes  # noqa: E402

OUT = ROOT / "tests" / "golden"


def _lossy_source(rng) -> bytes:
    """A small model for the lossy goldens: F32 and BF16 weights, a bias kept exact."""
    import ml_dtypes

    w = rng.standard_normal((64, 96)).astype(np.float32)
    v = (rng.standard_normal((48, 128)) * 0.02).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(96).astype(np.float32)
    return edgecases.safetensors_bytes(
        [
            ("layer.weight", "F32", [64, 96], w.tobytes()),
            ("layer.bias", "F32", [96], b.tobytes()),
            ("emb.weight", "BF16", [48, 128], v.tobytes()),
        ],
        metadata={"format": "pt"},
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    e = edgecases.build(seed=7)
    rng = np.random.default_rng(7)
    sources = {
        "model.safetensors": e["model_meta.safetensors"],
        "special.safetensors": e["special_values.safetensors"] + b"",
        "empty_and_scalar.safetensors": e["empty_and_scalar.safetensors"],
        "all_dtypes.safetensors": e["all_dtypes.safetensors"],
        "zeros.bin": bytes(20_000),
        "noise.bin": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "empty.bin": b"",
        "lossy.safetensors": _lossy_source(rng),
    }
    # format 1.2: tensor stages. Their containers pin the dequantized bytes too (restored_sha256).
    lossy_variants = {"lossy.safetensors": [("int8", None), ("nf4", None), (None, 5)]}
    cases = []
    for name, data in sources.items():
        (OUT / name).write_bytes(data)
        variants = [("default", None)]
        if name == "model.safetensors":
            variants += [("fast", None), ("max", None)]
        if name == "noise.bin":
            variants += [("default", "bf16")]
        for preset, bits in lossy_variants.get(name, []):
            z = compress_bytes(
                data, chunk_size=16 << 10, name=name, lossy=preset, mantissa_bits=bits
            )
            zname = f"{name}.{preset or f'mantissa{bits}'}.zm"
            (OUT / zname).write_bytes(z)
            cases.append(
                {
                    "container": zname,
                    "source": name,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "level": "default",
                    "dtype": None,
                    "format": [1, 2],
                    "lossy": preset or f"mantissa-bits {bits}",
                    "restored_sha256": hashlib.sha256(decompress_bytes(z)).hexdigest(),
                    "writer": f"zipmodel {zipmodel.__version__}",
                }
            )
        if name in lossy_variants:
            continue
        for level, dtype in variants:
            z = compress_bytes(data, level=level, dtype=dtype, chunk_size=16 << 10, name=name)
            zname = f"{name}.{level}{'.' + dtype if dtype else ''}.zm"
            (OUT / zname).write_bytes(z)
            cases.append(
                {
                    "container": zname,
                    "source": name,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "level": level,
                    "dtype": dtype,
                    "writer": f"zipmodel {zipmodel.__version__}",
                }
            )
    (OUT / "MANIFEST.json").write_text(json.dumps(cases, indent=2) + "\n")
    print(f"wrote {len(cases)} golden containers to {OUT}")


if __name__ == "__main__":
    main()
