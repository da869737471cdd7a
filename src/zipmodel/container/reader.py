"""Reading a container: header and trailer first, then the index, then frames on demand.

Every size read from the file is checked against the file before it is used: a damaged or
hostile container raises :class:`~zipmodel.errors.FormatError` (or ``CorruptDataError``)
naming the file and the problem, without large allocations and without hanging.
"""

from __future__ import annotations

import io
import os
import threading
from typing import BinaryIO

import numpy as np

from .._checksum import xxh3_64
from ..errors import CorruptDataError, FormatError, UnsupportedError
from .format import (
    CHUNK_DTYPE,
    FILE_HEADER,
    FILE_MAGIC,
    FLAGS_REQUIRED_MASK,
    FORMAT_MAJOR,
    FRAME_HEADER,
    INDEX_MAGIC,
    MAX_INDEX_FRAME,
    MAX_INDEX_RATIO,
    RAW_CHECK,
    STREAM_DTYPE,
    STREAM_ENTRY,
    TRAILER,
    TRAILER_MAGIC,
)
from .frames import HEADROOM, frame_buffer, parse_frame
from .index import MAX_INDEX_JSON, Index

__all__ = ["KNOWN_FLAGS", "ContainerReader", "decode_index_frame", "is_container"]

KNOWN_FLAGS = 0x1  # FLAG_LOSSY


def is_container(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts like a zipmodel container."""
    return head[: len(FILE_MAGIC)] == FILE_MAGIC


def check_file_header(buf: bytes, *, path=None) -> tuple[int, int]:
    """Validate the 16-byte file header; returns ``(minor version, flags)``."""
    if len(buf) < FILE_HEADER.size:
        raise FormatError(
            f"file is too short for a zipmodel container ({len(buf)} bytes)", path=path
        )
    magic, major, minor, flags = FILE_HEADER.unpack_from(buf)
    if magic != FILE_MAGIC:
        raise FormatError(
            "not a zipmodel container (bad magic)",
            path=path,
            hint="compress it with: zipmodel compress FILE",
        )
    if major != FORMAT_MAJOR:
        raise UnsupportedError(
            f"container format {major}.{minor} is not supported (this zipmodel reads {FORMAT_MAJOR}.x)",
            path=path,
            hint="pip install -U zipmodel",
        )
    unknown = flags & FLAGS_REQUIRED_MASK & ~KNOWN_FLAGS
    if unknown:
        raise UnsupportedError(f"container uses unknown features (flags {unknown:#x})", path=path)
    return minor, flags


def decode_index_frame(buf, *, path=None, offset: int | None = None) -> Index:
    """Decode an index frame (checksums, bounded decompression) into an :class:`Index`."""
    import zstandard

    frame = parse_frame(buf, path=path, offset=offset, one_shot=True)
    if frame.header.magic != INDEX_MAGIC:
        raise FormatError("expected the index frame", path=path, offset=offset)
    if frame.header.transform or frame.header.src_offset:
        raise FormatError(
            f"index frame has transform {frame.header.transform} and src_offset "
            f"{frame.header.src_offset} (both must be 0)",
            path=path,
            offset=offset,
        )
    parts = []
    caps = _index_stream_caps(offset)
    for j, (s, payload) in enumerate(zip(frame.streams, frame.payloads)):
        limit = MAX_INDEX_RATIO * s.encoded_size + (1 << 20)
        if s.decoded_size > limit:
            raise FormatError(
                f"index stream claims {s.decoded_size} bytes from {s.encoded_size}",
                path=path,
                offset=offset,
            )
        if j < len(caps) and s.decoded_size > caps[j][0]:
            raise FormatError(
                f"index {caps[j][1]} of {s.decoded_size} bytes is over its limit of "
                f"{caps[j][0]} bytes",
                path=path,
                offset=offset,
            )
        if s.codec == 0:
            data = bytes(payload)
        elif s.codec == 2:
            try:
                params = zstandard.get_frame_parameters(payload)
                if params.content_size != s.decoded_size:
                    raise FormatError("index stream size mismatch", path=path, offset=offset)
                data = zstandard.ZstdDecompressor().decompress(
                    payload, max_output_size=s.decoded_size
                )
            except zstandard.ZstdError as e:
                raise CorruptDataError(
                    f"index stream is corrupt: {e}", path=path, offset=offset
                ) from None
        else:
            raise FormatError(f"index stream uses codec {s.codec}", path=path, offset=offset)
        if len(data) != s.decoded_size:
            raise CorruptDataError("index stream has the wrong size", path=path, offset=offset)
        parts.append(data)
    if xxh3_64(b"".join(parts)) != frame.raw_check:
        raise CorruptDataError("index content checksum mismatch", path=path, offset=offset)
    if parts:  # the JSON as text; its bytes are freed before it is parsed
        try:
            parts[0] = parts[0].decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError(f"index JSON is invalid: {e}", path=path) from None
    return Index.from_streams(parts, path=path)


def _index_stream_caps(index_offset: int | None) -> list[tuple[int, str]]:
    """Most bytes each index stream may decode to, before it is decompressed: the JSON
    :data:`MAX_INDEX_JSON`; the chunk and stream tables what the frames before the index
    can hold (a chunk frame takes at least 52 bytes, a stream entry 12)."""
    caps = [(MAX_INDEX_JSON, "JSON")]
    if index_offset is not None:
        room = max(index_offset - FILE_HEADER.size, 0)
        min_frame = FRAME_HEADER.size + STREAM_ENTRY.size + RAW_CHECK.size
        caps.append((CHUNK_DTYPE.itemsize * (room // min_frame), "chunk table"))
        caps.append((STREAM_DTYPE.itemsize * (room // STREAM_ENTRY.size), "stream table"))
    return caps


class ContainerReader:
    """Random access to a container held in a seekable binary file (or a path).

    Thread-safe: frames are read with ``os.pread`` when the file has a descriptor, else under
    a lock. ``close()`` closes the file only if this object opened it.
    """

    def __init__(
        self,
        file: str | os.PathLike | BinaryIO | bytes | bytearray | memoryview,
        *,
        name: str | None = None,
    ):
        self._lock = threading.Lock()
        self._mem: memoryview | None = None  # an in-memory container: frames are sliced
        self._views: list[memoryview] = []  # released by close()
        if isinstance(file, io.BytesIO):
            file = file.getbuffer()
            self._views.append(file)
        if isinstance(file, (bytes, bytearray, memoryview)):
            self.name = name or "<bytes>"
            self._mem = memoryview(file).cast("B")
            self._views.insert(0, self._mem)
            self._f = None  # type: ignore[assignment]
            self._owns = False
            self._fd = -1
            try:
                self._open()
            except BaseException:
                self.close()
                raise
            return
        if isinstance(file, (str, os.PathLike)):
            self.name = os.fspath(file)
            try:
                self._f: BinaryIO = open(file, "rb")  # noqa: SIM115 (closed by close())
            except FileNotFoundError:
                raise FormatError("no such file", path=self.name) from None
            except IsADirectoryError:
                raise FormatError("is a directory", path=self.name) from None
            self._owns = True
        else:
            self.name = name or getattr(file, "name", "<stream>")
            self._f = file
            self._owns = False
        try:
            self._fd = self._f.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            self._fd = -1
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- low level -----------------------------------------------------------------------
    def _pread(self, offset: int, size: int) -> bytes:
        if self._mem is not None:
            data = bytes(self._mem[offset : offset + size])
        elif self._fd >= 0:
            out = bytearray()
            while len(out) < size:
                b = os.pread(self._fd, size - len(out), offset + len(out))
                if not b:
                    break
                out += b
            data = bytes(out)
        else:
            with self._lock:
                self._f.seek(offset)
                data = self._f.read(size)
        if len(data) != size:
            raise FormatError(
                f"file is truncated: wanted {size} bytes", path=self.name, offset=offset
            )
        self.bytes_read += size
        return data

    def _open(self) -> None:
        self.bytes_read = 0
        if self._mem is not None:
            self.file_size = len(self._mem)
        else:
            self._f.seek(0, os.SEEK_END)
            self.file_size = self._f.tell()
        path = self.name
        if self.file_size < FILE_HEADER.size + TRAILER.size:
            head = self._pread(0, min(self.file_size, FILE_HEADER.size))
            if not is_container(head):
                raise FormatError("not a zipmodel container (bad magic)", path=path)
            raise FormatError(f"file is truncated ({self.file_size} bytes)", path=path)
        minor, self.flags = check_file_header(self._pread(0, FILE_HEADER.size), path=path)
        idx_off, idx_size, magic = TRAILER.unpack(
            self._pread(self.file_size - TRAILER.size, TRAILER.size)
        )
        if magic != TRAILER_MAGIC:
            raise FormatError("trailer missing: the file is truncated or not finished", path=path)
        if idx_size < FRAME_HEADER.size or idx_size > MAX_INDEX_FRAME:
            raise FormatError(f"index frame size {idx_size} is out of range", path=path)
        if idx_off < FILE_HEADER.size or idx_off + idx_size + TRAILER.size != self.file_size:
            raise FormatError(
                f"index at {idx_off} (+{idx_size}) does not end at the trailer", path=path
            )
        self.index_offset = idx_off
        self.index = decode_index_frame(self._pread(idx_off, idx_size), path=path, offset=idx_off)
        # The file header is not checksummed: every field must agree with the (checked) index.
        if self.index.flags != self.flags or self.index.format_version != (FORMAT_MAJOR, minor):
            raise FormatError("file header and index disagree (version or flags)", path=path)
        self.index.validate(idx_off, path=path)

    # -- frames --------------------------------------------------------------------------
    def read_frame_into(self, chunk: int) -> tuple[np.ndarray, int]:
        """Read chunk ``chunk``'s frame into this thread's frame buffer (see ``frames``).

        Returns ``(buffer, size)``: the frame is at ``buffer[HEADROOM:HEADROOM + size]``.
        """
        row = self.index.chunks[chunk]
        offset, size = int(row["frame_offset"]), int(row["frame_size"])
        fb = frame_buffer(size)
        view = memoryview(fb)[HEADROOM : HEADROOM + size]
        got = 0
        if self._mem is not None:
            got = max(0, min(size, len(self._mem) - offset))
            # numpy copies without holding the GIL (a memoryview slice assignment holds it)
            fb[HEADROOM : HEADROOM + got] = np.frombuffer(self._mem, np.uint8, got, offset)
        elif self._fd >= 0:
            while got < size:
                n = os.preadv(self._fd, [view[got:]], offset + got)
                if n <= 0:
                    break
                got += n
        else:
            with self._lock:
                self._f.seek(offset)
                while got < size:
                    n = self._f.readinto(view[got:])
                    if not n:
                        break
                    got += n
        if got != size:
            raise FormatError(
                f"file is truncated: wanted {size} bytes", path=self.name, offset=offset
            )
        self.bytes_read += size
        return fb, size

    def chunk_rows(self) -> np.ndarray:
        return self.index.chunks

    def close(self) -> None:
        self._mem = None
        for v in self._views:
            v.release()
        self._views.clear()
        if self._owns:
            self._f.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
