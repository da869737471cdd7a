"""In-memory outputs and fresh-buffer preparation (``zipmodel._io``)."""

import numpy as np
import pytest

from zipmodel._io import MemoryOutput, new_bytes, prefault


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_memory_output_is_a_seekable_file(threads):
    rng = np.random.default_rng(0)
    pieces = [rng.integers(0, 256, n, dtype=np.uint8) for n in (5, 1 << 20, 7 << 20, 3, 0)]
    out, want = MemoryOutput(), bytearray()
    for p in pieces:  # writes that span block boundaries
        assert out.write(p) == p.size
        want += p.tobytes()
    assert out.tell() == len(want)
    out.seek(2)
    out.write(b"XYZ")  # a rewritten header, as ContainerWriter.finish does
    want[2:5] = b"XYZ"
    assert out.seek(0, 2) == len(want)
    out.write(memoryview(b"tail"))
    want += b"tail"
    got = out.getvalue(threads=threads)
    assert isinstance(got, bytes) and got == bytes(want)
    out.close()


def test_memory_output_empty_and_errors():
    out = MemoryOutput()
    assert out.getvalue() == b""
    with pytest.raises(ValueError):
        out.seek(-1)


@pytest.mark.parametrize("n", [0, 1, 2, 4095, 1 << 20, (9 << 20) + 7])
@pytest.mark.parametrize("threads", [1, 2])
def test_prepared_buffers_keep_their_contents(n, threads):
    b, view = new_bytes(n, threads=threads)
    assert view.size == n and not view.any()
    view[:] = 7
    arr = np.full(n, 5, np.uint8)
    prefault(arr, threads=threads, min_size=0)
    assert (arr == 5).all()
    if n >= 2:
        assert b == bytes([7]) * n


def test_memory_output_ends_at_getvalue():
    out = MemoryOutput()
    out.write(b"x" * 100)
    assert out.getvalue(threads=2) == b"x" * 100
    with pytest.raises(ValueError):
        out.write(b"more")
    out.close()
