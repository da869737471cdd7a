"""``zipmodel.gpu.staging``: chunks reach device memory through a ring of reused host memory.

No GPU here: a fake device runs each copy late, on its own thread, in issue order (as a CUDA
stream does), and checks that the host bytes it copies were not touched between the copy's
issue and its completion, which is what the ring must guarantee before reusing a region.
"""

from __future__ import annotations

import queue
import random
import threading
import time

import numpy as np
import pytest

import edgecases
import zipmodel
from zipmodel.container.reader import ContainerReader
from zipmodel.errors import CorruptDataError
from zipmodel.gpu import staging
from zipmodel.gpu.staging import Backend, StagingRing, load_segments, ring_size
from zipmodel.readers.base import TENSOR


class FakeDevice(Backend):
    """Device buffers are numpy arrays; copies complete late, in order, on one thread."""

    def __init__(self, seed: int = 0, max_delay: float = 2e-4):
        self.rng = random.Random(seed)
        self.max_delay = max_delay
        self.errors: list[str] = []
        self.staged = self.plain = 0
        self.started = False
        self._q: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, daemon=True)
        self._worker.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            dst, offset, src, snapshot, event = item
            time.sleep(self.rng.random() * self.max_delay)
            if not np.array_equal(src, snapshot):
                self.errors.append(f"source of the copy to {offset} changed before it ran")
            dst[offset : offset + src.size] = src
            event.set()

    def host_buffer(self, nbytes: int) -> np.ndarray:
        return np.full(nbytes, 0xAB, np.uint8)

    def device_buffer(self, nbytes: int):
        return np.full(nbytes, 0xCD, np.uint8)

    def start(self) -> None:
        self.started = True

    def copy(self, dst, offset: int, src: np.ndarray, staged: bool):
        assert self.started, "a copy before start()"
        if staged:
            self.staged += 1
        else:
            self.plain += 1
        event = threading.Event()
        self._q.put((dst, offset, src, src.copy(), event))
        return event

    def wait(self, event) -> None:
        assert event.wait(30), "copy never completed"

    def finish(self) -> None:
        done = threading.Event()
        self._q.put((np.empty(0, np.uint8), 0, np.empty(0, np.uint8), np.empty(0, np.uint8), done))
        assert done.wait(30)

    def close(self) -> None:
        self._q.put(None)
        self._worker.join()


@pytest.fixture
def device():
    d = FakeDevice()
    yield d
    d.close()


def _checkpoint(tmp_path, chunk_size: int, **kw):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((300, 96)) * 0.02).astype(np.float32)
    emb = (w.view(np.uint32) >> 16).astype(np.uint16)
    spec = [
        ("embed.weight", "BF16", [300, 96], emb.tobytes()),
        ("layer.0.weight", "F32", [300, 96], w.tobytes()),
        ("lm_head.weight", "BF16", [300, 96], emb.tobytes()),  # tied: stored once
        ("norm.weight", "F32", [96], np.ones(96, np.float32).tobytes()),
        ("step", "I64", [], np.int64(7).tobytes()),
        ("empty", "F32", [0], b""),
    ]
    src = tmp_path / "m.safetensors"
    src.write_bytes(edgecases.safetensors_bytes(spec))
    zm = tmp_path / "m.safetensors.zm"
    zipmodel.compress_file(src, zm, chunk_size=chunk_size, **kw)
    return src, zm


def _owners(r) -> list[int]:
    segs = r.index.segments
    return [i for i, e in enumerate(segs) if e.segment.kind == TENSOR and e.dup_of is None]


def _check(src, zm, device, threads, ring_bytes=None):
    data = src.read_bytes()
    with ContainerReader(zm) as r:
        owners = _owners(r)
        dev, ring = load_segments(r, owners, device, threads=threads, ring_bytes=ring_bytes)
        for o in owners:
            seg = r.index.segments[o].segment
            assert dev[o].tobytes() == data[seg.offset : seg.end], seg.name
    assert device.errors == []
    return ring


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("chunk_size", [4 << 10, 16 << 10])
def test_every_tensor_arrives_whole(tmp_path, device, threads, chunk_size):
    src, zm = _checkpoint(tmp_path, chunk_size)
    ring = _check(src, zm, device, threads)
    assert ring.fallbacks == 0  # the default ring holds the whole decode window
    assert device.staged > 0 and device.plain == 0


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_a_small_ring_wraps_waits_and_falls_back(tmp_path, threads):
    """A ring of three chunks: regions are reused many times, only after their copies end,
    and chunks that would wait on an uncopied chunk go through ordinary memory."""
    src, zm = _checkpoint(tmp_path, 4 << 10)
    for seed in range(3):
        device = FakeDevice(seed, max_delay=1e-3)
        try:
            ring = _check(src, zm, device, threads, ring_bytes=3 * (4 << 10) + 100)
            if threads == 1:  # one chunk in flight: always staged, the ring wraps many times
                assert ring.fallbacks == 0 and device.staged > 8
            else:  # a decode window holds more than the ring: both routes are taken
                assert ring.fallbacks > 0 and device.staged > 0 and device.plain > 0
        finally:
            device.close()


def test_a_chunk_larger_than_the_ring_is_copied_from_ordinary_memory(tmp_path, device):
    src, zm = _checkpoint(tmp_path, 64 << 10)
    ring = _check(src, zm, device, 2, ring_bytes=1000)
    assert ring.fallbacks > 0 and device.plain > 0


def test_staged_tensors_are_copied_from_their_decoded_result(tmp_path, device):
    _src, zm = _checkpoint(tmp_path, 4 << 10, lossy="int8")
    want = zipmodel.load(zm)
    with ContainerReader(zm) as r:
        owners = _owners(r)
        assert any(r.index.segments[o].stage is not None for o in owners)
        dev, _ = load_segments(r, owners, device, threads=2)
        for o in owners:
            seg = r.index.segments[o].segment
            assert dev[o].tobytes() == want[seg.name].tobytes(), seg.name
    assert device.errors == [] and device.plain > 0


def test_a_corrupt_chunk_raises_after_the_copies_drain(tmp_path, device):
    _src, zm = _checkpoint(tmp_path, 4 << 10)
    blob = bytearray(zm.read_bytes())
    with ContainerReader(zm) as r:
        row = r.index.chunks[len(r.index.chunks) // 2]
        blob[int(row["frame_offset"]) + int(row["frame_size"]) - 3] ^= 0x40
        owners = _owners(r)
    bad = tmp_path / "bad.zm"
    bad.write_bytes(bytes(blob))
    with ContainerReader(bad) as r, pytest.raises(CorruptDataError):
        load_segments(r, owners, device, threads=2)
    assert device.errors == []


def test_ring_hands_out_disjoint_live_regions():
    d = FakeDevice()
    try:
        ring = StagingRing(d, 100)
        d.start()
        a, ra = ring.take(40)
        _b, rb = ring.take(40)
        assert ring.take(40) is None  # would need a's region: its copy is not issued
        assert ring.fallbacks == 1
        ev = d.copy(np.empty(40, np.uint8), 0, a, True)
        ring.issued(ra, ev)
        _c, rc = ring.take(40)  # wraps to 0 once a's copy has completed
        assert rc[0] == 0 and ev.is_set()
        assert ring.take(101) is None and ring.take(0) is None
        d.finish()
        assert rb[:2] == [40, 80]
    finally:
        d.close()


def test_ring_size_covers_the_window():
    assert ring_size(2, 1 << 20) >= 6 * (2 << 20)
    assert ring_size(8, 4 << 20) > ring_size(2, 4 << 20)


def test_load_to_cuda_goes_through_the_staging_ring(tmp_path, monkeypatch):
    """``zipmodel.load(device="cuda")`` wiring, with torch CPU tensors standing in for the
    device and the fake copy engine for CUDA streams."""
    torch = pytest.importorskip("torch")
    from zipmodel import loading

    created = []

    class FakeCuda(FakeDevice):
        def __init__(self, torch_mod, dev):
            super().__init__()
            created.append(self)

        def device_buffer(self, nbytes: int):
            return torch.full((nbytes,), 0xCD, dtype=torch.uint8)

        def _run(self) -> None:  # numpy views of the torch "device" buffers
            while True:
                item = self._q.get()
                if item is None:
                    return
                dst, offset, src, snap, event = item
                if isinstance(dst, torch.Tensor):
                    dst = dst.numpy()
                if not np.array_equal(src, snap):
                    self.errors.append("changed")
                dst[offset : offset + src.size] = src
                event.set()

    monkeypatch.setattr(staging, "TorchCuda", FakeCuda)
    monkeypatch.setattr(loading, "_is_cuda", lambda torch, d: str(d).startswith("cuda"))
    monkeypatch.setattr(loading, "_torch", lambda d: torch)
    _src, zm = _checkpoint(tmp_path, 4 << 10)
    try:
        got = zipmodel.load(zm, device="cuda", threads=2)
        want = zipmodel.load(zm, framework="torch")
        assert created and created[0].errors == [] and created[0].staged > 0
        assert list(got) == list(want)
        for k, t in want.items():
            assert got[k].dtype == t.dtype and got[k].shape == t.shape, k
            assert got[k].reshape(-1).view(torch.uint8).numpy().tobytes() == (
                t.reshape(-1).view(torch.uint8).numpy().tobytes()
            ), k
        assert got["lm_head.weight"].data_ptr() == got["embed.weight"].data_ptr()  # tied
        # a PyTorch checkpoint: views with offsets and strides, an empty tensor
        w = torch.randn(12, 10, generator=torch.Generator().manual_seed(0))
        state = {"w": w, "w_t": w.t(), "w_rows": w[3:5], "none": torch.empty(0, 3)}
        pt = tmp_path / "sd.pt"
        torch.save(state, pt)
        zipmodel.compress_file(pt, chunk_size=4 << 10)
        sd = zipmodel.load(str(pt) + ".zm", device="cuda", threads=2)
        for name, t in state.items():
            assert sd[name].shape == t.shape and sd[name].stride() == t.stride(), name
            assert torch.equal(sd[name], t), name
    finally:
        for d in created:
            d.close()
