"""The transform contract.

A transform turns one chunk of a segment (``raw``: uint8, a whole number of elements) into a
fixed number of byte streams and back. Contract:

* ``forward`` never modifies ``raw`` (ZipNN's in-place reorder corrupted small tensors);
* ``inverse(forward(raw), out)`` writes exactly ``raw`` into ``out``, for every bit pattern
  (NaN payloads, -0.0, infinities, subnormals) and every length accepted by ``stream_sizes``;
* the stream sizes depend only on ``len(raw)``, so a decoder can validate them before
  allocating anything;
* lossy transforms set ``lossy = True``; every transform here is lossless.

Transforms are identified in the container by ``transform_id``; ids are never reused.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

__all__ = ["Transform"]


class Transform(ABC):
    """Base class: see the module docstring for the contract."""

    transform_id: ClassVar[int]
    name: ClassVar[str]
    # the element type this is the lossless transform for (None: any bytes, or none)
    dtype: ClassVar[str | None] = None
    itemsize: ClassVar[int] = 1  # chunk boundaries fall on multiples of this
    stream_names: ClassVar[tuple[str, ...]] = ("bytes",)
    # "field": a float field, close to i.i.d. (order-0 coders); "bytes": anything else.
    stream_kinds: ClassVar[tuple[str, ...]] = ("bytes",)
    # Index of an earlier stream a context codec may condition this stream on (None: none).
    stream_contexts: ClassVar[tuple[int | None, ...]] = (None,)
    # Streams whose statistics follow the tensor's rows and columns (exponents): codecs that
    # model per-row / per-column scale are tried on these.
    stream_2d: ClassVar[tuple[bool, ...]] = (False,)
    lossy: ClassVar[bool] = False

    @property
    def n_streams(self) -> int:
        return len(self.stream_names)

    def stream_sizes(self, raw_size: int) -> tuple[int, ...]:
        """Decoded size of each stream for a chunk of ``raw_size`` bytes."""
        if raw_size % self.itemsize:
            raise ValueError(f"{self.name}: {raw_size} bytes is not a whole number of elements")
        per = raw_size // self.n_streams
        return (per,) * self.n_streams

    def stream_sizes_array(self, raw_sizes: np.ndarray) -> np.ndarray:
        """:meth:`stream_sizes` for many chunks at once: shape ``(len(raw_sizes), n_streams)``.

        ``raw_sizes`` must already be whole numbers of elements.
        """
        per = np.asarray(raw_sizes, np.int64) // self.n_streams
        return np.repeat(per[:, None], self.n_streams, axis=1)

    @abstractmethod
    def forward(self, raw: np.ndarray, out: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
        """Split ``raw`` into contiguous uint8 streams (``raw`` is left untouched).

        With ``out`` (arrays of exactly :meth:`stream_sizes`), the streams are written there
        instead of into new arrays (hot loops reuse buffers rather than fault in fresh pages).
        """

    @abstractmethod
    def inverse(self, streams: Sequence[np.ndarray], out: np.ndarray) -> None:
        """Rebuild the chunk from its decoded streams into ``out`` (uint8, exact size)."""
