"""The codec contract.

A codec turns one byte stream into bytes and back. It is a small class with:

* ``codec_id`` (the byte stored in the container; ids are never reused) and ``name``;
* ``encode(data)``: ``data`` is a contiguous uint8 array; returns the payload (bytes-like), or
  ``None`` when the codec cannot or should not code this stream (the chooser then moves on).
  The payload may be a view of the codec's per-thread scratch memory, valid until the same
  thread's next ``encode`` call on that codec: callers copy it before coding anything else
  with the same codec (the frame writer does);
* ``decode(payload, out)``: ``out`` is a preallocated uint8 array of exactly the decoded size
  recorded in the container; the codec fills all of it or raises
  :class:`~zipmodel.errors.CorruptDataError`. A decoder must never read or write out of
  bounds, loop forever or allocate more than a small multiple of ``len(out)``, whatever the
  payload holds: payloads come from files that may be damaged or hostile;
* ``uses_context`` / ``uses_layout``: codecs that model a stream given an earlier stream of
  the chunk take it as a third argument of ``encode`` and ``decode``; codecs that model a
  tensor's rows and columns take ``layout`` as ``encode``'s second argument;
* ``compiled``: whether the decoder is a Numba kernel (compiled on a machine's first use);
* ``estimate(hist, n)``: the payload size the codec expects for a stream of ``n`` bytes with
  byte histogram ``hist`` (``None`` if it cannot tell without trying). The chooser uses it to
  skip hopeless candidates cheaply.

Codecs are stateless after construction and safe to call from several threads at once; a
codec holding native state keeps it per thread. Output must depend only on the input (never
on timing or thread count). Numba kernels live in ``zipmodel._kernels``, imported lazily by
the codec module, never by this package's ``__init__``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

__all__ = ["Codec"]


class Codec(ABC):
    """Base class: see the module docstring for the contract."""

    codec_id: ClassVar[int]
    name: ClassVar[str]
    # encode(data, context) / decode(payload, out, context): coded given an earlier stream
    uses_context: ClassVar[bool] = False
    # encode(data, layout): coded given the tensor's rows and columns, layout=(row_len, first_col)
    uses_layout: ClassVar[bool] = False
    # decoded by a Numba kernel: its first use on a machine compiles it (zipmodel._jit)
    compiled: ClassVar[bool] = False

    @abstractmethod
    def encode(self, data: np.ndarray) -> bytes | None:
        """Code ``data`` (contiguous uint8); ``None`` if this codec does not apply."""

    @abstractmethod
    def decode(self, payload: memoryview, out: np.ndarray) -> None:
        """Decode ``payload`` into all of ``out`` or raise ``CorruptDataError``."""

    def estimate(self, hist: np.ndarray, n: int) -> float | None:
        """Expected payload bytes for ``n`` bytes with histogram ``hist`` (None: unknown)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.codec_id})"
