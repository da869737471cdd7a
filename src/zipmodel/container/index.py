"""The footer index: segments (JSON) plus chunk and stream tables (packed binary).

The index is what makes random access and ``info`` cheap: a reader seeks to the trailer, reads
this one frame and knows every tensor's dtype, shape and frames without decoding anything.
:meth:`Index.validate` checks every value against the file before anything is allocated or
read on its behalf.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..dtypes import get_dtype
from ..errors import FormatError, UnsupportedError
from ..readers.base import (
    MAX_INDEX_JSON,
    MAX_INDEX_OBJECTS,
    MAX_INDEX_SEGMENTS,
    TENSOR,
    VERBATIM,
    Segment,
)
from ..stages import get_stage, get_transform
from .format import (
    CHUNK_DTYPE,
    FILE_HEADER,
    FLAG_LOSSY,
    FORMAT_MAJOR,
    FRAME_HEADER,
    MAX_CHUNK_RAW,
    MAX_RANK,
    MAX_STREAMS,
    RAW_CHECK,
    STREAM_DTYPE,
    STREAM_ENTRY,
)

__all__ = [
    "MAX_INDEX_JSON",
    "MAX_INDEX_OBJECTS",
    "MAX_INDEX_SEGMENTS",
    "Index",
    "PartRecord",
    "SegmentEntry",
    "StageRecord",
]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHECK = re.compile(r"^[0-9a-f]{16}$")
MAX_PARTS = 16  # parts one staged tensor may have
STAGES_MINOR = 2  # tensor stages need format 1.2


@dataclass(frozen=True)
class PartRecord:
    """One part of a staged tensor (format 1.2): its element type, shape, size and chunks."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    size: int
    first_chunk: int
    n_chunks: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "size": self.size,
            "chunks": [self.first_chunk, self.n_chunks],
        }


@dataclass(frozen=True)
class StageRecord:
    """How a tensor segment is stored when a tensor stage transformed it (format 1.2).

    ``check`` is XXH3-64 (seed 0) of the tensor's bytes as decoding gives them back: the
    dequantized values for a lossy stage (the source's SHA-256 cannot vouch for those), the
    original bytes for a lossless one. ``quality`` is the stage's measured error, if lossy.
    """

    name: str
    params: dict[str, Any]
    parts: tuple[PartRecord, ...]
    check: int
    quality: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "params": self.params,
            "parts": [p.to_json() for p in self.parts],
            "check": f"{self.check:016x}",
        }
        if self.quality is not None:
            d["quality"] = self.quality
        return d


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """A segment of the source and the range of chunks that hold it."""

    segment: Segment
    first_chunk: int
    n_chunks: int
    # Index of an earlier segment with the same bytes (format 1.1): this one has no chunks
    # and is restored by copying that one (tied embeddings, repeated tensors).
    dup_of: int | None = None
    # The tensor stage this segment went through (format 1.2): its chunks then hold the
    # stage's parts, one after the other, instead of the segment's bytes.
    stage: StageRecord | None = None

    def to_json(self) -> dict[str, Any]:
        d = self.segment.to_json()
        d["chunks"] = [self.first_chunk, self.n_chunks]
        if self.dup_of is not None:
            d["dup_of"] = self.dup_of
        if self.stage is not None:
            d["stage"] = self.stage.to_json()
        return d

    def chunk_groups(self) -> list[tuple[int, int, int]]:
        """``(first chunk, n_chunks, bytes)`` of each run of chunks that tiles one byte range
        starting at the segment's offset: the segment itself, or each part of its stage."""
        if self.stage is None:
            return [(self.first_chunk, self.n_chunks, self.segment.size)]
        return [(p.first_chunk, p.n_chunks, p.size) for p in self.stage.parts]


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
    # The base model the tensor stages were given (delta stages): {"name", "sha256"} (1.2).
    base: dict[str, Any] | None = None

    @property
    def lossy(self) -> bool:
        """Whether the file was made with lossy stages (its restored bytes are not the source)."""
        return bool(self.flags & FLAG_LOSSY)

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
        if self.base is not None:
            doc["base"] = self.base
        js = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return [js.encode("utf-8"), self.chunks.tobytes(), self.streams.tobytes()]

    @classmethod
    def from_streams(cls, streams: list, *, path=None) -> Index:
        """Parse the three index streams (the JSON as bytes or text); structural checks only
        (see :meth:`validate`)."""
        if len(streams) != 3:
            raise FormatError(f"index has {len(streams)} streams, expected 3", path=path)
        js, ct, st = streams
        if len(js) > MAX_INDEX_JSON:
            raise FormatError(
                f"index JSON of {len(js)} bytes is over the {MAX_INDEX_JSON}-byte limit", path=path
            )
        doc = _load_json(js, path)
        streams[0] = js = None  # the text is no longer needed
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
        if not isinstance(raw_segments, list):
            raise FormatError("index segments are missing", path=path)
        if len(raw_segments) > MAX_INDEX_SEGMENTS:
            raise FormatError(
                f"index lists {len(raw_segments)} segments, over the limit of {MAX_INDEX_SEGMENTS}",
                path=path,
            )
        # parsed in place: each JSON object is freed as soon as its entry exists
        segments: list[Any] = raw_segments
        for i, s in enumerate(segments):
            segments[i] = _parse_segment(i, s, path)
        meta = doc.get("metadata", {})
        opts = doc.get("options", {})
        flags = doc.get("flags", 0)
        if not isinstance(meta, dict) or not isinstance(opts, dict) or type(flags) is not int:
            raise FormatError("index metadata, options or flags have the wrong type", path=path)
        base = doc.get("base")
        if base is not None and not (
            isinstance(base, dict)
            and isinstance(base.get("sha256"), str)
            and _SHA256.match(base["sha256"])
        ):
            raise FormatError("index base record is malformed", path=path)
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
            base=base,
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

        size = self._check_source(bad)
        groups = self._check_segments(size, bad, path)
        if not len(self.chunks):
            if len(self.streams):
                raise bad("stream table without chunks")
            return
        raw, ns, first = self._check_chunk_table(groups, bad)
        self._check_frames(index_offset, ns, first, bad)
        self._check_transforms(raw, ns, first, bad, path)

    def _check_source(self, bad) -> int:
        size = self.source.get("size")
        if type(size) is not int or size < 0:
            raise bad("source size missing or negative")
        sha = self.source.get("sha256")
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise bad("source sha256 missing or malformed")
        return size

    def _check_segments(self, size: int, bad, path) -> tuple[list[int], list[int], list[int]]:
        """Segments tile the source. Each non-duplicate segment's chunks are consecutive and
        follow the previous segment's; they form *groups*, each tiling one byte range that
        starts at the segment's offset: the segment's bytes, or each part of its stage.
        Returns the groups as (source offsets, chunk counts, bytes)."""
        nch = len(self.chunks)
        pos = 0
        next_chunk = 0
        starts: list[int] = []  # per group: source offset its chunks start at
        counts: list[int] = []  # per group: chunks
        nbytes: list[int] = []  # per group: bytes its chunks hold
        lossy = False
        for i, e in enumerate(self.segments):
            s = e.segment
            if s.offset != pos:
                raise bad(f"segment {i} starts at {s.offset}, expected {pos}")
            pos += s.size
            if e.first_chunk != next_chunk:
                raise bad(f"segment {i} starts at chunk {e.first_chunk}, expected {next_chunk}")
            if e.dup_of is not None:
                if self.format_version[1] < 1:
                    raise bad(f"segment {i} is a duplicate, which format 1.0 does not have")
                ref = self.segments[e.dup_of]
                if ref.dup_of is not None or ref.segment.size != s.size or s.size == 0:
                    raise bad(f"segment {i} duplicates segment {e.dup_of}, which does not fit")
                if e.n_chunks or e.stage is not None:
                    raise bad(f"duplicate segment {i} has chunks or a stage")
                continue
            if e.stage is not None:
                lossy |= self._check_stage(i, e, bad, path)
            for first, n, size_ in e.chunk_groups():
                if first != next_chunk:
                    raise bad(f"segment {i}: a part starts at chunk {first}, expected {next_chunk}")
                next_chunk += n
                if next_chunk > nch:
                    raise bad(f"segment {i} needs chunks up to {next_chunk}, the table has {nch}")
                if (size_ == 0) != (n == 0):
                    raise bad(f"segment {i}: {size_} bytes in {n} chunks")
                if n:
                    starts.append(s.offset)
                    counts.append(n)
                    nbytes.append(size_)
            if next_chunk != e.first_chunk + e.n_chunks:
                raise bad(
                    f"segment {i} has {e.n_chunks} chunks, its parts {next_chunk - e.first_chunk}"
                )
        if pos != size:
            raise bad(f"segments cover {pos} bytes, the source has {size}")
        if next_chunk != nch:
            raise bad(f"segments use {next_chunk} chunks, the table has {nch}")
        if lossy and not self.flags & FLAG_LOSSY:
            raise bad("a tensor went through a lossy stage but the lossy flag is not set")
        return starts, counts, nbytes

    def _check_chunk_table(self, groups, bad) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reserved fields, chunk sizes, chunks tiling their groups, stream counts. Returns the
        chunks' raw sizes, stream counts and first streams (int64)."""
        starts, counts, nbytes = groups
        ch, st = self.chunks, self.streams
        if bool(ch["flags"].any()):
            k = int(np.flatnonzero(ch["flags"])[0])
            raise bad(f"chunk {k} has flags {int(ch['flags'][k]):#x} (must be 0)")
        if bool(st["reserved"].any()):
            k = int(np.flatnonzero(st["reserved"])[0])
            raise bad(f"stream {k} has reserved field {int(st['reserved'][k]):#x} (must be 0)")
        raw = ch["raw_size"].astype(np.int64)
        if raw.min() <= 0 or raw.max() > MAX_CHUNK_RAW:
            raise bad(f"a chunk size is outside 1..{MAX_CHUNK_RAW}")
        src = ch["src_offset"].astype(np.uint64)
        # within each group, chunks tile [start, start + bytes) in order
        cnt = np.array(counts, np.int64)
        first_of = np.concatenate(([0], np.cumsum(cnt)[:-1]))
        before = np.concatenate(([0], np.cumsum(raw)[:-1]))  # bytes of all earlier chunks
        within = before - np.repeat(before[first_of], cnt)
        expect = (np.repeat(np.array(starts, np.int64), cnt) + within).astype(np.uint64)
        if not np.array_equal(src, expect):
            k = int(np.flatnonzero(src != expect)[0])
            raise bad(f"chunk {k} starts at source byte {int(src[k])}, expected {int(expect[k])}")
        held = np.add.reduceat(raw, first_of)
        if not np.array_equal(held, np.array(nbytes, np.int64)):
            k = int(np.flatnonzero(held != np.array(nbytes, np.int64))[0])
            raise bad(
                f"chunks {int(first_of[k])}.. hold {int(held[k])} bytes, expected {nbytes[k]}"
            )
        ns = ch["n_streams"].astype(np.int64)
        if ns.min() < 1 or ns.max() > MAX_STREAMS:
            raise bad(f"a chunk has a stream count outside 1..{MAX_STREAMS}")
        first = ch["first_stream"].astype(np.int64)
        if not np.array_equal(first, np.concatenate(([0], np.cumsum(ns)[:-1]))) or int(
            ns.sum()
        ) != len(st):
            raise bad("stream table does not match the chunks' stream counts")
        return raw, ns, first

    def _check_frames(self, index_offset: int, ns, first, bad) -> None:
        """Frames in order, no overlap, inside [file header, index)."""
        ch, st = self.chunks, self.streams
        nch = len(ch)
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

    def _check_transforms(self, raw, ns, first, bad, path) -> None:
        """Transforms exist and imply the stream sizes recorded."""
        ch, st = self.chunks, self.streams
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

    def _check_stage(self, i: int, e: SegmentEntry, bad, path) -> bool:
        """Check segment ``i``'s stage record against its stage; returns whether it is lossy."""
        s, rec = e.segment, e.stage
        assert rec is not None
        if self.format_version[1] < STAGES_MINOR:
            raise bad(
                f"segment {i} has a tensor stage, which format 1.{self.format_version[1]} does not have"
            )
        if s.kind != TENSOR or s.size == 0:
            raise bad(f"segment {i} has a stage but is not a non-empty tensor")
        cls = get_stage(rec.name)
        if cls is None:
            raise FormatError(
                f"invalid index: segment {i} uses the unknown tensor stage {rec.name!r}",
                path=path,
                hint="the file may come from a newer zipmodel: pip install -U zipmodel",
            )
        try:
            want = [int(n) for n in cls().part_sizes(s, rec.params)]
        except Exception as exc:  # hostile params may break a stage's arithmetic anywhere
            raise bad(f"segment {i}: {rec.name} params do not fit the tensor ({exc})") from None
        got = [p.size for p in rec.parts]
        if want != got:
            raise bad(f"segment {i}: {rec.name} parts have {got} bytes, its params imply {want}")
        if cls.elementwise and (len(rec.parts) != 1 or rec.parts[0].size != s.size):
            raise bad(f"segment {i}: elementwise stage {rec.name} needs one part of {s.size} bytes")
        for p in rec.parts:
            dt = get_dtype(p.dtype)
            if dt is None or dt.unit_bytes == 0 or p.size % dt.unit_bytes:
                raise bad(f"segment {i}: part {p.name!r} of {p.size} bytes has dtype {p.dtype!r}")
            if p.shape and dt.nbytes(p.shape) != p.size:
                raise bad(
                    f"segment {i}: part {p.name!r} ({p.dtype} {list(p.shape)}) is not {p.size} bytes"
                )
        return bool(cls.lossy)


class _TooMany(Exception):
    pass


def _load_json(js: bytes | str, path) -> Any:
    """Parse the index JSON without building more than :data:`MAX_INDEX_OBJECTS` objects or
    :data:`MAX_INDEX_SEGMENTS` segment-shaped ones (``kind``, ``offset`` and ``chunks``):
    parsing stops at the first one over. Every object needs a ``{`` byte, so a JSON with few
    of them (every usual file) takes the plain, fast parser."""
    try:
        text = js if isinstance(js, str) else bytes(js).decode("utf-8")
        if text.count("{") <= MAX_INDEX_SEGMENTS:
            return json.loads(text)
        objects = segments = 0

        def hook(pairs: list) -> dict:
            nonlocal objects, segments
            d = dict(pairs)
            objects += 1
            if "chunks" in d and "kind" in d and "offset" in d:
                segments += 1
            if objects > MAX_INDEX_OBJECTS or segments > MAX_INDEX_SEGMENTS:
                raise _TooMany
            return d

        return json.loads(text, object_pairs_hook=hook)
    except _TooMany:
        raise FormatError(
            f"index JSON holds more than {MAX_INDEX_SEGMENTS} segments or {MAX_INDEX_OBJECTS} "
            "objects",
            path=path,
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FormatError(f"index JSON is invalid: {e}", path=path) from None


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
    stage = _parse_stage(s["stage"], bad) if "stage" in s else None
    if kind == VERBATIM:
        if stage is not None:
            raise bad("is verbatim but has a tensor stage")
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
        Segment(TENSOR, off, size, name, sys.intern(dtype), tuple(shape)),
        chunks[0],
        chunks[1],
        dup,
        stage,
    )


def _chunk_range(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(type(c) is int and c >= 0 for c in v)


def _shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) <= MAX_RANK and all(type(d) is int and d >= 0 for d in v)


def _parse_stage(st: Any, bad) -> StageRecord:
    """Types of a stage record; :meth:`Index.validate` checks it against its stage."""
    if not isinstance(st, dict):
        raise bad("has a stage record that is not an object")
    name, params, parts, check = st.get("name"), st.get("params"), st.get("parts"), st.get("check")
    quality = st.get("quality")
    if not isinstance(name, str) or not isinstance(params, dict):
        raise bad("has a stage without a name or params")
    if not isinstance(check, str) or not _CHECK.match(check):
        raise bad("has a stage without a valid check")
    if quality is not None and not isinstance(quality, dict):
        raise bad("has a stage quality that is not an object")
    if not isinstance(parts, list) or len(parts) > MAX_PARTS:
        raise bad(f"has a stage whose parts are missing or more than {MAX_PARTS}")
    out = []
    for p in parts:
        if not (
            isinstance(p, dict)
            and isinstance(p.get("name"), str)
            and isinstance(p.get("dtype"), str)
            and _shape(p.get("shape"))
            and type(p.get("size")) is int
            and p["size"] >= 0
            and _chunk_range(p.get("chunks"))
        ):
            raise bad(f"has a malformed stage part {p!r:.200}")
        out.append(PartRecord(p["name"], p["dtype"], tuple(p["shape"]), p["size"], *p["chunks"]))
    return StageRecord(name, params, tuple(out), int(check, 16), quality)
