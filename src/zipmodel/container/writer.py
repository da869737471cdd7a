"""Writing a container front to back (works on pipes: nothing is ever seeked)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from .._checksum import xxh3_64
from .format import (
    FILE_HEADER,
    FILE_MAGIC,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    INDEX_MAGIC,
    TRAILER,
    TRAILER_MAGIC,
)
from .frames import StreamInfo, build_frame
from .index import Index

__all__ = ["ContainerWriter"]

_INDEX_ZSTD_LEVEL = 9  # the index is small and read once: spend a little on it


class ContainerWriter:
    """Append-only writer: file header, chunk frames in source order, index, trailer."""

    def __init__(self, out: BinaryIO, *, flags: int = 0, minor: int = 0):
        """``minor``: the format minor version the file needs (the oldest that can read it).

        ``minor`` and ``flags`` may still change before :meth:`finish` when the output can
        seek back (``patchable``): a writer learns what the file needs only as it codes it.
        """
        if not 0 <= minor <= FORMAT_MINOR:
            raise ValueError(f"format minor version {minor} is outside 0..{FORMAT_MINOR}")
        self._out = out
        self.pos = 0
        self.minor = minor
        self.flags = flags
        try:
            self._start: int | None = out.tell() if out.seekable() else None
        except (AttributeError, OSError, ValueError):
            self._start = None
        self._write([FILE_HEADER.pack(FILE_MAGIC, FORMAT_MAJOR, minor, flags)])

    @property
    def patchable(self) -> bool:
        """Whether the file header can be rewritten at :meth:`finish` (a seekable output)."""
        return self._start is not None

    def _write(self, parts: Sequence) -> int:
        n = 0
        for p in parts:
            mv = memoryview(p).cast("B")
            self._out.write(mv)
            n += mv.nbytes
        self.pos += n
        return n

    def write_frame(self, parts: Sequence) -> tuple[int, int]:
        """Append a frame built by :func:`build_frame`; returns ``(offset, size)``."""
        offset = self.pos
        return offset, self._write(parts)

    def finish(self, index: Index) -> int:
        """Write the index frame and the trailer; returns the container's total size.

        The file header gets the index's version and flags (rewritten if they changed).
        """
        import zstandard

        minor, flags = index.format_version[1], index.flags
        if (minor, flags) != (self.minor, self.flags):
            if self._start is None:
                raise ValueError("the file header was written with another version or flags")
            end = self._out.tell()
            self._out.seek(self._start)
            self._out.write(FILE_HEADER.pack(FILE_MAGIC, FORMAT_MAJOR, minor, flags))
            self._out.seek(end)
            self.minor, self.flags = minor, flags

        cctx = zstandard.ZstdCompressor(level=_INDEX_ZSTD_LEVEL, write_content_size=True)
        raw_streams = index.to_streams()
        payloads, infos = [], []
        for s in raw_streams:
            z = cctx.compress(s)
            payloads.append(z)
            infos.append(
                StreamInfo(codec=2, context=0xFF, decoded_size=len(s), encoded_size=len(z))
            )
        check = xxh3_64(b"".join(raw_streams))
        parts = build_frame(
            INDEX_MAGIC, 0, 0, sum(len(s) for s in raw_streams), check, infos, payloads
        )
        offset, size = self.write_frame(parts)
        self._write([TRAILER.pack(offset, size, TRAILER_MAGIC)])
        return self.pos
