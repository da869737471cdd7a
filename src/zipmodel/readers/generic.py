"""Any file: one verbatim segment, or one tensor when the user gives a ``--dtype`` hint."""

from __future__ import annotations

from ..dtypes import DType
from .base import TENSOR, VERBATIM, Layout, Segment

__all__ = ["read_generic"]


def read_generic(size: int, dtype: DType | None = None, *, name: str = "data") -> Layout:
    """Describe a file of ``size`` bytes.

    With ``dtype`` the whole file is one 1-D tensor of that type called ``name``; bytes past
    the last whole element (an odd tail) stay verbatim.
    """
    if dtype is None or dtype.itemsize == 0 or size < dtype.itemsize:
        return Layout("raw", size, [Segment(VERBATIM, 0, size)] if size else [])
    n = size // dtype.itemsize
    segs = [Segment(TENSOR, 0, n * dtype.itemsize, name=name, dtype=dtype.name, shape=(n,))]
    if n * dtype.itemsize < size:
        segs.append(Segment(VERBATIM, n * dtype.itemsize, size - n * dtype.itemsize))
    return Layout("raw", size, segs, metadata={"dtype_hint": dtype.name})
