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
from zipmodel.api import compress_bytes  # noqa: E402

OUT = ROOT / "tests" / "golden"


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
    }
    cases = []
    for name, data in sources.items():
        (OUT / name).write_bytes(data)
        variants = [("default", None)]
        if name == "model.safetensors":
            variants += [("fast", None), ("max", None)]
        if name == "noise.bin":
            variants += [("default", "bf16")]
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
