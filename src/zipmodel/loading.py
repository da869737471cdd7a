"""``zipmodel.load``: a container's tensors as a state dict, decoded straight into place.

Every tensor gets its final memory up front (small tensors packed into shared blocks: see
``_tensor_memory``); the chunks of all tensors go through one window of the thread pool and
each is decoded into its tensor's memory, so there is no second copy and no buffer of the
whole source. The result is a view of that memory with the tensor's dtype and shape: the
bytes are never converted (bfloat16 stays bfloat16). Verbatim segments (headers, pickles, padding) are not read at all.

Segments stored once for several names (format 1.1 ``dup_of``: tied embeddings) are decoded
once; every name gets its own view of the shared buffer, so they share memory.

On a GPU (``device="cuda"``) each tensor is allocated on the device and each chunk, decoded
into a ring of reused pinned host memory, is copied to its place with a non-blocking copy on a
side stream while the next chunks decode (``zipmodel.gpu.staging``); host memory stays bounded
whatever the model's size. That path has not been run on a GPU yet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .container.reader import ContainerReader
from .dtypes import get_dtype, numpy_dtype
from .errors import FormatError, MissingDependencyError, UnsupportedError
from .pipeline import check_context, iter_segments, resolve_threads
from .readers.base import TENSOR
from .stages.tensor import StageContext

__all__ = ["TORCH_DTYPES", "load"]

# safetensors dtype name -> torch dtype attribute (looked up on the installed torch: an older
# one may lack the unsigned and float8 types; those tensors then come back as raw uint8 bytes)
TORCH_DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
}


def load(
    file: str | os.PathLike | BinaryIO | bytes,
    device: Any = None,
    *,
    framework: str | None = None,
    threads: int = 0,
    state_dict: bool = True,
    context: StageContext | None = None,
    base: Any = None,
) -> dict[str, Any]:
    """Load every tensor of the container ``file`` into a dict ``name -> tensor``.

    ``file`` is a ``.zm`` path, a binary file object or bytes, or a compressed model folder
    (``zipmodel compress DIR``): then the tensors of all its weight files, as transformers
    picks them (the safetensors shards, by ``model.safetensors.index.json`` when there is
    one; else the PyTorch ones), merged into one dict; a name in two files is an error.

    Without a ``device`` the tensors are numpy arrays (bfloat16 and float8 via ml_dtypes);
    asking for a device (``"cpu"``, ``"cuda:0"``, a ``torch.device``) means torch tensors on
    it, as ``safetensors.torch`` gives (torch missing: :class:`MissingDependencyError`,
    ``pip install 'zipmodel[torch]'``). ``framework`` (``"numpy"`` or ``"torch"``) overrides
    that: ``framework="torch"`` alone is the CPU, numpy only lives there.

    Tensors keep the dtype and shape the source recorded; element types without a
    numpy/torch equivalent (GGUF block-quantized types, packed 4/6-bit floats, names zipmodel
    does not know) come back as their raw bytes, a 1-D uint8 array.
    Names are the source's tensor names. For a PyTorch checkpoint, ``state_dict=True`` gives
    the state-dict keys, each a view of its decoded storage with the recorded offset, shape
    and stride (checked against the storage first: the metadata is untrusted), as
    ``torch.load(weights_only=True)`` would; ``state_dict=False`` gives the storages
    (``archive/data/0``, 1-D).

    Chunks decode on ``threads`` threads (0 = all cores) directly into each tensor's memory.
    Every chunk's checksum is verified. Tensors stored once for several names share memory.

    Tensors a lossy stage stored come back dequantized, in their original dtype and shape
    (the same bytes ``decompress_file`` writes), each checked against its recorded checksum.
    ``context`` is what tensor stages need to decode (the base model of a delta file);
    ``base`` gives that base as a file, ``.zm`` or folder instead (docs/delta.md): a missing
    or different base raises, naming the SHA-256 the container expects.
    """
    from .basemodel import decode_context

    if isinstance(file, (str, os.PathLike)) and os.path.isdir(file):
        if context is not None:
            raise ValueError("context= applies to one container, not to a folder")
        return load_folder(
            Path(file), device, framework=framework, threads=threads, state_dict=state_dict,
            base=base,
        )  # fmt: skip
    framework = _framework(framework, device)
    threads = resolve_threads(threads)
    torch = _torch(device) if framework == "torch" else None
    with (
        ContainerReader(file) as r,
        decode_context(r.index, base, context, path=r.name, threads=threads) as context,
    ):
        check_context(r.index, context, path=r.name)
        segs = r.index.segments
        # segment index -> the segment whose chunks hold its bytes (itself unless a duplicate)
        wanted = {
            i: (e.dup_of if e.dup_of is not None else i)
            for i, e in enumerate(segs)
            if e.segment.kind == TENSOR
        }
        owners = sorted(set(wanted.values()))
        if torch is not None and _is_cuda(torch, device):
            from .gpu.staging import TorchCuda, load_segments

            backend = TorchCuda(torch, device)
            buffers, _ = load_segments(r, owners, backend, threads=threads, context=context)
        else:
            buffers = _load_host(r, owners, torch, threads, context)
            if torch is not None and not _is_cpu(device):  # another accelerator: copy after
                buffers = {k: v.to(device) for k, v in buffers.items()}
        views = {
            segs[i].segment.name or "": _view(buffers[owner], segs[i].segment, torch)
            for i, owner in wanted.items()
        }
        meta = r.index.metadata.get("torch") if isinstance(r.index.metadata, dict) else None
        if state_dict and isinstance(meta, dict):
            return _torch_state_dict(meta, views, torch, r.name)
        return views


def load_folder(
    root: Path,
    device: Any,
    *,
    framework,
    threads: int,
    state_dict: bool,
    base: Any,
    link_root: Path | None = None,
) -> dict[str, Any]:
    """Every tensor of a compressed model folder's weight files (``folder.weight_entries``:
    the safetensors shards, else the PyTorch ones, ...), one state dict in file order. A file
    stored as a copy (compressing it did not pay) is read through an in-memory container.
    ``link_root``: where stored files may also be reached through symlinks (a Hugging Face
    cache snapshot links into its ``blobs``)."""
    from .errors import ZipmodelError
    from .files import compress_bytes
    from .folder.manifest import COPY, inside, is_zm_folder, read_manifest, weight_entries
    from .folder.restore import entry_base

    if not is_zm_folder(root):
        raise ZipmodelError(
            "not a compressed model folder (no zipmodel.json)",
            path=root,
            hint="load takes a .zm file or a folder written by zipmodel compress",
        )
    manifest = read_manifest(root, link_root=link_root)
    files = weight_entries(manifest, root, link_root=link_root)
    if not files:
        raise ZipmodelError("no weight files with tensors in this folder", path=root)
    out: dict[str, Any] = {}
    where: dict[str, str] = {}
    for e in files:
        stored = inside(root, e.stored_path, root, link_root)
        kw = {"framework": framework, "threads": threads, "state_dict": state_dict}
        if e.stored == COPY:
            try:
                data = stored.read_bytes()
            except OSError as exc:
                raise ZipmodelError(f"cannot read: {exc.strerror or exc}", path=stored) from None
            part = load(
                compress_bytes(data, level="fast", threads=threads, name=e.path), device, **kw
            )
        else:
            bm = entry_base(e, manifest, root, base, threads, restored=False)
            try:
                part = load(stored, device, base=bm, **kw)
            finally:
                if bm is not None:
                    bm.close()
        for name, t in part.items():
            if name in out:
                raise FormatError(
                    f"tensor {name!r} is in both {where[name]} and {e.path}", path=root
                )
            out[name] = t
            where[name] = e.path
    return out


def _load_host(r, owners: list[int], torch, threads: int, context) -> dict[int, Any]:
    """Segments ``owners`` decoded into host memory: owner -> numpy (or torch) uint8."""
    segs = r.index.segments
    sizes = [segs[o].segment.size for o in owners]
    buffers: dict[int, Any] = {}
    work: list[tuple[int, np.ndarray]] = []
    for owner, size, host in zip(owners, sizes, _tensor_memory(sizes)):
        buf = host
        # a storage of its own per tensor (offset 0, as torch.load gives): from_numpy of the
        # slice, not a slice of one tensor (from_numpy gives an empty array stride 0: no view)
        if torch is not None:
            buf = torch.from_numpy(host) if size else torch.empty(0, dtype=torch.uint8)
        buffers[owner] = buf
        work.append((owner, host))
    for _ in iter_segments(r, work, threads=threads, context=context):
        pass
    return buffers


ALIGN = 64  # every tensor starts on a cache line
BLOCK = 16 << 20  # tensors are packed into blocks of up to this size (a bigger one alone)


def _tensor_memory(sizes: list[int]) -> list[np.ndarray]:
    """Fresh memory for tensors of ``sizes`` bytes: slices of a few blocks, each tensor at a
    64-byte aligned offset.

    Small tensors share blocks: numpy asks for huge pages only on arrays of 4 MiB or more and
    most tensors are smaller (minilm: 101 of 103), so their memory came in 4 KiB page faults
    during decoding, which a VM makes expensive. Blocks stay at or under 16 MiB so that, as
    with an array per tensor, glibc can hand a later load the memory an earlier one freed (it
    recycles freed blocks of up to 32 MiB) instead of fresh pages. Mapping the blocks' pages
    in up front (``_io.prefault``) did not pay here (benches/results-design-notes.md). A
    block is freed with the last tensor in it.
    """
    out: list[np.ndarray] = []
    start = 0
    while start < len(sizes):
        end, total, offsets = start, 0, []
        while end < len(sizes) and (end == start or total + sizes[end] <= BLOCK):
            offsets.append(total)
            total += -(-sizes[end] // ALIGN) * ALIGN
            end += 1
        block = np.empty(total + ALIGN, np.uint8)
        block = block[-block.ctypes.data % ALIGN :][:total]
        out += [block[o : o + n] for o, n in zip(offsets, sizes[start:end])]
        start = end
    return out


def _is_cpu(device: Any) -> bool:
    return device is None or str(device).split(":")[0] == "cpu"


def _framework(framework: str | None, device: Any) -> str:
    """numpy without a device, torch with one (as ``safetensors.torch``), unless asked."""
    cpu = _is_cpu(device)
    if framework is None:
        return "numpy" if device is None else "torch"
    if framework not in ("numpy", "torch"):
        raise ValueError(f"framework must be 'numpy' or 'torch', not {framework!r}")
    if framework == "numpy" and not cpu:
        raise ValueError(f"numpy arrays live on the CPU; use framework='torch' for {device}")
    return framework


def _torch(device: Any):
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            "loading as torch tensors needs PyTorch", hint="pip install 'zipmodel[torch]'"
        ) from None
    dev = torch.device("cpu" if device is None else device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnsupportedError(
            f"device {device!r}: this torch has no CUDA device available",
            hint="load on device='cpu', or install a CUDA build of torch",
        )
    return torch


def _is_cuda(torch, device: Any) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _view(buf, seg, torch):
    """``buf`` (the segment's bytes) seen as the tensor ``seg`` describes, without copying."""
    dt = get_dtype(seg.dtype or "")
    known = dt is not None and dt.itemsize > 0 and dt.nbytes(tuple(seg.shape or ())) == seg.size
    if torch is None:
        if not known or dt.numpy_name is None:
            return buf
        return buf.view(numpy_dtype(dt)).reshape(seg.shape)
    tdt = getattr(torch, TORCH_DTYPES.get(dt.name, ""), None) if known else None
    if tdt is None:
        return buf
    return buf.view(tdt).reshape(seg.shape)


def _ints(v: Any, n: int | None = None) -> list[int] | None:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        return None
    if not all(type(x) is int and x >= 0 for x in v):
        return None
    return v


def _torch_state_dict(meta: dict, storages: dict[str, Any], torch, path) -> dict[str, Any]:
    """The state dict of a PyTorch checkpoint: each recorded view of its decoded storage.

    The index metadata comes from the file, so every view is checked to lie inside its
    storage before ``as_strided`` may touch memory.
    """
    tensors, table = meta.get("tensors"), meta.get("storages")
    if not isinstance(tensors, dict) or not isinstance(table, dict):
        return storages

    def bad(name: str, why: str) -> FormatError:
        return FormatError(f"tensor {name!r}: {why}", path=path)

    out: dict[str, Any] = {}
    # empty views get no storage: they go where the storages are (a GPU after device="cuda")
    device = next((v.device for v in storages.values() if hasattr(v, "device")), "cpu")
    for name, t in tensors.items():
        if not isinstance(t, dict) or not isinstance(t.get("storage"), str):
            raise bad(name, "has no storage")
        st = table.get(t["storage"])
        shape = _ints(t.get("shape"))
        stride = _ints(t.get("stride"), len(shape) if shape is not None else None)
        offset = t.get("offset")
        if not isinstance(st, dict) or shape is None or stride is None:
            raise bad(name, "has an invalid storage, shape or stride")
        if type(offset) is not int or offset < 0:
            raise bad(name, "has an invalid storage offset")
        dt = get_dtype(t.get("dtype") or "")
        seg = st.get("segment")
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if seg is None or numel == 0:  # an empty storage or an empty view: no bytes to share
            if numel:
                raise bad(name, "views an empty storage")
            out[name] = _empty(dt, shape, torch, name, path, device)
            continue
        base = storages.get(seg)
        if base is None or st.get("dtype") != t.get("dtype") or dt is None:
            raise bad(name, "does not match its storage")
        if (torch is None and not isinstance(base, np.ndarray)) or len(base.shape) != 1:
            raise UnsupportedError(
                f"tensor {name!r} of {t.get('dtype')} has no array type here",
                path=path,
                hint="load(..., state_dict=False) returns the raw storages",
            )
        need = offset + 1 + sum((n - 1) * k for n, k in zip(shape, stride))
        if need > base.shape[0]:
            raise bad(name, f"needs {need} elements, its storage has {base.shape[0]}")
        if torch is None:
            out[name] = np.lib.stride_tricks.as_strided(
                base[offset:], shape=shape, strides=[k * base.itemsize for k in stride]
            )
        else:
            out[name] = base.as_strided(shape, stride, offset)
    return out


def _empty(dt, shape: list[int], torch, name: str, path, device: Any = "cpu"):
    """An empty view (no bytes to share), on ``device`` like the others."""
    if torch is None:
        if dt is None or dt.numpy_name is None:
            raise UnsupportedError(f"tensor {name!r} has no numpy type", path=path)
        return np.zeros(shape, numpy_dtype(dt))
    tdt = getattr(torch, TORCH_DTYPES.get(dt.name, ""), None) if dt is not None else None
    if tdt is None:
        raise UnsupportedError(f"tensor {name!r} has no torch type", path=path)
    return torch.zeros(shape, dtype=tdt, device=device)
