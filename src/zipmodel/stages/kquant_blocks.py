"""Our quantizers to ggml block formats (issue 18): float32 rows -> ggml blocks and back.

``quantize_blocks(x, "q4_k")`` packs each row of ``x`` into ggml ``block_q4_K`` blocks, byte
for byte what llama.cpp reads (``gguf.quants.dequantize`` agrees with
:func:`dequantize_blocks` bit for bit). The search (``zipmodel._kernels.kquant``) minimises
the squared error of what is stored, optionally weighted per element (``weights``, as an
importance matrix would); ggml's own ``*_ref`` quantizers round from the block maximum.

Non-finite input is refused (``ValueError``): a NaN or inf has no faithful block encoding and
ggml would write NaN scales that poison the whole block. Values too large for an fp16 scale
(beyond about 65504 x the largest level) are clipped, not turned into inf.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._jit import kernels

__all__ = ["BLOCK", "QTYPES", "dequantize_blocks", "quantize_blocks"]

# qtype -> (elements per block, bytes per block), as ggml's type traits
BLOCK: dict[str, tuple[int, int]] = {
    "q8_0": (32, 34),
    "q3_k": (256, 110),
    "q4_k": (256, 144),
    "q5_k": (256, 176),
    "q6_k": (256, 210),
    "iq4_xs": (256, 136),
}
QTYPES = tuple(BLOCK)
# zipmodel dtype names (``dtypes.GGUF_BLOCKS``) and gguf-py type names
GGUF_NAME = {q: q.upper() for q in QTYPES}

_MIN_PER_THREAD = 1 << 18  # elements; below this one thread


def _check(qtype: str) -> tuple[int, int]:
    try:
        return BLOCK[qtype.lower()]
    except KeyError:
        raise ValueError(f"unknown block type {qtype!r} (one of {', '.join(QTYPES)})") from None


def _threads(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


def quantize_blocks(
    x: np.ndarray,
    qtype: str,
    *,
    weights: np.ndarray | None = None,
    effort: int = 1,
    threads: int = 0,
) -> np.ndarray:
    """ggml blocks of the rows of ``x`` (2-D, row length a multiple of the block size), as a
    uint8 array of shape (rows, blocks per row x bytes per block).

    ``weights``: same shape as ``x``, non-negative, the weight of each element's squared
    error (None: uniform, i.e. minimise the plain squared error). ``effort`` 0, 1 or 2: search
    breadth (1 is the default trade-off). ``threads``: 0 = one per core.
    """
    nblock, nbytes = _check(qtype)
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"quantize_blocks wants 2-D rows, got shape {x.shape}")
    if x.shape[1] % nblock:
        raise ValueError(f"{qtype}: row length {x.shape[1]} is not a multiple of {nblock}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"quantize_blocks wants floats, got {x.dtype}")
    flat = np.ascontiguousarray(x, np.float32).reshape(-1)
    if not np.isfinite(flat).all():
        bad = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise ValueError(
            f"{qtype}: non-finite value {flat[bad]} at row {bad // x.shape[1]}, column "
            f"{bad % x.shape[1]}; NaN/inf cannot be quantized"
        )
    if weights is None:
        w = np.empty(0, np.float32)
    else:
        w = np.ascontiguousarray(weights, np.float32).reshape(-1)
        if w.size != flat.size:
            raise ValueError(f"weights: shape {np.shape(weights)} is not the shape {x.shape}")
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError("weights must be finite and non-negative")
    if effort not in (0, 1, 2):
        raise ValueError(f"effort must be 0, 1 or 2, not {effort!r}")
    out = np.empty(flat.size // nblock * nbytes, np.uint8)
    if flat.size:
        fn = getattr(kernels("kquant"), f"quantize_{qtype.lower()}")
        nb = flat.size // nblock
        parts = max(1, min(_threads(threads), flat.size // _MIN_PER_THREAD))
        cuts = [nb * i // parts for i in range(parts + 1)]

        def run(i: int) -> None:
            a, b = cuts[i], cuts[i + 1]
            wi = w if w.size == 0 else w[a * nblock : b * nblock]
            fn(flat[a * nblock : b * nblock], wi, out[a * nbytes : b * nbytes], np.int64(effort))

        if parts == 1:
            run(0)
        else:
            with ThreadPoolExecutor(parts) as ex:
                list(ex.map(run, range(parts)))
    return out.reshape(x.shape[0], -1)


def dequantize_blocks(blocks: np.ndarray, qtype: str, n: int | None = None) -> np.ndarray:
    """float32 values of ggml blocks (any shape of uint8; ``n`` elements, default all), flat."""
    nblock, nbytes = _check(qtype)
    b = np.ascontiguousarray(blocks, np.uint8).reshape(-1)
    if b.size % nbytes:
        raise ValueError(f"{qtype}: {b.size} bytes is not a whole number of {nbytes}-byte blocks")
    total = b.size // nbytes * nblock
    if n is None:
        n = total
    if n > total or n % nblock:
        raise ValueError(f"{qtype}: {n} elements do not fit {b.size // nbytes} blocks exactly")
    out = np.empty(n, np.float32)
    if n:
        getattr(kernels("kquant"), f"dequantize_{qtype.lower()}")(b[: n // nblock * nbytes], out)
    return out
