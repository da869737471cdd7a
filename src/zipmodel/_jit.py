"""Keeping Numba's JIT cost off the user's path.

Kernels are compiled with ``cache=True``, so a machine pays the compile once (about a
minute for all of them on a 2-core machine) and later processes load machine code from the
cache (about a second: importing numba, its one-time target set-up, then each kernel used).
:func:`ensure_ready` is called before the first kernel of a process runs: on a cold cache it says
so on stderr, compiles every kernel on tiny inputs of the exact types used in production (so no
later call compiles again), and leaves a marker so the message appears once.

Numba writes its cache next to the kernel modules when that folder is writable, else under
``~/.cache/numba`` (or ``$NUMBA_CACHE_DIR``); read-only installs (containers) should set
``NUMBA_CACHE_DIR`` and run ``zipmodel warmup`` at build time.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path

__all__ = ["cache_dir", "ensure_ready", "warmup"]

_lock = threading.Lock()
_ready = False
KERNEL_MODULES = ("split", "xxh3", "huffman", "rans", "rans2d", "frame", "choose")


def cache_dir() -> Path:
    """Where zipmodel keeps its JIT marker (Numba's own cache may live beside the kernels)."""
    base = os.environ.get("NUMBA_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zipmodel"


def _key() -> str:
    import platform

    import numba

    from . import __version__

    kdir = Path(__file__).with_name("_kernels")
    h = hashlib.sha256()
    h.update(
        f"{__version__}|{numba.__version__}|{sys.version}|{platform.machine()}|{platform.processor()}".encode()
    )
    for name in KERNEL_MODULES:
        p = kdir / f"{name}.py"
        if p.exists():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _marker() -> Path:
    return cache_dir() / f"jit-{_key()}.ok"


def warmup() -> float:
    """Compile (or load from the cache) every kernel; returns the seconds it took."""
    import numpy as np

    t0 = time.perf_counter()
    from ._checksum import xxh3_64
    from .codecs import CODECS, get_codec
    from .stages import TRANSFORMS

    rng = np.random.default_rng(0)
    raw = np.frombuffer(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), np.uint8)  # read-only
    for buf in (raw, raw.copy()):
        xxh3_64(buf, 1)
        xxh3_64(buf[1:], 1)
    # aligned and unaligned sources and outputs (the float splits have word and byte kernels)
    for src in (raw, raw[1 : 1 + 4092]):
        for t in TRANSFORMS.values():
            streams = t.forward(src)
            for shift in (0, 1):
                out = np.empty(src.size + 1, np.uint8)[shift : shift + src.size]
                t.inverse(streams, out)
                t.inverse([np.frombuffer(s.tobytes(), np.uint8) for s in streams], out)
    from .codecs.select import entropy_bytes, histogram, histogram4

    entropy_bytes(histogram(raw))
    histogram4(raw)
    skewed = np.frombuffer(
        np.minimum(rng.geometric(0.4, 4096), 255).astype(np.uint8).tobytes(), np.uint8
    )
    for cid in CODECS:
        c = get_codec(cid)
        for data in (skewed, raw):
            ctx = skewed if getattr(c, "uses_context", False) else None
            payload = c.encode(data, ctx) if ctx is not None else c.encode(data)
            if payload is None:
                continue
            out = np.empty(data.size, np.uint8)
            if ctx is not None:
                c.decode(memoryview(payload), out, ctx)
            else:
                c.decode(memoryview(payload), out)
    _warm_frames(raw, skewed)
    from .codecs.select import encode_stream, policy_for_level

    for data in (skewed, raw, np.zeros(64, np.uint8)):  # the field chooser (fast, default)
        encode_stream(data, "field", policy_for_level("fast"))
        encode_stream(data, "field", policy_for_level("default"))
    from .pipeline.fused import encode_frame_fused

    buf = np.empty(2 * raw.size + 512, np.uint8)
    for t in TRANSFORMS.values():  # the one-call chunk encoder
        for level in ("fast", "default"):
            encode_frame_fused(raw, 0, t, policy_for_level(level), buf)
    return time.perf_counter() - t0


def _warm_frames(raw, skewed) -> None:
    """The one-call chunk decoder, on frames of each transform and codec it handles (built
    here: ``pipeline`` imports this module while it loads)."""
    import numpy as np

    from ._checksum import xxh3_64
    from .codecs import get_codec
    from .container.format import CHUNK_MAGIC, NO_CONTEXT
    from .container.frames import HEADROOM, StreamInfo, build_frame
    from .pipeline.fused import decode_frame_fused
    from .stages import TRANSFORMS

    for t in TRANSFORMS.values():
        for data in (skewed, raw):
            for cid in (0, 3, 4):
                streams = t.forward(data)
                payloads = [s if cid == 0 else get_codec(cid).encode(s) for s in streams]
                if any(p is None for p in payloads):
                    continue
                payloads = [bytes(memoryview(p)) for p in payloads]
                infos = [
                    StreamInfo(cid, NO_CONTEXT, s.size, len(p)) for s, p in zip(streams, payloads)
                ]
                (frame,) = build_frame(
                    CHUNK_MAGIC, t.transform_id, 0, data.size, xxh3_64(data), infos, payloads
                )
                fb = np.empty(HEADROOM + frame.size, np.uint8)
                fb[HEADROOM:] = frame
                row = {"transform": t.transform_id, "src_offset": 0, "n_streams": t.n_streams}
                for shift in (0, 1):
                    out = np.empty(data.size + 1, np.uint8)[shift : shift + data.size]
                    decode_frame_fused(fb, frame.size, out, row)


def ensure_ready() -> None:
    """Make sure every kernel is compiled before the first one runs in this process."""
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        marker = _marker()
        if marker.exists():  # warm cache: each kernel loads from it on first call
            _ready = True
            return
        if os.environ.get("ZIPMODEL_QUIET_JIT") != "1":
            print(
                "zipmodel: compiling Numba kernels for this machine; this happens once "
                "(about a minute on a small machine) and is cached",
                file=sys.stderr,
                flush=True,
            )
        _ready = True  # set first: warmup itself calls back in here through the codecs
        try:
            secs = warmup()
        except BaseException:
            _ready = False
            raise
        mark_ready(secs)


def mark_ready(seconds: float) -> None:
    """Record that the kernels are compiled and cached on this machine."""
    global _ready
    _ready = True
    try:
        marker = _marker()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{seconds:.2f}\n")
    except OSError:
        pass
