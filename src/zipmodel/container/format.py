"""Byte layout of the ``.zm`` container, version 1 (normative text: ``docs/format.md``).

::

    file    := file_header frame* index_frame trailer
    file_header (16 B)  := magic "\\x89ZMODEL\\n" | u16 major | u16 minor | u32 flags
    frame header (32 B) := magic (b"ZMCK" chunk / b"ZMIX" index) | u8 transform | u8 n_streams
                           | u16 flags | u64 src_offset | u32 raw_size | u32 body_size
                           | u64 check = xxh3_64(header[0:24] + body)
    body                := n_streams × stream entry | u64 raw_check | payloads, in stream order
    stream entry (12 B) := u8 codec | u8 context | u16 reserved | u32 decoded_size
                           | u32 encoded_size
    trailer (16 B)      := u64 index_offset | u32 index_frame_size | magic b"ZMTR"

All integers are little-endian. ``raw_check`` is xxh3_64 of the chunk's decoded bytes seeded
with ``src_offset``, so a chunk decoded wrongly or put in the wrong place is caught.
"""

from __future__ import annotations

import struct

import numpy as np

__all__ = [
    "CHUNK_DTYPE",
    "CHUNK_MAGIC",
    "FILE_HEADER",
    "FILE_MAGIC",
    "FLAGS_REQUIRED_MASK",
    "FLAG_LOSSY",
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "FRAME_HEADER",
    "INDEX_MAGIC",
    "MAX_CHUNK_RAW",
    "MAX_INDEX_FRAME",
    "MAX_STREAMS",
    "NO_CONTEXT",
    "STREAM_DTYPE",
    "STREAM_ENTRY",
    "TRAILER",
    "TRAILER_MAGIC",
]

FILE_MAGIC = b"\x89ZMODEL\n"
FORMAT_MAJOR = 1
FORMAT_MINOR = 2  # newest minor this version reads; 1.1: duplicate segments, 1.2: tensor stages
FILE_HEADER = struct.Struct("<8sHHI")  # 16 bytes
FLAGS_REQUIRED_MASK = 0x0000FFFF  # unknown bits here make a reader refuse the file
FLAG_LOSSY = 1 << 0  # some tensors went through a lossy stage (issue: lossy stages)

CHUNK_MAGIC = b"ZMCK"
INDEX_MAGIC = b"ZMIX"
FRAME_HEADER = struct.Struct("<4sBBHQIIQ")  # 32 bytes
FRAME_CHECKED = 24  # the checksum covers header[0:24] and the body
STREAM_ENTRY = struct.Struct("<BBHII")  # 12 bytes
RAW_CHECK = struct.Struct("<Q")
NO_CONTEXT = 0xFF

TRAILER_MAGIC = b"ZMTR"
TRAILER = struct.Struct("<QI4s")  # 16 bytes

# Limits a reader enforces before allocating anything.
MAX_STREAMS = 8
MAX_CHUNK_RAW = 64 << 20  # bytes one chunk may decode to
MAX_INDEX_FRAME = 1 << 31  # bytes of the index frame on disk
MAX_INDEX_RATIO = 256  # an index stream may expand at most this much (plus 1 MiB)
MAX_SEGMENTS = 50_000_000
MAX_RANK = 64

# The index's binary tables (numpy structured dtypes, packed, little-endian).
CHUNK_DTYPE = np.dtype(
    [
        ("src_offset", "<u8"),
        ("frame_offset", "<u8"),
        ("frame_size", "<u4"),
        ("raw_size", "<u4"),
        ("transform", "u1"),
        ("n_streams", "u1"),
        ("flags", "<u2"),
        ("first_stream", "<u4"),
    ]
)
STREAM_DTYPE = np.dtype(
    [
        ("codec", "u1"),
        ("context", "u1"),
        ("reserved", "<u2"),
        ("decoded_size", "<u4"),
        ("encoded_size", "<u4"),
    ]
)
assert FILE_HEADER.size == 16 and FRAME_HEADER.size == 32 and TRAILER.size == 16
assert CHUNK_DTYPE.itemsize == 32 and STREAM_DTYPE.itemsize == 12
