"""Many models at once, on Dask: each source (a file or a model folder) is one task.

:func:`batch` runs on a ``LocalCluster`` of worker processes by default, or on any existing
Dask cluster (``scheduler="tcp://host:8786"``, ``client=``): the unit of work is one source,
coded in the worker by the same :func:`zipmodel.compress_file` (``zipmodel.files``) /
:func:`zipmodel.compress_dir` call, with the same options, that ``zipmodel compress`` makes,
so every output is the container ``compress`` would write, written atomically by the api.
No scheduler of our own (DESIGN.md §9).

The client process appends one JSON line per source to ``OUTDIR/batch.jsonl`` as it finishes
(flushed per line): status (``ok``, ``failed``, ``duplicate``), sizes, ratio, seconds, the
worker, and the SHA-256 of source and output with the size and mtime of both. Running the
same batch again skips a source when its last ``ok`` line still holds: the output's size and
``mtime_ns`` equal the record (else its SHA-256 must), the source's size and ``mtime_ns``
too (else its SHA-256 is recomputed and compared), same base and options. A source whose
content equals another's in the batch (same size, then same SHA-256) is coded once; its line
points to the one output. A worker that dies mid-task (killed, out of memory) has its task
run again elsewhere by the scheduler while the nanny restarts it; a source that fails is
recorded with its message and the others go on.

Dask is an optional extra (``pip install 'zipmodel[batch]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .batchplan import (
    RECORD,
    WARM_ENV,
    BatchItem,
    file_sha256,
    hash_source,
    load_records,
    plan,
    read_manifest,
    stamp,
    stamps,
    still_holds,
    tree_sha256,
)
from .errors import MissingDependencyError, ZipmodelError

__all__ = ["RECORD", "BatchItem", "BatchProgress", "BatchReport", "batch"]

# A worker dying this often while running one task makes the scheduler give up on it
# (distributed's ``allowed-failures``, whose default we keep); ``retries`` covers errors
# raised by the task itself that may not recur (I/O on a network filesystem).
DEFAULT_RETRIES = 2


@dataclass
class BatchProgress:
    """Where a batch stands, given to ``progress`` after each source."""

    sources: int
    done: int = 0  # finished this run: ok, duplicate or failed
    failed: int = 0
    skipped: int = 0  # recorded ok by an earlier run, left alone
    bytes_total: int = 0  # source bytes to code this run
    bytes_done: int = 0


@dataclass
class BatchReport:
    output_dir: str
    items: list[BatchItem]
    seconds: float
    workers: int  # the cluster's, when one was started or given; 0 when nothing ran

    @property
    def failed(self) -> list[BatchItem]:
        return [i for i in self.items if i.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed


# -- the task, run in a worker ----------------------------------------------------------------
def _compress_task(
    source: str, output: str, kind: str, base: str | None, options: dict, threads: int
) -> dict[str, Any]:
    """Compress one source as ``zipmodel compress`` does; the record's measured part.

    Errors about the source itself (invalid, unsupported) come back as a ``failed`` record:
    they would recur on every retry. Anything else is raised, and retried by Dask.
    """
    from . import files as api  # compress_file below the api face (docs/concepts.md, Layers)
    from . import folder as folders

    worker = _worker_name()
    try:
        t0 = time.perf_counter()
        if kind == "folder":
            rep = folders.compress_dir(
                source, output, threads=threads, force=True, base=base, **options
            )
            out = {
                "source_bytes": rep.original_bytes,
                "output_bytes": rep.stored_bytes,
                "ratio": round(rep.ratio, 6),
                "source_sha256": tree_sha256(source),
                "output_sha256": tree_sha256(output),
            }
        else:
            rep = api.compress_file(
                source, output, threads=threads, force=True, base=base, **options
            )
            out = {
                "source_bytes": rep.input_bytes,
                "output_bytes": rep.output_bytes,
                "ratio": round(rep.ratio, 6),
                "source_sha256": rep.summary.sha256,  # the index records it
                "output_sha256": file_sha256(output),
            }
        out.update(
            status="ok",
            seconds=round(time.perf_counter() - t0, 4),
            worker=worker,
            threads=threads,
        )
        out.update(stamps(source, output, kind))
        return out
    except ZipmodelError as exc:
        return {"status": "failed", "message": str(exc), "hint": exc.hint, "worker": worker}


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


# -- the batch ---------------------------------------------------------------------------------
def batch(
    sources: Sequence[str | os.PathLike] = (),
    output_dir: str | os.PathLike = "zm-batch",
    *,
    manifest: str | os.PathLike | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    scheduler: str | None = None,
    client: Any = None,
    level: str = "default",
    chunk_size: int | None = None,
    min_size: int | None = None,
    follow_symlinks: bool = False,
    base: str | os.PathLike | None = None,
    retries: int = DEFAULT_RETRIES,
    progress: Callable[[BatchProgress], None] | None = None,
    on_item: Callable[[BatchItem], None] | None = None,
    lossy: Any = None,
    **lossy_options: Any,
) -> BatchReport:
    """Compress many files and model folders into ``output_dir``, one Dask task each.

    ``sources`` (files or folders) and/or ``manifest`` (a JSONL file of ``{"source", "base",
    "output"}`` lines) say what; each output is ``output_dir/NAME.zm`` unless the manifest
    names it (relative to ``output_dir``). ``base`` applies to every source without its own.
    The options (``level``, ``chunk_size``, ``min_size`` and ``follow_symlinks`` for folders,
    ``lossy``: a :class:`~zipmodel.options.LossyOptions` or a preset with its keywords,
    as :func:`zipmodel.compress_file` takes them) are those of ``zipmodel compress``, and so
    is every output, byte for byte.

    Where it runs: ``client`` (a ``distributed.Client``), else ``scheduler`` (an address),
    else a ``LocalCluster`` of ``workers`` processes (default: the cores //
    ``threads_per_worker``) started here and closed at the end, forked where the platform
    allows from a fork server that has loaded zipmodel and the level's kernels (a script
    calling this needs the ``if __name__ == "__main__":`` guard, as for any Dask program).
    Each worker process runs one task at a time with ``threads_per_worker`` zipmodel
    threads, so its memory stays at chunk size × threads whatever the models' sizes.
    Sources go to Dask largest first, one per task slot, so the next goes to whichever
    worker is free first.

    ``output_dir/batch.jsonl`` gets one line per source as it finishes; a source an earlier
    run recorded ``ok`` is skipped when the record still holds (nothing is started when every
    source is). ``progress`` is called with a :class:`BatchProgress` after each source,
    ``on_item`` with its :class:`BatchItem`. An interruption (Ctrl-C) cancels the tasks,
    closes a cluster started here and removes the temporaries of unfinished outputs before
    it propagates. Returns a :class:`BatchReport`; failed sources are in it, not raised.
    """
    t0 = time.perf_counter()
    out_dir = Path(output_dir)
    entries = _entries(sources, manifest)
    if threads_per_worker < 1:
        raise ValueError("threads_per_worker must be at least 1")
    options, folder_options = _task_options(
        level, chunk_size, min_size, follow_symlinks, base, lossy, lossy_options
    )
    items, skipped = plan(entries, out_dir, os.fspath(base) if base is not None else None)
    for src, msg in skipped:
        item = BatchItem(src, "", status="skipped")
        item.record = {"source": src, "status": "skipped", "message": msg}
        items.append(item)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = BatchProgress(len(items))
    pending = _to_code(items, load_records(out_dir), options, folder_options, state)
    report = BatchReport(str(out_dir), items, 0.0, 0)
    if progress:
        progress(state)
    if pending:
        run = functools.partial(
            _run,
            workers=workers,
            threads=threads_per_worker,
            scheduler=scheduler,
            client=client,
            retries=retries,
        )
        report.workers = _code(
            pending, out_dir, options, folder_options, state, run, progress, on_item
        )
    report.seconds = time.perf_counter() - t0
    return report


def _entries(sources, manifest) -> list[dict[str, str | None]]:
    """The sources named, then the manifest's lines."""
    entries: list[dict[str, str | None]] = [
        {"source": os.fspath(s), "base": None, "output": None} for s in sources
    ]
    if manifest is not None:
        entries += read_manifest(manifest)
    if not entries:
        raise ZipmodelError("nothing to compress", hint="name SOURCES or a --manifest FILE")
    return entries


def _task_options(level, chunk_size, min_size, follow_symlinks, base, lossy, lossy_options):
    """What the api gets, as compress passes it (a bad combination fails here, before any
    cluster starts), for files and for folders; recorded, so that a rerun with other
    options codes again."""
    from .options import LossyOptions

    options: dict[str, Any] = {"level": level}
    if chunk_size is not None:
        options["chunk_size"] = chunk_size
    lossy_opts = LossyOptions.of(lossy, **lossy_options)
    if lossy_opts.enabled:
        if base is not None:
            raise ValueError("base= cannot be combined with a lossy stage")
        options["lossy"] = lossy_opts
    folder_options: dict[str, Any] = {"follow_symlinks": follow_symlinks}
    if min_size is not None:
        folder_options["min_size"] = min_size
    return options, folder_options


def _to_code(items, records, options, folder_options, state: BatchProgress) -> list[BatchItem]:
    """The items to code this run: those whose recorded ``ok`` line no longer holds (or
    that have none); the others are marked skipped."""
    pending: list[BatchItem] = []
    for item in items:
        if item.status == "skipped":
            state.skipped += 1
            continue
        rec = records.get((item.source, item.output))
        missing = not os.path.exists(item.source)
        if not missing and still_holds(item, rec, _record_options(item, options, folder_options)):
            item.status, item.record = "skipped", dict(rec)
            state.skipped += 1
        else:
            pending.append(item)
    return pending


def _code(pending, out_dir, options, folder_options, state, run, progress, on_item) -> int:
    """Code the pending items with ``run`` (the Dask side), appending each one's line to
    batch.jsonl as it finishes; returns the number of workers that ran them (0: none)."""
    with _record_file(out_dir) as log:

        def finish(item: BatchItem) -> None:
            log.write(json.dumps(item.record, ensure_ascii=False) + "\n")
            log.flush()
            state.done += 1
            state.failed += item.status == "failed"
            state.bytes_done += item.source_bytes
            if on_item:
                on_item(item)
            if progress:
                progress(state)

        for item in pending:  # sizes, for the order and to find candidate duplicates
            try:
                item.record["source_bytes"] = stamp(item.source, item.kind)[0]
            except OSError as exc:  # gone: no cluster needed to say so
                _record(item, None, exc, options, folder_options)
                finish(item)
        pending = [i for i in pending if i.status != "failed"]
        state.bytes_total = sum(i.source_bytes for i in pending)
        if progress:
            progress(state)
        if not pending:
            return 0
        return run(pending, options, folder_options, finish)


def _record_options(item: BatchItem, options: dict, folder_options: dict) -> dict:
    """The options as batch.jsonl records them (JSON values: a rerun compares them)."""
    d = {**options, **folder_options} if item.kind == "folder" else dict(options)
    if "lossy" in d:
        d["lossy"] = d["lossy"].to_kwargs()
    return json.loads(json.dumps(d))


@contextlib.contextmanager
def _record_file(out_dir: Path):
    path = out_dir / RECORD
    torn = False
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        if f.seek(0, os.SEEK_END) > 0:  # a client killed mid-line left a torn line: end it
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        yield f


def _distributed():
    """Dask's ``distributed``, or the error that says how to install it (the only import of
    it on the client side)."""
    try:
        import distributed
    except ImportError:
        raise MissingDependencyError(
            "zipmodel batch needs Dask distributed",
            hint="pip install 'zipmodel[batch]'",
        ) from None
    return distributed


# What Dask's nanny sets before it spawns a worker (distributed.nanny.pre-spawn-environ); a
# forked worker inherits the fork server's environment instead, so the server gets them.
_WORKER_ENV = {
    "MALLOC_TRIM_THRESHOLD_": "65536",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
_PRELOAD = ["zipmodel.batchworker", "zipmodel.batching"]


def _fork_server(level: str) -> bool:
    """Start multiprocessing's fork server with :mod:`zipmodel.batchworker` preloaded, and
    say whether local workers can be forked from it (not on Windows).

    A spawned worker imports Dask and zipmodel and loads the kernels on its first task, each
    worker again; forked from the server, every worker starts with them loaded, once for
    all, and the server loads them while this process is still importing Dask (started
    first for that). Nothing waits here: the server takes the fork requests when ready.
    """
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return False
    from multiprocessing import forkserver

    env = {WARM_ENV: level, **{k: v for k, v in _WORKER_ENV.items() if k not in os.environ}}
    saved = {k: os.environ.get(k) for k in env}
    multiprocessing.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    try:
        os.environ.update(env)
        forkserver.ensure_running()  # a server already running (an earlier batch) is kept
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return True


@contextlib.contextmanager
def _cluster(workers: int | None, threads: int, scheduler: str | None, client: Any, level: str):
    """A ``distributed.Client``: ``client``, one of ``scheduler``, or of a ``LocalCluster``
    of worker processes started here (forked from the fork server where there is one) and
    closed at the end. Yields ``(client, cluster started here or None)``."""
    if client is not None:
        _distributed()
        yield client, None
        return
    if scheduler is not None:
        c = _distributed().Client(scheduler)
        try:
            yield c, None
        finally:
            _close(c, None)
        return
    forked = _fork_server(level)
    distributed = _distributed()
    import dask

    n = workers or max(1, (os.cpu_count() or 1) // threads)
    config = {"distributed.worker.multiprocessing-method": "forkserver"} if forked else {}
    with dask.config.set(config):  # for the nanny's restarts of a dead worker too
        cluster = distributed.LocalCluster(
            n_workers=n,
            threads_per_worker=1,  # one task per process; zipmodel's own threads inside it
            processes=True,
            dashboard_address=":0",  # no fixed port: another batch may run
            # zipmodel bounds its memory itself; a memory-mapped source's pages count in
            # RSS, which Dask's limit would mistake for a leak and kill the worker for.
            memory_limit=0,
            silence_logs=logging.CRITICAL,  # a failed source is reported once, by us
        )
        c = None
        try:
            c = distributed.Client(cluster)
            yield c, cluster
        finally:
            _close(c, cluster)


def _run(
    pending: list[BatchItem],
    options: dict,
    folder_options: dict,
    finish: Callable[[BatchItem], None],
    *,
    workers: int | None,
    threads: int,
    scheduler: str | None,
    client: Any,
    retries: int,
) -> int:
    """Submit ``pending`` (duplicates once), ``finish`` each as it completes; the number of
    workers."""
    level = str(options.get("level", "default"))
    futures: dict[Any, list[BatchItem]] = {}
    started: list[BatchItem] = []
    local = client is None and scheduler is None
    try:
        with _cluster(workers, threads, scheduler, client, level) as (c, _):
            n_workers = len(c.scheduler_info().get("workers", {}))
            try:
                _feed(c, pending, options, folder_options, threads, retries, futures, started,
                      finish)  # fmt: skip
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    except BaseException:
        if local:  # our workers died with the cluster; a remote task finishes atomically
            for item in started:
                _sweep_temporaries(item.output)
        raise
    for item in started:  # a killed worker's temporaries; no task of ours runs any more
        _sweep_temporaries(item.output)
    return n_workers


def _feed(client, pending, options, folder_options, threads, retries, futures, started, finish):
    """Hand the tasks to Dask largest first, as many at a time as the cluster has task
    slots (its workers' threads), the next one whenever one finishes.

    Handed all at once, Dask places every task on a worker at once, two per worker here, and
    a worker that finishes early does not take the queued task of a busy one (a group of
    four tasks is too small for Dask's queuing); fed this way, the next largest source goes
    to whichever worker is free first. Retries of a task whose worker died stay Dask's.
    """
    groups = _duplicates(client, pending)
    todo = sorted((i for i in pending if id(i) not in groups.dups), key=lambda i: -i.source_bytes)
    todo.reverse()  # pop() takes the largest
    ac = _distributed().as_completed()

    def submit(item: BatchItem) -> None:
        Path(item.output).parent.mkdir(parents=True, exist_ok=True)
        opts = {**options, **folder_options} if item.kind == "folder" else options
        fut = client.submit(
            _compress_task,
            item.source,
            item.output,
            item.kind,
            item.base,
            opts,
            threads,
            key=f"zipmodel-compress-{hashlib.sha1(item.output.encode()).hexdigest()[:16]}"
            f"-{os.getpid()}-{time.monotonic_ns()}",
            pure=False,
            retries=retries,
            priority=item.source_bytes,  # a retried task goes before the ones queued
        )
        futures[fut] = [item, *groups.of.get(id(item), [])]
        started.append(item)
        ac.add(fut)

    def top_up() -> None:
        slots = max(1, sum(client.nthreads().values())) if todo else 0
        while todo and len(futures) < slots:
            submit(todo.pop())

    top_up()
    for fut in ac:
        primary, *dups = futures.pop(fut)
        if fut.status == "finished":
            res, exc = fut.result(), None
        else:
            res, exc = None, fut.exception()
        _record(primary, res, exc, options, folder_options)
        finish(primary)
        for d in dups:
            _record_duplicate(d, primary, options, folder_options)
            finish(d)
        top_up()


def _close(client, cluster) -> None:
    with contextlib.suppress(Exception):
        client.close()
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close()


class _Groups:
    def __init__(self):
        self.of: dict[int, list[BatchItem]] = {}  # id(primary) -> its duplicates
        self.dups: set[int] = set()  # id() of the duplicates (not submitted)


def _duplicates(client, todo: list[BatchItem]) -> _Groups:
    """Sources with equal content (and base): the first is coded, the others point to it.
    Only sources of equal size are hashed (on the workers)."""
    groups = _Groups()
    by_size: dict[tuple, list[BatchItem]] = {}
    for item in todo:
        by_size.setdefault((item.kind, item.source_bytes, item.base), []).append(item)
    candidates = [i for g in by_size.values() if len(g) > 1 for i in g]
    if not candidates:
        return groups
    futs = client.map(
        hash_source,
        [i.source for i in candidates],
        [i.kind for i in candidates],
        pure=False,
        key=[
            f"zipmodel-hash-{n}-{os.getpid()}-{time.monotonic_ns()}" for n in range(len(candidates))
        ],
    )
    seen: dict[tuple, BatchItem] = {}
    for item, fut in zip(candidates, futs):
        try:
            digest = fut.result()
        except Exception:  # unreadable: its compress task reports why
            continue
        item.record["source_sha256"] = digest
        key = (item.kind, item.base, digest)
        first = seen.setdefault(key, item)
        if first is not item:
            groups.of.setdefault(id(first), []).append(item)
            groups.dups.add(id(item))
    return groups


def _base_record(item: BatchItem, options: dict, folder_options: dict) -> dict[str, Any]:
    return {
        "source": item.source,
        "item_output": item.output,  # where this source's own output would go: the key
        "output": item.output,
        "kind": item.kind,
        "base": item.base,
        "options": _record_options(item, options, folder_options),
        "zipmodel": __version__,
    }


def _record(item, res, exc, options, folder_options) -> None:
    rec = _base_record(item, options, folder_options)
    if res is not None:
        rec.update(res)
    else:
        rec.update(status="failed", message=_message(exc), hint="")
    if rec["status"] != "ok":
        rec["output"] = None
        rec.setdefault("source_bytes", item.source_bytes)
    rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    item.status, item.record, item.error = rec["status"], rec, exc


def _record_duplicate(item: BatchItem, primary: BatchItem, options, folder_options) -> None:
    rec = _base_record(item, options, folder_options)
    p = primary.record
    if primary.status != "ok":
        rec.update(
            status="failed",
            output=None,
            source_bytes=item.source_bytes,
            message=f"same content as {primary.source}, which failed: {p.get('message', '')}",
            hint=p.get("hint", ""),
        )
    else:
        s = stamp(item.source, item.kind)
        rec.update(
            status="duplicate",
            output=primary.output,
            duplicate_of=primary.source,
            **{
                k: p[k]
                for k in ("source_bytes", "output_bytes", "ratio", "source_sha256", "output_sha256")
            },
            seconds=0.0,
            worker=None,
            source_size=s[0],
            source_mtime_ns=s[1],
            output_size=p["output_size"],
            output_mtime_ns=p["output_mtime_ns"],
        )
    rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    item.status, item.record = rec["status"], rec


def _message(exc: BaseException | None) -> str:
    if exc is None:
        return "failed"
    if isinstance(exc, ZipmodelError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    name = type(exc).__name__
    if name == "KilledWorker":
        return "its worker died each time it ran it (out of memory?)"
    return f"{name}: {exc}"


# The temporaries the api names (zipmodel._io.atomic_output: .NAME.zmtmp-PID-XXXXXXXX; folder
# outputs: .NAME.XXXXXXXX.tmp), matched here without the pid check of the api's own sweep:
# the pid may be another machine's, and no task of this batch writes them any more.
def _temp_pattern(name: str) -> re.Pattern[str]:
    n = re.escape(f".{name}")
    return re.compile(rf"{n}\.zmtmp-[0-9]{{1,10}}-[a-z0-9_]{{8}}|{n}\.[a-z0-9_]{{8}}\.tmp")


def _sweep_temporaries(output: str) -> None:
    p = Path(output)
    pattern = _temp_pattern(p.name)
    with contextlib.suppress(OSError):
        for name in os.listdir(p.parent):
            if pattern.fullmatch(name):
                q = p.parent / name
                if q.is_dir() and not q.is_symlink():
                    shutil.rmtree(q, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        q.unlink()
