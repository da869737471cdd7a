"""A generated set of edge-case model files, each of which must round-trip byte for byte.

``build()`` returns ``{name: bytes}``; ``scripts/make_edge_cases.py`` writes them to a folder
for manual runs (``zipmodel compress DIR/*``).
"""

from __future__ import annotations

import json
import struct

import numpy as np

SPECIAL_F32 = [
    0x00000000,
    0x80000000,  # +0, -0
    0x7F800000,
    0xFF800000,  # +inf, -inf
    0x7FC00000,
    0xFFC00000,
    0x7FC00001,
    0x7F800001,
    0xFFBFFFFF,  # quiet/signaling NaNs with payloads
    0x00000001,
    0x807FFFFF,
    0x00400000,  # subnormals
    0x7F7FFFFF,
    0xFF7FFFFF,
    0x00800000,  # max, -max, min normal
]
SPECIAL_BF16 = [
    0x0000,
    0x8000,
    0x7F80,
    0xFF80,
    0x7FC0,
    0xFFC1,
    0x7F81,
    0x0001,
    0x807F,
    0x7F7F,
    0x0080,
]
SPECIAL_F16 = [
    0x0000,
    0x8000,
    0x7C00,
    0xFC00,
    0x7E00,
    0xFE01,
    0x7C01,
    0x0001,
    0x83FF,
    0x7BFF,
    0x0400,
]

DTYPE_NP = {
    "BOOL": np.bool_,
    "U8": np.uint8,
    "I8": np.int8,
    "U16": np.uint16,
    "I16": np.int16,
    "U32": np.uint32,
    "I32": np.int32,
    "U64": np.uint64,
    "I64": np.int64,
    "F16": np.uint16,
    "BF16": np.uint16,
    "F32": np.uint32,
    "F64": np.uint64,
    "F8_E4M3": np.uint8,
    "F8_E5M2": np.uint8,
}


def safetensors_bytes(
    tensors: list[tuple[str, str, list[int], bytes]],
    *,
    metadata: dict | None = None,
    indent=None,
    pad_to: int = 8,
    gap: int = 0,
    trailing: bytes = b"",
    reverse_keys: bool = False,
    data_order=None,
) -> bytes:
    """Build a safetensors file by hand, controlling every byte of its layout."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data = bytearray()
    order = data_order or list(range(len(tensors)))
    offsets = {}
    for i in order:
        blob = tensors[i][3]
        data += b"\xee" * gap
        offsets[i] = (len(data), len(data) + len(blob))
        data += blob
    items = [
        (t[0], {"dtype": t[1], "shape": t[2], "data_offsets": list(offsets[i])})
        for i, t in enumerate(tensors)
    ]
    if reverse_keys:
        items.reverse()
    header.update(items)
    js = json.dumps(header, indent=indent).encode()
    if pad_to > 1:
        js += b" " * (-len(js) % pad_to)
    return struct.pack("<Q", len(js)) + js + bytes(data) + trailing


def _blob(rng, dtype: str, n: int, special=None) -> bytes:
    a = rng.integers(0, 256, n * np.dtype(DTYPE_NP[dtype]).itemsize, dtype=np.uint8)
    if dtype == "BOOL":
        a = (a & 1).astype(np.uint8)
    if special:
        v = np.array(special, DTYPE_NP[dtype]).view(np.uint8)
        a[: min(v.size, a.size)] = v[: a.size]
    return a.tobytes()


def _weights(rng, dtype: str, shape: list[int]) -> bytes:
    n = int(np.prod(shape)) if shape else 1
    w = (rng.standard_normal(n) * 0.02).astype(np.float32)
    if dtype == "F32":
        return w.tobytes()
    if dtype == "F16":
        return w.astype(np.float16).tobytes()
    if dtype == "BF16":
        return (w.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    raise ValueError(dtype)


def build(seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    all_dtypes = [
        (
            f"t_{d.lower()}",
            d,
            [37],
            _blob(
                rng, d, 37, {"F32": SPECIAL_F32, "BF16": SPECIAL_BF16, "F16": SPECIAL_F16}.get(d)
            ),
        )
        for d in DTYPE_NP
    ]
    files["all_dtypes.safetensors"] = safetensors_bytes(all_dtypes, metadata={"format": "pt"})
    specials = [
        ("f32", "F32", [len(SPECIAL_F32)], np.array(SPECIAL_F32, np.uint32).tobytes()),
        ("bf16", "BF16", [len(SPECIAL_BF16)], np.array(SPECIAL_BF16, np.uint16).tobytes()),
        ("f16", "F16", [len(SPECIAL_F16)], np.array(SPECIAL_F16, np.uint16).tobytes()),
    ]
    files["special_values.safetensors"] = safetensors_bytes(specials)
    files["empty_and_scalar.safetensors"] = safetensors_bytes(
        [
            ("empty", "F32", [0], b""),
            ("empty2d", "BF16", [3, 0], b""),
            ("scalar", "F32", [], struct.pack("<f", 4.6052)),
            ("scalar_bf16", "BF16", [], b"\x80\x3f"),
            ("one", "F16", [1], b"\x00\x3c"),
        ]
    )
    files["no_tensors.safetensors"] = safetensors_bytes([], metadata={"note": "only metadata"})
    files["no_tensors_no_meta.safetensors"] = safetensors_bytes([])
    model = [
        ("embed.weight", "BF16", [300, 64], _weights(rng, "BF16", [300, 64])),
        ("layer.0.weight", "F32", [64, 96], _weights(rng, "F32", [64, 96])),
        ("layer.0.bias", "F32", [96], _weights(rng, "F32", [96])),
        ("head.weight", "F16", [64, 80], _weights(rng, "F16", [64, 80])),
    ]
    files["model_meta.safetensors"] = safetensors_bytes(
        model, metadata={"format": "pt", "x": "ü ≠ 😀"}
    )
    files["model_no_meta.safetensors"] = safetensors_bytes(model)
    files["header_pretty.safetensors"] = safetensors_bytes(model, indent=4, pad_to=1)
    files["header_reversed.safetensors"] = safetensors_bytes(model, reverse_keys=True, pad_to=3)
    files["data_reordered.safetensors"] = safetensors_bytes(model, data_order=[3, 1, 0, 2])
    files["gaps_odd_offsets.safetensors"] = safetensors_bytes(model, gap=3, pad_to=1)
    files["trailing_bytes.safetensors"] = safetensors_bytes(model, trailing=b"TRAILING\x00\x01\x02")
    files["unknown_dtype.safetensors"] = safetensors_bytes(
        [("x", "X99", [5], b"abcde"), *model[:1]]
    )
    big = [
        ("big", "BF16", [4096, 96], _weights(rng, "BF16", [4096, 96]))
    ]  # several chunks at 64 KiB
    files["multi_chunk.safetensors"] = safetensors_bytes(big)
    # invalid safetensors: must still round-trip, as opaque bytes
    good = safetensors_bytes(model)
    files["truncated.safetensors"] = good[: len(good) - 100]
    files["bad_json.safetensors"] = struct.pack("<Q", 10) + b"{not json}" + b"\x00" * 20
    dup = b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}'
    files["duplicate_key.safetensors"] = struct.pack("<Q", len(dup)) + dup + b"\x01"
    ov = safetensors_bytes([("a", "U8", [4], b"abcd"), ("b", "U8", [4], b"efgh")])
    n = struct.unpack("<Q", ov[:8])[0]
    hdr = json.loads(ov[8 : 8 + n])
    hdr["b"]["data_offsets"] = [2, 6]
    js = json.dumps(hdr).encode()
    files["overlapping.safetensors"] = struct.pack("<Q", len(js)) + js + b"abcdefgh"
    files["huge_header_len.safetensors"] = struct.pack("<Q", 2**63) + b"{}"
    files["empty.bin"] = b""
    files["one_byte.bin"] = b"\x7f"
    files["random.bin"] = rng.integers(0, 256, 70_001, dtype=np.uint8).tobytes()
    files["zeros.bin"] = bytes(200_000)
    return files


def ctranslate2_bytes(
    variables: list[tuple[str, int, list[int], bytes]], *, version: int = 6, tail: bytes = b""
) -> bytes:
    """A CTranslate2 model.bin: (name, type id, dims, data) per variable, then ``tail``."""
    spec = b"TestSpec\x00"
    out = bytearray(
        struct.pack("<IH", version, len(spec)) + spec + struct.pack("<II", 1, len(variables))
    )
    for name, type_id, dims, data in variables:
        nb = name.encode() + b"\x00"
        out += (
            struct.pack("<H", len(nb))
            + nb
            + struct.pack("<B", len(dims))
            + struct.pack(f"<{len(dims)}I", *dims)
        )
        out += struct.pack("<BI", type_id, len(data)) + data
    return bytes(out) + tail
