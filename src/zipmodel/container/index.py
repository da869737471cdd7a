"""The footer index: segments (JSON) plus chunk and stream tables (packed binary).

The index is what makes random access and ``info`` cheap: a reader seeks to the trailer, reads
this one frame and knows every tensor's dtype, shape and frames without decoding anything.
:meth:`Index.validate` checks every value against the file before anything is allocated or
read on its behalf.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import get_dtype
from ..errors import FormatError, UnsupportedError
from ..readers.base import TENSOR, VERBATIM, Segment
from ..stages import get_transform
from .format import (
    CHUNK_DTYPE,
    FILE_HEADER,
    FORMAT_MAJOR,
    FRAME_HEADER,
    MAX_CHUNK_RAW,
    MAX_RANK,
    MAX_SEGMENTS,
    MAX_STREAMS,
    RAW_CHECK,
    STREAM_DTYPE,
    STREAM_ENTRY,
)

__all__ = ["Index", "SegmentEntry"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SegmentEntry:
    """A segment of the source and the range of chunks that hold it."""

    segment: Segment
    first_chunk: int
    n_chunks: int
    # Index of an earlier segment with the same bytes (format 1.1): this one has no chunks
    # and is restored by copying that one (tied embeddings, repeated tensors).
    dup_of: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = self.segment.to_json()
        d["chunks"] = [self.first_chunk, self.n_chunks]
        if self.dup_of is not None:
            d["dup_of"] = self.dup_of
        return d


@dataclass
class Index:
    source: dict[str, Any]  # name, size, sha256, format
    segments: list[SegmentEntry]
    chunks: np.ndarray  # CHUNK_DTYPE
    streams: np.ndarray  # STREAM_DTYPE
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    flags: int = 0
    writer: str = ""
    format_version: tuple[int, int] = (FORMAT_MAJOR, 0)

    # -- serialisation -------------------------------------------------------------------
    def to_streams(self) -> list[bytes]:
        """The three index streams: JSON, chunk table, stream table."""
        doc = {
            "format": list(self.format_version),
            "writer": self.writer,
            "flags": self.flags,
            "source": self.source,
            "options": self.options,
            "metadata": self.metadata,
            "segments": [s.to_json() for s in self.segments],
        }
        js = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return [js.encode("utf-8"), self.chunks.tobytes(), self.streams.tobytes()]

    @classmethod
    def from_streams(cls, streams: list[bytes], *, path=None) -> Index:
        """Parse the three index streams; structural checks only (see :meth:`validate`)."""
        if len(streams) != 3:
            raise FormatError(f"index has {len(streams)} streams, expected 3", path=path)
        js, ct, st = streams
        try:
            doc = json.loads(bytes(js).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise FormatError(f"index JSON is invalid: {e}", path=path) from None
        if not isinstance(doc, dict):
            raise FormatError("index JSON is not an object", path=path)
        fmt = doc.get("format")
        if not (isinstance(fmt, list) and len(fmt) == 2 and all(type(v) is int for v in fmt)):
            raise FormatError("index has no format version", path=path)
        if fmt[0] != FORMAT_MAJOR:
            raise UnsupportedError(
                f"container format {fmt[0]}.{fmt[1]} is not supported (this zipmodel reads "
                f"{FORMAT_MAJOR}.x)",
                path=path,
                hint="pip install -U zipmodel",
            )
        if len(ct) % CHUNK_DTYPE.itemsize or len(st) % STREAM_DTYPE.itemsize:
            raise FormatError("index tables have a partial row", path=path)
        chunks = np.frombuffer(ct, CHUNK_DTYPE)
        streams_t = np.frombuffer(st, STREAM_DTYPE)
        source = doc.get("source")
        if not isinstance(source, dict):
            raise FormatError("index has no source description", path=path)
        raw_segments = doc.get("segments")
        if not isinstance(raw_segments, list) or len(raw_segments) > MAX_SEGMENTS:
            raise FormatError("index segments are missing or too many", path=path)
        segments = [_parse_segment(i, s, path) for i, s in enumerate(raw_segments)]
        meta = doc.get("metadata", {})
        opts = doc.get("options", {})
        flags = doc.get("flags", 0)
        if not isinstance(meta, dict) or not isinstance(opts, dict) or type(flags) is not int:
            raise FormatError("index metadata, options or flags have the wrong type", path=path)
        return cls(
            source=source,
            segments=segments,
            chunks=chunks,
            streams=streams_t,
            options=opts,
            metadata=meta,
            flags=flags,
            writer=str(doc.get("writer", "")),
            format_version=(fmt[0], fmt[1]),
        )

    # -- validation ----------------------------------------------------------------------
    def validate(self, index_offset: int, *, path=None) -> None:
        """Check every value against the container whose index frame starts at ``index_offset``.

        Afterwards: segments tile ``[0, source.size)``; each segment's chunks tile it; every
        chunk's transform exists and its streams have the sizes that transform implies; frames
        lie in order, without overlap, between the file header and the index.
        """

        def bad(msg: str) -> FormatError:
            return FormatError(f"invalid index: {msg}", path=path)

        size = self.source.get("size")
        if type(size) is not int or size < 0:
            raise bad("source size missing or negative")
        sha = self.source.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise bad("source sha256 missing or malformed")
        ch, st = self.chunks, self.streams
        nch = len(ch)
        # segments tile the source, and their chunk ranges tile the chunk table in order
        pos = 0
        next_chunk = 0
        dup_bytes = 0  # bytes restored by copying, before the current segment
        shift = np.zeros(len(self.segments), np.int64)  # dup bytes before each segment
        for i, e in enumerate(self.segments):
            s = e.segment
            if s.offset != pos:
                raise bad(f"segment {i} starts at {s.offset}, expected {pos}")
            pos += s.size
            shift[i] = dup_bytes
            if e.first_chunk != next_chunk:
                raise bad(f"segment {i} starts at chunk {e.first_chunk}, expected {next_chunk}")
            if e.dup_of is not None:
                if self.format_version[1] < 1:
                    raise bad(f"segment {i} is a duplicate, which format 1.0 does not have")
                ref = self.segments[e.dup_of]
                if ref.dup_of is not None or ref.segment.size != s.size or s.size == 0:
                    raise bad(f"segment {i} duplicates segment {e.dup_of}, which does not fit")
                if e.n_chunks:
                    raise bad(f"duplicate segment {i} has chunks")
                dup_bytes += s.size
                continue
            next_chunk += e.n_chunks
            if next_chunk > nch:
                raise bad(f"segment {i} needs chunks up to {next_chunk}, the table has {nch}")
            if (s.size == 0) != (e.n_chunks == 0):
                raise bad(f"segment {i} of {s.size} bytes has {e.n_chunks} chunks")
        if pos != size:
            raise bad(f"segments cover {pos} bytes, the source has {size}")
        if next_chunk != nch:
            raise bad(f"segments use {next_chunk} chunks, the table has {nch}")
        if nch == 0:
            if len(st):
                raise bad("stream table without chunks")
            return
        raw = ch["raw_size"].astype(np.int64)
        if raw.min() <= 0 or raw.max() > MAX_CHUNK_RAW:
            raise bad(f"a chunk size is outside 1..{MAX_CHUNK_RAW}")
        if int(raw.sum()) != size - dup_bytes:
            raise bad(f"chunks hold {int(raw.sum())} bytes, the source has {size - dup_bytes}")
        src = ch["src_offset"].astype(np.uint64)
        # chunks tile the source in order, skipping duplicate segments (segments tile it too,
        # and chunk ranges follow them)
        per_chunk_shift = np.repeat(shift, [e.n_chunks for e in self.segments])
        expect = (np.concatenate(([0], np.cumsum(raw)[:-1])) + per_chunk_shift).astype(np.uint64)
        if not np.array_equal(src, expect):
            k = int(np.flatnonzero(src != expect)[0])
            raise bad(f"chunk {k} starts at source byte {int(src[k])}, expected {int(expect[k])}")
        for i, e in enumerate(self.segments):
            if e.n_chunks and int(src[e.first_chunk]) != e.segment.offset:
                raise bad(f"segment {i} does not start at its first chunk")
        ns = ch["n_streams"].astype(np.int64)
        if ns.min() < 1 or ns.max() > MAX_STREAMS:
            raise bad(f"a chunk has a stream count outside 1..{MAX_STREAMS}")
        first = ch["first_stream"].astype(np.int64)
        if not np.array_equal(first, np.concatenate(([0], np.cumsum(ns)[:-1]))) or int(
            ns.sum()
        ) != len(st):
            raise bad("stream table does not match the chunks' stream counts")
        # frames in order, no overlap, inside [file header, index)
        fo = ch["frame_offset"].astype(np.uint64)
        fs = ch["frame_size"].astype(np.uint64)
        enc = st["encoded_size"].astype(np.uint64)
        per_chunk_enc = np.add.reduceat(enc, first) if len(enc) else np.zeros(nch, np.uint64)
        overhead = (FRAME_HEADER.size + RAW_CHECK.size + STREAM_ENTRY.size * ns).astype(np.uint64)
        if not np.array_equal(fs, overhead + per_chunk_enc):
            k = int(np.flatnonzero(fs != overhead + per_chunk_enc)[0])
            raise bad(f"chunk {k}: frame size {int(fs[k])} does not match its streams")
        if int(fo[0]) < FILE_HEADER.size:
            raise bad("the first frame overlaps the file header")
        ends = fo + fs
        if nch > 1 and bool((fo[1:] < ends[:-1]).any()):
            k = int(np.flatnonzero(fo[1:] < ends[:-1])[0]) + 1
            raise bad(f"frame of chunk {k} overlaps the frame before it or is out of order")
        if int(ends[-1]) > index_offset:
            raise bad("a frame runs into the index")
        # transforms exist and imply the stream sizes recorded
        dec = st["decoded_size"].astype(np.int64)
        for tid in np.unique(ch["transform"]):
            t = get_transform(int(tid))
            if t is None:
                raise UnsupportedError(
                    f"unknown transform id {int(tid)}", path=path, hint="pip install -U zipmodel"
                )
            rows = np.flatnonzero(ch["transform"] == tid)
            if bool((ns[rows] != t.n_streams).any()):
                raise bad(f"chunks of transform {t.name} have the wrong stream count")
            if bool((raw[rows] % t.itemsize).any()):
                raise bad(f"a {t.name} chunk is not a whole number of elements")
            sizes = t.stream_sizes_array(raw[rows])
            for j in range(t.n_streams):
                if not np.array_equal(dec[first[rows] + j], sizes[:, j]):
                    raise bad(f"a {t.name} chunk has stream {j} of the wrong size")


def _parse_segment(i: int, s: Any, path) -> SegmentEntry:
    def bad(msg: str) -> FormatError:
        return FormatError(f"invalid index: segment {i} {msg}", path=path)

    if not isinstance(s, dict):
        raise bad("is not an object")
    kind, off, size, chunks = s.get("kind"), s.get("offset"), s.get("size"), s.get("chunks")
    if kind not in (VERBATIM, TENSOR):
        raise bad(f"has unknown kind {kind!r}")
    if type(off) is not int or type(size) is not int or off < 0 or size < 0:
        raise bad("has an invalid offset or size")
    if not (
        isinstance(chunks, list)
        and len(chunks) == 2
        and all(type(c) is int and c >= 0 for c in chunks)
    ):
        raise bad("has an invalid chunk range")
    dup = s.get("dup_of")
    if dup is not None and (type(dup) is not int or not 0 <= dup < i):
        raise bad(f"has an invalid dup_of {dup!r} (must name an earlier segment)")
    if kind == VERBATIM:
        return SegmentEntry(Segment(VERBATIM, off, size), chunks[0], chunks[1], dup)
    name, dtype, shape = s.get("name"), s.get("dtype"), s.get("shape")
    if not isinstance(name, str) or not isinstance(dtype, str):
        raise bad("has no tensor name or dtype")
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_RANK
        and all(type(d) is int and d >= 0 for d in shape)
    ):
        raise bad(f"has an invalid shape {shape!r}")
    dt = get_dtype(dtype)
    if dt is not None and dt.nbytes(tuple(shape)) != size:
        raise bad(f"({dtype} {shape}) needs {dt.nbytes(tuple(shape))} bytes, not {size}")
    return SegmentEntry(
        Segment(TENSOR, off, size, name, dtype, tuple(shape)), chunks[0], chunks[1], dup
    )
