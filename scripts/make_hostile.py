"""Write tests/hostile/: damaged and hostile containers, each with the error it must raise.

Run once (``python scripts/make_hostile.py``); tests only read the files. Each case is a
small file plus an entry in MANIFEST.json: the exception class and a fragment of its message.
Every file must fail fast, with a clear message, without a big allocation.
"""

from __future__ import annotations

import io
import json
import struct
import sys
from pathlib import Path

import numpy as np
import xxhash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import edgecases  # noqa: E402
from zipmodel.api import compress_bytes  # noqa: E402
from zipmodel.container.format import (  # noqa: E402
    CHUNK_MAGIC,
    FRAME_HEADER,
    INDEX_MAGIC,
    NO_CONTEXT,
    TRAILER,
    TRAILER_MAGIC,
)
from zipmodel.container.frames import StreamInfo, build_frame  # noqa: E402
from zipmodel.container.reader import ContainerReader  # noqa: E402

OUT = ROOT / "tests" / "hostile"


def base_container() -> bytes:
    data = edgecases.safetensors_bytes(
        [
            (
                "w",
                "BF16",
                [64, 64],
                (
                    np.random.default_rng(0)
                    .standard_normal(4096)
                    .astype(np.float32)
                    .view(np.uint32)
                    >> 16
                )
                .astype(np.uint16)
                .tobytes(),
            ),
            ("b", "F32", [16], np.arange(16, dtype=np.float32).tobytes()),
        ],
        metadata={"format": "pt"},
    )
    return compress_bytes(data, chunk_size=4096, threads=1)


def split(blob: bytes):
    r = ContainerReader(io.BytesIO(blob))
    return r.index, blob[: r.index_offset]


def index_frame(streams: list[bytes], *, codec=0, declared=None) -> bytes:
    infos = [StreamInfo(codec, NO_CONTEXT, declared or len(s), len(s)) for s in streams]
    h = xxhash.xxh3_64()
    for s in streams:
        h.update(s)
    return b"".join(
        bytes(p)
        for p in build_frame(
            INDEX_MAGIC, 0, 0, sum(len(s) for s in streams), h.intdigest(), infos, streams
        )
    )


def with_index(prefix: bytes, streams: list[bytes], **kw) -> bytes:
    fr = index_frame(streams, **kw)
    return prefix + fr + TRAILER.pack(len(prefix), len(fr), TRAILER_MAGIC)


def mutate_index(blob: bytes, fn) -> bytes:
    index, prefix = split(blob)
    js, ct, st = index.to_streams()
    doc = json.loads(js)
    chunks = np.frombuffer(ct, index.chunks.dtype).copy()
    streams = np.frombuffer(st, index.streams.dtype).copy()
    res = fn(doc, chunks, streams)
    if res is not None:
        doc, chunks, streams = res
    return with_index(prefix, [json.dumps(doc).encode(), chunks.tobytes(), streams.tobytes()])


def replace_chunk_frame(blob: bytes, k: int, make_frame) -> bytes:
    """Swap chunk ``k``'s frame for another of the same size-class and fix up the index."""
    index, prefix = split(blob)
    row = index.chunks[k]
    off, size = int(row["frame_offset"]), int(row["frame_size"])
    new = make_frame(row)
    prefix = prefix[:off] + new + prefix[off + size :]
    delta = len(new) - size

    def fix(doc, chunks, streams):
        chunks["frame_size"][k] = len(new)
        chunks["frame_offset"][k + 1 :] = (
            chunks["frame_offset"][k + 1 :].astype(np.int64) + delta
        ).astype(np.uint64)
        n = int(chunks["n_streams"][k])
        f = int(chunks["first_stream"][k])
        body = new[FRAME_HEADER.size :]
        for j in range(n):
            codec, ctx, _r, dec, enc = struct.unpack_from("<BBHII", body, 12 * j)
            streams[f + j] = (codec, ctx, 0, dec, enc)

    js, ct, st = index.to_streams()
    doc = json.loads(js)
    chunks = np.frombuffer(ct, index.chunks.dtype).copy()
    streams = np.frombuffer(st, index.streams.dtype).copy()
    fix(doc, chunks, streams)
    return with_index(prefix, [json.dumps(doc).encode(), chunks.tobytes(), streams.tobytes()])


def frame_for(
    row, *, transform=None, codecs=None, payloads=None, decoded=None, raw_check=None
) -> bytes:
    t = int(row["transform"]) if transform is None else transform
    n = int(row["n_streams"])
    raw_size = int(row["raw_size"])
    per = raw_size // n
    payloads = payloads or [bytes(per)] * n
    codecs = codecs or [0] * n
    decoded = decoded or [per] * n
    infos = [StreamInfo(c, NO_CONTEXT, d, len(p)) for c, d, p in zip(codecs, decoded, payloads)]
    check = 0 if raw_check is None else raw_check
    return b"".join(
        bytes(p)
        for p in build_frame(
            CHUNK_MAGIC, t, int(row["src_offset"]), raw_size, check, infos, payloads
        )
    )


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.zm"):
        old.unlink()
    good = base_container()
    index, prefix = split(good)
    cases: dict[str, tuple[bytes, str, str]] = {}

    def case(name, blob, exc, fragment):
        cases[name] = (blob, exc, fragment)

    case("empty", b"", "FormatError", "not a zipmodel container")
    case("bad_magic", b"\x89ZMODEX\n" + good[8:], "FormatError", "bad magic")
    case("text_file", b"hello world, this is not a container at all\n", "FormatError", "bad magic")
    case(
        "major_version_2",
        good[:8] + struct.pack("<H", 2) + good[10:],
        "UnsupportedError",
        "format 2.0",
    )
    case(
        "minor_version_changed",
        good[:10] + struct.pack("<H", 7) + good[12:],
        "FormatError",
        "disagree",
    )
    case(
        "unknown_required_flag",
        good[:12] + struct.pack("<I", 0x8000) + good[16:],
        "UnsupportedError",
        "unknown features",
    )
    for pct in (5, 50, 95):
        case(f"truncated_{pct}pct", good[: len(good) * pct // 100], "FormatError", "truncated")
    case("truncated_trailer", good[:-3], "FormatError", "trailer")
    idx_off, idx_size, _ = TRAILER.unpack(good[-16:])
    case(
        "trailer_offset_past_eof",
        good[:-16] + TRAILER.pack(10**12, idx_size, TRAILER_MAGIC),
        "FormatError",
        "does not end at the trailer",
    )
    case(
        "index_size_huge",
        good[:-16] + TRAILER.pack(idx_off, 2**32 - 1, TRAILER_MAGIC),
        "FormatError",
        "out of range",
    )
    b = bytearray(good)
    b[idx_off + 40] ^= 0xFF
    case("index_flipped_byte", bytes(b), "CorruptDataError", "checksum mismatch")
    first = int(index.chunks["frame_offset"][1])  # a tensor chunk
    b = bytearray(good)
    b[first + 45] ^= 0x01
    case("chunk_flipped_byte", bytes(b), "CorruptDataError", "frame checksum mismatch")
    js, ct, st = index.to_streams()
    case(
        "index_bomb",
        with_index(prefix, [js, ct, st], declared=2**31),
        "FormatError",
        "index stream claims",
    )
    case(
        "index_not_json",
        with_index(prefix, [b"\xff\xfe not json", ct, st]),
        "FormatError",
        "index JSON is invalid",
    )
    case(
        "index_deep_json",
        with_index(prefix, [b"[" * 20_000 + b"]" * 20_000, ct, st]),
        "FormatError",
        "index JSON is invalid",
    )
    case("index_partial_row", with_index(prefix, [js, ct[:-5], st]), "FormatError", "partial row")
    case("index_three_streams_missing", with_index(prefix, [js, ct]), "FormatError", "expected 3")

    def overlap(doc, ch, s):
        ch["frame_offset"][1] = ch["frame_offset"][0]

    case("overlapping_frames", mutate_index(good, overlap), "FormatError", "overlaps")

    def past(doc, ch, s):
        ch["frame_offset"][-1] = 10**9

    case("frame_past_index", mutate_index(good, past), "FormatError", "runs into the index")

    def shape(doc, ch, s):
        for seg in doc["segments"]:
            if seg["kind"] == "tensor":
                seg["shape"] = [2**40, 2**40]
                break

    case("absurd_shape", mutate_index(good, shape), "FormatError", "needs")

    def gap(doc, ch, s):
        doc["segments"][1]["offset"] += 1

    case("segments_gap", mutate_index(good, gap), "FormatError", "starts at")

    def huge_chunk(doc, ch, s):
        ch["raw_size"][0] = 2**31

    case("chunk_too_big", mutate_index(good, huge_chunk), "FormatError", "chunk size is outside")

    def neg(doc, ch, s):
        doc["source"]["size"] = -5

    case("negative_source_size", mutate_index(good, neg), "FormatError", "source size")

    def bad_sha(doc, ch, s):
        doc["source"]["sha256"] = "xyz"

    case("bad_sha256", mutate_index(good, bad_sha), "FormatError", "sha256")

    def stream_count(doc, ch, s):
        ch["n_streams"][0] = 7

    case("stream_count_mismatch", mutate_index(good, stream_count), "FormatError", "stream")

    def many_segments(doc, ch, s):
        doc["segments"] = "x" * 10

    case("segments_not_list", mutate_index(good, many_segments), "FormatError", "segments")

    def transform(doc, ch, s):
        ch["transform"][0] = 99

    case(
        "unknown_transform_in_index",
        mutate_index(good, transform),
        "UnsupportedError",
        "unknown transform",
    )
    # chunk 1 is a BF16 chunk (2 streams of raw_size/2)
    k = 1
    case(
        "unknown_codec",
        replace_chunk_frame(
            good,
            k,
            lambda row: frame_for(
                row, codecs=[250, 0], payloads=[b"zz", bytes(int(row["raw_size"]) // 2)]
            ),
        ),
        "UnknownCodecError",
        "unknown codec id 250",
    )
    case(
        "content_checksum",
        replace_chunk_frame(good, k, lambda row: frame_for(row, raw_check=12345)),
        "CorruptDataError",
        "content checksum mismatch",
    )
    case(
        "zstd_garbage",
        replace_chunk_frame(
            good,
            k,
            lambda row: frame_for(
                row,
                codecs=[2, 0],
                payloads=[b"\x28\xb5\x2f\xfd" + bytes(40), bytes(int(row["raw_size"]) // 2)],
            ),
        ),
        "CorruptDataError",
        "zstd",
    )
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(bytes(1 << 22))  # declares 4 MiB, chunk wants 2 KiB
    case(
        "zstd_bomb",
        replace_chunk_frame(
            good,
            k,
            lambda row: frame_for(
                row, codecs=[2, 0], payloads=[bomb, bytes(int(row["raw_size"]) // 2)]
            ),
        ),
        "CorruptDataError",
        "declares",
    )
    case(
        "const_payload_size",
        replace_chunk_frame(
            good,
            k,
            lambda row: frame_for(
                row, codecs=[1, 0], payloads=[b"ab", bytes(int(row["raw_size"]) // 2)]
            ),
        ),
        "CorruptDataError",
        "const stream",
    )
    stage_cases(case)
    manifest = {}
    for name, (blob, exc, frag) in sorted(cases.items()):
        (OUT / f"{name}.zm").write_bytes(blob)
        manifest[f"{name}.zm"] = {"error": exc, "message": frag}
    (OUT / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(cases)} hostile files to {OUT}")


def staged_container(lossy: str | None = "int8", **kw) -> bytes:
    """A small format-1.2 container: one F32 matrix through a tensor stage, one bias kept."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 96)).astype(np.float32)
    b = rng.standard_normal(96).astype(np.float32)
    data = edgecases.safetensors_bytes(
        [("w", "F32", [64, 96], w.tobytes()), ("b", "F32", [96], b.tobytes())]
    )
    return compress_bytes(data, chunk_size=16 << 10, lossy=lossy, **kw)


def stage_cases(case) -> None:
    """Hostile tensor-stage records (format 1.2): refused by index validation, or by the
    per-tensor checksum, before anything big is allocated."""
    q8 = staged_container("int8")
    man = staged_container(None, mantissa_bits=4)

    def stage_of(doc):
        return next(s for s in doc["segments"] if s.get("name") == "w")["stage"]

    def edit(blob, fn):
        """Mutate the index JSON; the file header follows its version and flags, so only the
        stage record itself is hostile."""
        seen = {}

        def mut(doc, ch, s):
            fn(doc)
            seen.update(minor=doc["format"][1], flags=doc["flags"])

        out = bytearray(mutate_index(blob, mut))
        struct.pack_into("<HI", out, 10, seen["minor"], seen["flags"])
        return bytes(out)

    case(
        "stage_unknown_name",
        edit(q8, lambda d: stage_of(d).__setitem__("name", "int3-from-the-future")),
        "FormatError",
        "unknown tensor stage",
    )
    case(
        "stage_part_size_disagrees",
        edit(q8, lambda d: stage_of(d)["parts"][0].__setitem__("size", 2**40)),
        "FormatError",
        "parts have",
    )
    case(
        "stage_params_break_part_sizes",
        edit(q8, lambda d: stage_of(d).__setitem__("params", {"scale_dtype": 5})),
        "FormatError",
        "params do not fit",
    )
    case(
        "stage_part_chunks_out_of_range",
        edit(q8, lambda d: stage_of(d)["parts"][1].__setitem__("chunks", [10**6, 3])),
        "FormatError",
        "a part starts at chunk",
    )
    case(
        "stage_elementwise_two_parts",
        edit(man, lambda d: stage_of(d)["parts"].append(dict(stage_of(d)["parts"][0]))),
        "FormatError",
        "parts have",
    )
    case(
        "stage_lossy_without_flag",
        edit(q8, lambda d: d.__setitem__("flags", 0)),
        "FormatError",
        "lossy flag",
    )
    case(
        "stage_in_a_1_1_file",
        edit(q8, lambda d: d.__setitem__("format", [1, 1])),
        "FormatError",
        "does not have",
    )
    case(
        "stage_on_verbatim",
        edit(q8, lambda d: d["segments"][0].__setitem__("stage", stage_of(d))),
        "FormatError",
        "verbatim but has a tensor stage",
    )
    case(
        "stage_too_many_parts",
        edit(q8, lambda d: stage_of(d).__setitem__("parts", stage_of(d)["parts"] * 20)),
        "FormatError",
        "more than 16",
    )
    case(
        "stage_check_wrong",
        edit(q8, lambda d: stage_of(d).__setitem__("check", "0123456789abcdef")),
        "CorruptDataError",
        "recorded checksum",
    )


if __name__ == "__main__":
    main()
