"""Error of a lossy stage: the dequantized tensor measured against the original.

Everything is computed in float64 (numpy's pairwise sums, not BLAS, so the figures
recorded in a container do not depend on the machine's threads) over the values a loader gets back (the dequantized tensor in
its original dtype), never over intermediate codes. :class:`ErrorStats` keeps *sums* (squared
error, squared reference, element counts) so totals over many tensors are exact: the total
relative RMS error is ``sqrt(sum sq_err / sum sq_ref)`` over all quantized elements, not an
average of per-tensor ratios.

Non-finite originals (NaN, ±inf) are not part of the sums: the stages that accept them give
them back unchanged (bf16, mantissa rounding), the others leave such tensors exact. They are
counted in ``nonfinite``; a finite original that came back non-finite makes the error infinite.

Metrics:

* ``rel_rms``: ``sqrt(sum (y - x)^2 / sum x^2)`` (0 when there is no error);
* ``max_abs``: ``max |y - x|``;
* ``snr_db``: ``10 log10(sum x^2 / sum (y - x)^2)``; ``None`` in :meth:`ErrorStats.to_json`
  when there is no error at all (an infinite SNR is not a JSON number);
* ``bits``: stored bits per element before entropy coding (codes plus scales), set by the stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ErrorStats", "measure", "total"]

_BLOCK = 1 << 20  # elements per float64 pass: bounds the temporaries of a big tensor


@dataclass
class ErrorStats:
    """Sums of the error of one tensor or of many (``+`` adds them exactly)."""

    count: int = 0  # finite original elements compared
    sq_err: float = 0.0  # sum of (dequantized - original)^2
    sq_ref: float = 0.0  # sum of original^2
    max_abs: float = 0.0  # largest |dequantized - original|
    nonfinite: int = 0  # NaN/inf originals, outside the sums
    stored_bits: float = 0.0  # bits stored before entropy coding (codes + scales), all elements

    def __add__(self, other: ErrorStats) -> ErrorStats:
        return ErrorStats(
            self.count + other.count,
            self.sq_err + other.sq_err,
            self.sq_ref + other.sq_ref,
            max(self.max_abs, other.max_abs),
            self.nonfinite + other.nonfinite,
            self.stored_bits + other.stored_bits,
        )

    @property
    def elements(self) -> int:
        return self.count + self.nonfinite

    @property
    def rel_rms(self) -> float:
        if self.sq_err == 0.0:
            return 0.0
        if self.sq_ref == 0.0:
            return math.inf
        return math.sqrt(self.sq_err / self.sq_ref)

    @property
    def snr_db(self) -> float:
        if self.sq_err == 0.0:
            return math.inf
        if self.sq_ref == 0.0 or math.isinf(self.sq_err):
            return -math.inf
        return 10.0 * math.log10(self.sq_ref / self.sq_err)

    @property
    def bits(self) -> float:
        """Stored bits per element before entropy coding."""
        return self.stored_bits / self.elements if self.elements else 0.0

    def to_json(self) -> dict[str, Any]:
        """The derived metrics and the sums (the sums make totals exact); JSON-safe values."""

        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "rel_rms": finite(self.rel_rms),
            "max_abs": finite(self.max_abs),
            "snr_db": finite(self.snr_db),
            "bits": self.bits,
            "count": self.count,
            "nonfinite": self.nonfinite,
            "sq_err": finite(self.sq_err),
            "sq_ref": finite(self.sq_ref),
            "stored_bits": self.stored_bits,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ErrorStats:
        """Inverse of :meth:`to_json` (``None`` sums are infinite errors)."""

        def num(key: str) -> float:
            v = d.get(key, 0.0)
            return math.inf if v is None else float(v)

        return cls(
            count=int(d.get("count", 0)),
            sq_err=num("sq_err"),
            sq_ref=num("sq_ref"),
            max_abs=num("max_abs"),
            nonfinite=int(d.get("nonfinite", 0)),
            stored_bits=float(d.get("stored_bits", 0.0)),
        )


def measure(
    original: np.ndarray, dequantized: np.ndarray, *, stored_bits: float = 0.0
) -> ErrorStats:
    """Error sums of ``dequantized`` against ``original`` (any float dtypes, same size)."""
    x = np.asarray(original).reshape(-1)
    y = np.asarray(dequantized).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"cannot compare {x.size} elements with {y.size}")
    st = ErrorStats(stored_bits=float(stored_bits))
    # signalling NaNs warn when cast; they are counted as non-finite like any NaN
    with np.errstate(invalid="ignore", over="ignore"):
        for a in range(0, x.size, _BLOCK):
            xs = x[a : a + _BLOCK].astype(np.float64)
            ys = y[a : a + _BLOCK].astype(np.float64)
            ok = np.isfinite(xs)
            if not ok.all():
                st.nonfinite += int(xs.size - np.count_nonzero(ok))
                xs, ys = xs[ok], ys[ok]
            if xs.size == 0:
                continue
            d = ys - xs
            if not np.isfinite(d).all():  # a finite value came back as NaN/inf
                st.count += int(xs.size)
                st.sq_err = st.max_abs = math.inf
                st.sq_ref += float(np.sum(xs * xs))
                continue
            st.count += int(xs.size)
            st.sq_err += float(np.sum(d * d))
            st.sq_ref += float(np.sum(xs * xs))
            st.max_abs = max(st.max_abs, float(np.abs(d).max()))
    return st


def total(stats: Iterable[ErrorStats | Mapping[str, Any]]) -> ErrorStats:
    """Exact total of per-tensor stats (:class:`ErrorStats` or their ``to_json`` dicts)."""
    out = ErrorStats()
    for s in stats:
        out = out + (s if isinstance(s, ErrorStats) else ErrorStats.from_json(s))
    return out
