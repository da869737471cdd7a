"""Tensor stages: per-tensor transforms that run before chunking.

A chunk :class:`~zipmodel.stages.base.Transform` sees one chunk's bytes and must give them back
exactly. A *tensor stage* sees a whole tensor and may store it as something else: quantized
codes plus scales (lossy stages), or the XOR / difference against the same tensor of a base
model (delta stages, lossless). What it stores are *parts*, each an array with a dtype of its
own; every part is then chunked and coded like any other tensor (float split, entropy coders),
so int8 codes cost their entropy, not 8 bits.

Contract:

* ``encode`` never modifies the tensor's bytes; it returns ``None`` when the stage does not
  pay or does not apply (the tensor is then coded losslessly, as if no stage were asked for);
* ``decode(parts, out, ...)`` writes the tensor's bytes (its original dtype and shape) into
  ``out``; for a lossless stage they equal the original bytes for every bit pattern, for a
  lossy stage they are the dequantized values, and the same parts always give the same bytes;
* ``part_sizes`` gives each part's byte size from the segment and the recorded params alone,
  so a reader validates a hostile index before it allocates anything;
* ``elementwise`` stages have exactly one part of the tensor's size, and any byte range
  ``[a, b)`` of that part (whole elements) decodes to the same range of the tensor on its own:
  their chunks decode independently, like plain chunks (delta stages), and in place (``out``
  may be the very array ``parts[0]``). Other stages decode the whole tensor at once, from all
  of its parts;
* ``params`` are JSON values (numbers, strings, lists, dicts): they go into the index;
* the container records XXH3-64 of the bytes ``decode`` gives (the pipeline decodes the
  parts once at compression), and checks it whenever a whole tensor is decoded; a lossless
  stage whose decode does not give the tensor back fails the compression.

One stage object serves every tensor it was chosen for, from several threads at once:
``encode`` and ``decode`` must be thread-safe (keep per-call state local) and must not wait
on zipmodel's worker pool (they may run on it).

The pipeline (``zipmodel.pipeline``) calls ``encode`` once per tensor, a few tensors ahead of
the chunks being coded, and codes each part like a tensor of ``Part.dtype`` and
``Part.shape`` (float split, entropy coders); the parts are dropped once their last chunk is
written. A :class:`StageContext` travels from the API (``compress_file(..., context=)``,
``open``, ``load``, ``decompress_file``) to every ``encode`` and ``decode``.

Stages are named in the container by ``name``; a name is never reused with another meaning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..readers.base import Segment

__all__ = ["Part", "StageContext", "Staged", "TensorStage"]


@dataclass
class Part:
    """One array a staged tensor is stored as."""

    name: str  # "codes", "scales", "delta", ...
    dtype: (
        str  # safetensors dtype name ("I8", "U8", "F16", "BF16", "F32", ...): picks the transform
    )
    data: np.ndarray  # uint8, C-contiguous, a whole number of ``dtype`` elements
    shape: tuple[
        int, ...
    ] = ()  # element shape when it has rows (the 2-D codecs use it); () if none


@dataclass
class Staged:
    """What :meth:`TensorStage.encode` returns."""

    parts: list[Part]
    params: dict[str, Any] = field(default_factory=dict)  # recorded in the index, given to decode
    # Lossy stages: measured error of the dequantized tensor against the original, e.g.
    # {"rel_rms": ..., "max_abs": ..., "snr_db": ..., "bits": stored bits before entropy coding}.
    quality: dict[str, float] | None = None
    # The bytes ``decode`` gives for these parts (uint8, the tensor's size), when ``encode``
    # already computed them (lossy stages measure their error on them): the pipeline then
    # takes its checksum instead of decoding the parts a second time.
    restored: np.ndarray | None = None


@dataclass
class StageContext:
    """What a stage may need besides the tensor: today, the base model of a delta."""

    # Bytes (uint8) of the base model's tensor with this segment's name, or None when the base
    # has no such tensor (or no base was given).
    base: Callable[[Segment], np.ndarray | None] | None = None
    # The base's identity, recorded in the index of a file whose tensors were staged with
    # this context: {"name": ..., "sha256": ...}. Decoding with a context whose base_info
    # has another sha256 fails (naming the expected one) before anything is decoded.
    base_info: dict[str, Any] | None = None


class TensorStage(ABC):
    """Base class: see the module docstring for the contract."""

    name: ClassVar[str]
    lossy: ClassVar[bool]
    elementwise: ClassVar[bool] = False

    @abstractmethod
    def encode(self, tensor: np.ndarray, seg: Segment, ctx: StageContext) -> Staged | None:
        """Store ``tensor`` (uint8 bytes of ``seg``) as parts, or ``None`` to leave it alone."""

    @abstractmethod
    def part_sizes(self, seg: Segment, params: dict[str, Any]) -> list[int]:
        """Byte size of each part, from the segment and params only (validates hostile input).

        Raises ``ValueError`` when the params do not fit the segment.
        """

    @abstractmethod
    def decode(
        self,
        parts: Sequence[np.ndarray],
        out: np.ndarray,
        seg: Segment,
        params: dict[str, Any],
        ctx: StageContext,
        offset: int = 0,
    ) -> None:
        """Write the tensor's bytes into ``out`` (uint8) from its decoded parts (uint8).

        ``offset`` is only used by elementwise stages, called per chunk: ``parts`` is then the
        chunk's bytes and ``out`` the matching slice at byte ``offset`` of the tensor.
        """

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str | None:
        """A note for ``zipmodel info`` about how this tensor was stored (say, why a fallback
        type), from its recorded params; ``None`` when there is nothing to add."""
        return None
