"""File plumbing shared by the API: mapped sources and atomic outputs.

Sources are memory-mapped read-only, so readers and encoders see zero-copy ``uint8`` views and
the input can never be modified. Outputs are written to a hidden temporary file beside the
destination, flushed to the disk and renamed into place only on success, so an error, Ctrl-C
or a signal leaves nothing behind, an existing file is replaced atomically, and a power cut
after the rename cannot lose the output (``--rm`` deletes the input only after that). An
output keeps its source's permission bits and times (:class:`FileMeta`), as zstd's do.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import re
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import OutputExistsError, ZipmodelError

__all__ = [
    "FileMeta",
    "MemoryOutput",
    "Source",
    "atomic_output",
    "fsync_dir",
    "fsync_file",
    "new_bytes",
    "prefault",
    "remove_stale_temporaries",
    "umask",
]


def new_bytes(n: int, *, threads: int = 1, prefault_pages: bool = True) -> tuple[bytes, np.ndarray]:
    """A new ``bytes`` object of ``n`` bytes and a writable uint8 view of its buffer.

    ``bytes(n)`` gets fresh, lazily zeroed pages from the allocator (no memset), so decoders
    can fill the result in place instead of decoding into an array and copying it into a
    ``bytes`` at the end (a full extra pass over memory). Large ones get huge pages, mapped
    up front on ``threads`` threads when ``prefault_pages`` (see :func:`prefault`). The
    object is private to the caller until returned. On interpreters other than CPython, or
    for n < 2 (CPython shares those objects), the view is of a private array and the caller
    must use :func:`finish_bytes`.
    """
    if n >= 2 and sys.implementation.name == "cpython":
        import ctypes

        b = bytes(n)
        addr = ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value
        view = np.ctypeslib.as_array((ctypes.c_ubyte * n).from_address(addr))
        if prefault_pages:
            prefault(view, threads=threads)
        else:
            _advise_huge(view)
        return b, view
    arr = np.zeros(n, np.uint8)
    return b"", arr


_HUGE = 2 << 20
_MADV_HUGEPAGE = 14
_MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels answer EINVAL and nothing happens
_madvise = None


def prefault(arr: np.ndarray, *, threads: int = 1, min_size: int = 1 << 20) -> None:
    """Prepare a fresh output buffer that several threads are about to fill.

    Asks Linux for transparent huge pages (as numpy does for its big arrays: first touches
    of 4 KiB pages cost several times more), then maps every page now
    (``MADV_POPULATE_WRITE``), in ``threads`` disjoint 2 MiB-aligned slices at once: two
    decoding threads faulting the same huge pages in wait on each other (the timings are in
    benches/results-design-notes.md). Contents are untouched; a no-op off Linux, for small
    buffers, and where the kernel lacks the advice (before 5.14).
    """
    n = int(arr.nbytes)
    if n < min_size or not _advise_huge(arr):
        return
    addr = int(arr.ctypes.data)
    page = mmap.PAGESIZE
    start = (addr + page - 1) & ~(page - 1)
    end = (addr + n) & ~(page - 1)
    if end <= start:
        return
    cuts = _cuts(start, end, threads if n >= 8 << 20 else 1)
    advise = _madvise
    if len(cuts) <= 2:
        advise(start, end - start, _MADV_POPULATE_WRITE)
        return
    from .threads import worker_pool

    list(
        worker_pool(threads).map(
            lambda ab: advise(ab[0], ab[1] - ab[0], _MADV_POPULATE_WRITE),
            itertools.pairwise(cuts),
        )
    )


def _advise_huge(arr: np.ndarray) -> bool:
    """``MADV_HUGEPAGE`` on the whole 2 MiB pages inside ``arr``; False where there is no
    ``madvise`` to call (then nothing else should be tried)."""
    global _madvise
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _madvise is None:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)  # (ctypes calls release the GIL)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            libc.madvise.restype = ctypes.c_int
            _madvise = libc.madvise
    except (OSError, AttributeError):
        return False
    addr, n = int(arr.ctypes.data), int(arr.nbytes)
    start = (addr + _HUGE - 1) & ~(_HUGE - 1)
    end = (addr + n) & ~(_HUGE - 1)
    if end > start:
        _madvise(start, end - start, _MADV_HUGEPAGE)
    return True


def _cuts(start: int, end: int, parts: int) -> list[int]:
    """``start``, up to ``parts - 1`` 2 MiB-aligned cut points, ``end`` (no empty pieces)."""
    cuts = [start]
    for k in range(1, max(1, parts)):
        c = (start + (end - start) * k // parts) & ~(_HUGE - 1)
        if cuts[-1] < c < end:
            cuts.append(c)
    cuts.append(end)
    return cuts


class MemoryOutput:
    """A seekable, writable binary file in memory whose result is one ``bytes`` object.

    ``io.BytesIO`` grows by ``realloc`` into fresh 4 KiB pages: writing minilm_fp32's 75 MB
    container cost 18,700 page faults, a third of a 1-thread compress. This one writes into
    8 MiB anonymous mappings that ask for huge pages (4 faults a block, where the kernel has
    them), and :meth:`getvalue` copies them once into a ``bytes``, on several threads.
    """

    BLOCK = 8 << 20

    def __init__(self) -> None:
        self._blocks: list[tuple[np.ndarray, mmap.mmap | None] | None] = []
        self._pos = 0
        self._size = 0

    def _new_block(self) -> tuple[np.ndarray, mmap.mmap | None]:
        flags = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)
        try:
            mm = mmap.mmap(-1, self.BLOCK, flags=flags) if flags else None
        except (OSError, ValueError):
            mm = None
        if mm is None:
            return np.empty(self.BLOCK, np.uint8), None
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            with contextlib.suppress(OSError):
                mm.madvise(mmap.MADV_HUGEPAGE)
        return np.frombuffer(mm, np.uint8), mm

    def write(self, b) -> int:
        src = np.frombuffer(memoryview(b).cast("B"), np.uint8)
        n = int(src.size)
        pos, done = self._pos, 0
        while done < n:
            k, off = divmod(pos, self.BLOCK)
            while k >= len(self._blocks):
                self._blocks.append(self._new_block())
            take = min(n - done, self.BLOCK - off)
            block = self._blocks[k]
            if block is None:
                raise ValueError("write after getvalue()")
            block[0][off : off + take] = src[done : done + take]
            pos += take
            done += take
        self._pos = pos
        self._size = max(self._size, pos)
        return n

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        if base + pos < 0:
            raise ValueError("negative seek position")
        self._pos = base + pos
        return self._pos

    def seekable(self) -> bool:
        return True

    def getvalue(self, threads: int = 1) -> bytes:
        """The bytes written, copied on ``threads`` threads (numpy copies without the GIL).

        Each block is released once copied, so the peak is the result plus a block per
        thread (``io.BytesIO`` shares its buffer; a full second copy would double a large
        in-memory compress). This ends the output: it takes no more writes.
        """
        n = self._size
        b, view = new_bytes(n, threads=threads, prefault_pages=False)

        def copy(k: int) -> None:
            a = k * self.BLOCK
            m = min(self.BLOCK, n - a)
            block = self._blocks[k]
            self._blocks[k] = None
            if block is None:
                raise ValueError("getvalue() called twice")
            arr, mm = block
            view[a : a + m] = arr[:m]
            del arr, block  # (a mapping with a live view cannot close)
            if mm is not None:
                mm.close()

        blocks = range((n + self.BLOCK - 1) // self.BLOCK)
        if threads > 1 and len(blocks) > 1:
            from .threads import worker_pool

            list(worker_pool(threads).map(copy, blocks))
        else:
            for k in blocks:
                copy(k)
        return finish_bytes(b, view)

    def close(self) -> None:
        maps = [b[1] for b in self._blocks if b is not None and b[1] is not None]
        self._blocks = []  # (the views go first: a mapping with exports cannot close)
        for mm in maps:
            mm.close()


def finish_bytes(b: bytes, view: np.ndarray) -> bytes:
    """The filled result of :func:`new_bytes`."""
    return b if len(b) == view.size else view.tobytes()


class Source:
    """A read-only, memory-mapped view of an input file (or of bytes already in memory)."""

    def __init__(self, data: np.ndarray, name: str, *, _keep: object = None):
        self.data = data  # uint8, read-only
        self.name = name
        self.size = int(data.size)
        self._keep = _keep  # the mmap or file that backs ``data``

    @classmethod
    def open(cls, path: str | os.PathLike) -> Source:
        """Map ``path`` read-only. Directories and missing files raise ``ZipmodelError``."""
        p = Path(path)
        try:
            f = open(p, "rb")  # noqa: SIM115 (closed below, after mapping)
        except FileNotFoundError:
            raise ZipmodelError("no such file", path=p) from None
        except IsADirectoryError:
            raise ZipmodelError("is a directory", path=p) from None
        except PermissionError:
            raise ZipmodelError("permission denied", path=p) from None
        with f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return cls(np.zeros(0, np.uint8), str(p))
            try:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError):  # not mappable (a pipe or a special file): read it
                f.seek(0)
                data = np.frombuffer(f.read(), np.uint8)
                return cls(data, str(p))
        with contextlib.suppress(AttributeError, OSError):
            mm.madvise(mmap.MADV_SEQUENTIAL)
        return cls(np.frombuffer(mm, np.uint8), str(p), _keep=mm)

    # Below this, a whole mapped file in RSS is harmless, and keeping its pages saves the
    # re-faults (measured ~3% of compress time) of consumers that touch a range twice.
    RELEASE_MIN = 256 << 20

    def release(self, offset: int, size: int) -> None:
        """Drop this process's pages of ``[offset, offset + size)`` of a mapped file.

        The bytes stay valid (a later read faults them back in from the page cache); only the
        process's resident set shrinks, so compressing a file of many GB keeps RSS at about
        the chunks in flight. A no-op for in-memory sources.
        """
        mm = self._keep
        if not isinstance(mm, mmap.mmap) or size <= 0 or self.size < self.RELEASE_MIN:
            return
        page = mmap.PAGESIZE
        start = offset - offset % page  # dropping a page is always safe: it is read again
        end = min(offset + size, self.size)
        if end - start <= 0:
            return
        with contextlib.suppress(AttributeError, OSError, ValueError):
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    @classmethod
    def from_bytes(cls, data, name: str = "<bytes>") -> Source:
        """Wrap an in-memory buffer (bytes, bytearray, memoryview, numpy array) without copying."""
        arr = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
        arr = arr.reshape(-1).view(np.uint8)
        return cls(arr, name)

    def close(self) -> None:
        """Release the mapping (views handed out before must no longer be used)."""
        self.data = np.zeros(0, np.uint8)
        keep, self._keep = self._keep, None
        if isinstance(keep, mmap.mmap):
            with contextlib.suppress(BufferError):
                keep.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class FileMeta:
    """What a written file keeps of the one it was made from, as zstd and gzip do: the
    permission bits (``0o777``: never setuid, setgid or sticky) and the times."""

    mode: int
    mtime_ns: int
    atime_ns: int | None = None  # None: the time it is applied

    @classmethod
    def of(cls, path: str | os.PathLike) -> FileMeta | None:
        """``path``'s mode and times; None when it is not a regular file (a pipe, a device)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return cls(stat.S_IMODE(st.st_mode) & 0o777, st.st_mtime_ns, st.st_atime_ns)

    def apply(self, target: int | str | os.PathLike) -> None:
        """Give the open file ``target`` (a descriptor) or the file at ``target`` this mode
        and these times (a time the file system cannot hold is left as it is: only the mode
        protects anything)."""
        atime = self.atime_ns if self.atime_ns is not None else time.time_ns()
        if isinstance(target, int):
            os.fchmod(target, self.mode & 0o777)
        else:
            os.chmod(target, self.mode & 0o777)
        with contextlib.suppress(OSError, OverflowError):
            os.utime(target, ns=(atime, self.mtime_ns))


def umask() -> int:
    """The process's umask: from ``/proc`` on Linux, else by setting it and back (a moment
    in which another thread creating a file would get no umask)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of the folder ``path`` (a rename, a new file) durable.

    Where a folder cannot be opened or synced (Windows, some network file systems) there is
    nothing more to do; an I/O error is raised.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file written by someone else (``shutil``, ``Path.write_text``) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TEMP_TAG = ".zmtmp-"  # .{name}.zmtmp-{pid}-{random}: whose it is, and which process wrote it


def _temp_name(dest_name: str) -> re.Pattern[str]:
    # mkstemp's random part: 8 of [a-z0-9_]. No other name fits: after the tag come only
    # digits, a dash and those 8 characters, and a dot is none of them.
    return re.compile(re.escape(f".{dest_name}{TEMP_TAG}") + r"([0-9]{1,10})-[a-z0-9_]{8}")


def remove_stale_temporaries(dest: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed run of zipmodel left for ``dest``; returns them.

    Only files named as :func:`atomic_output` names them for this very ``dest``, regular
    files owned by this user, whose writing process no longer exists (``kill(pid, 0)``
    answers "no such process"). A live process's temporary (another zipmodel writing the
    same output right now) and anything else are left alone. POSIX only.
    """
    if os.name != "posix":
        return []
    p = Path(dest)
    parent = p.parent if str(p.parent) else Path(".")
    pattern = _temp_name(p.name)
    removed: list[Path] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        m = pattern.fullmatch(name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid <= 0 or pid == os.getpid() or _alive(pid):
            continue
        q = parent / name
        try:
            st = q.lstat()
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                continue
            q.unlink()
        except OSError:
            continue
        removed.append(q)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process (or a pid we cannot ask about): keep its file
    return True


_HELD = ("SIGINT", "SIGTERM", "SIGHUP")


def _hold_signals():
    """Block the termination signals in this thread (the main thread, where Python runs its
    handlers); returns what :func:`_release_signals` restores, or None where it cannot."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):
        return None
    sigs = {getattr(signal, n) for n in _HELD if hasattr(signal, n)}
    return signal.pthread_sigmask(signal.SIG_BLOCK, sigs)


def _release_signals(held) -> None:
    if held is not None:
        import signal

        signal.pthread_sigmask(signal.SIG_SETMASK, held)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike, *, force: bool = False, meta: FileMeta | None = None
) -> Iterator[tuple[int, Path]]:
    """Yield ``(fd, temp_path)`` of a temporary file that replaces ``path`` on success.

    Without ``force`` an existing ``path`` raises :class:`OutputExistsError` before anything is
    written. On any exception (``KeyboardInterrupt`` and the CLI's signal exception included:
    anything derived from ``BaseException``) the temporary file is removed. One a killed
    process could not remove is removed by the next ``atomic_output`` to the same ``path``
    (:func:`remove_stale_temporaries`).

    The result gets ``meta``'s mode and times (the source's, as zstd keeps them), or the usual
    permissions (``0o666`` less the umask) without one. Before the rename the file's data
    are flushed to the disk (``fsync``), and the folder after it, so that a caller deleting
    the input next (``--rm``) never leaves a power cut with neither.
    """
    dest = Path(path)
    if dest.exists() and not force:
        raise OutputExistsError(
            "output already exists", path=dest, hint="use -f/--force to overwrite it"
        )
    if dest.is_dir():
        raise ZipmodelError("output is a directory", path=dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    remove_stale_temporaries(dest)
    # A signal between mkstemp creating the file and the try below would leave it behind:
    # hold SIGINT/SIGTERM/SIGHUP until the try owns the file (then they are delivered).
    held = _hold_signals()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}{TEMP_TAG}{os.getpid()}-", dir=parent)
    except FileNotFoundError:
        _release_signals(held)
        raise ZipmodelError("output directory does not exist", path=parent) from None
    except PermissionError:
        _release_signals(held)
        raise ZipmodelError("cannot write to the output directory", path=parent) from None
    except BaseException:
        _release_signals(held)
        raise
    tmp_path = Path(tmp)
    try:
        _release_signals(held)
        yield fd, tmp_path
        if meta is not None:
            meta.apply(fd)
        else:  # mkstemp creates 0600; give the output the usual permissions (umask applied)
            os.fchmod(fd, 0o666 & ~umask())
        os.fsync(fd)
        os.close(fd)
        fd = -1
        if dest.exists() and not force:  # appeared meanwhile
            raise OutputExistsError("output already exists", path=dest)
        os.replace(tmp_path, dest)
    except BaseException:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    fsync_dir(parent)
