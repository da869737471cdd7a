"""The Hugging Face Hub: push a model compressed, pull it back as a normal model folder.

>>> from zipmodel import hub
>>> hub.push("me/tiny-llama-zm", "tiny-llama/")       # compress_dir + create_repo + upload_folder
>>> path = hub.download("me/tiny-llama-zm")           # snapshot_download + decompress_dir
>>> AutoModel.from_pretrained(path)
>>> sd = hub.load("me/tiny-llama-zm", "cuda")         # the weights only, decoded from the .zm

A pushed repository is a compressed folder (``docs/folders.md``): weight files as ``NAME.zm``,
small files as they are, ``zipmodel.json`` listing every original file with its size and
SHA-256, plus a model card that says how to restore. The source's own ``README.md`` is kept
byte for byte as ``.zipmodel/README.md`` (the manifest points there), so a pull gives back the
identical folder.

Pulling downloads through ``huggingface_hub.snapshot_download`` into the user's Hugging Face
cache (token, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` as usual), then restores the folder, checking
every file's SHA-256 against the manifest. The restored folder is built in a temporary sibling
and renamed into place when complete, so an interrupted pull leaves nothing that looks like a
model. Restored folders live in ``$ZIPMODEL_HUB_CACHE`` (default ``~/.cache/zipmodel/hub``) under
``models--ORG--NAME/COMMIT``: a second pull of the same revision finds it and downloads nothing.

``huggingface_hub`` (a dependency) is imported on first use; nothing in it is
patched. Its errors become :class:`~zipmodel.errors.HubError` with the next command to try.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import HubError, MissingDependencyError, OutputExistsError, ZipmodelError
from .folder import (
    COPY,
    MANIFEST,
    FolderResult,
    Progress,
    compress_dir,
    decompress_dir,
    is_zm_folder,
    read_manifest,
)
from .options import LossyOptions

__all__ = [
    "PullResult",
    "PushResult",
    "download",
    "load",
    "pull",
    "push",
    "restore_cache_dir",
    "upload",
]

CARD_NAME = "README.md"
# Where the source's own README.md is stored, since the repository's README.md is the model card.
ORIGINAL_README = ".zipmodel/README.md"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# huggingface_hub never uploads these (upload_folder's DEFAULT_IGNORE_PATTERNS), so a pushed
# manifest must not list them either.
_NOT_UPLOADED = {".git", ".cache"}
_LOGIN = "hf auth login (or set HF_TOKEN)"


def _hf():
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependencyError(
            "the Hugging Face Hub commands need huggingface_hub",
            hint="pip install 'huggingface_hub>=1.33,<3'",
        ) from None
    return huggingface_hub


def restore_cache_dir() -> Path:
    """Where pulled models are restored by default: ``$ZIPMODEL_HUB_CACHE``, else
    ``$XDG_CACHE_HOME/zipmodel/hub`` (``~/.cache/zipmodel/hub``)."""
    env = os.environ.get("ZIPMODEL_HUB_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zipmodel" / "hub"


# -- errors ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _hub_errors(
    repo_id: str, revision: str | None, endpoint: str | None, *, writing: bool = False
) -> Iterator[None]:
    """Turn huggingface_hub's and httpx's exceptions into a HubError with the next step."""
    _hf()  # without huggingface_hub: the install hint
    from huggingface_hub import errors as e

    rev = revision or "main"
    try:
        yield
    except ZipmodelError:
        raise
    except e.LocalTokenNotFoundError:
        raise HubError(
            "no Hugging Face token: pushing needs one with write access",
            hint=f"log in: {_LOGIN}",
        ) from None
    except e.HFValidationError as exc:
        raise HubError(
            f"invalid repo id or revision: {exc}",
            hint="a repo id is ORG/NAME (letters, digits, '-', '_', '.')",
        ) from None
    except e.RevisionNotFoundError:
        raise HubError(
            f"{repo_id} has no revision {rev!r}",
            hint="check --revision (a branch, tag or commit); list them with: python -c "
            f"\"import huggingface_hub as h; print(h.list_repo_refs('{repo_id}'))\"",
        ) from None
    except e.GatedRepoError:
        raise HubError(
            f"{repo_id} is gated: its conditions must be accepted on the Hub page first",
            hint=f"accept them at {_endpoint(endpoint)}/{repo_id}, then: {_LOGIN}",
        ) from None
    except e.RepositoryNotFoundError:
        raise HubError(
            f"repository {repo_id} not found (or private, and this token cannot read it)",
            hint=f"check the repo id (ORG/NAME); for a private repository log in: {_LOGIN}",
        ) from None
    except e.OfflineModeIsEnabled:
        raise HubError(
            "HF_HUB_OFFLINE is set, so the Hub cannot be reached",
            hint="unset HF_HUB_OFFLINE to push, or pull a revision already in the cache",
        ) from None
    except e.LocalEntryNotFoundError as exc:
        raise HubError(
            f"cannot reach the Hub ({_endpoint(endpoint)}) for {repo_id}, and revision {rev!r} "
            f"is not in the local cache ({str(exc).strip().splitlines()[0]})",
            hint="unset HF_HUB_OFFLINE to download it"
            if _hf().constants.HF_HUB_OFFLINE
            else "check the network and HF_ENDPOINT, then run the command again",
        ) from None
    except e.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            raise HubError(
                "the Hub refused the token (401 Unauthorized)",
                hint=f"log in again with a valid token: {_LOGIN}",
            ) from None
        if status == 403:
            what = "write to" if writing else "read"
            raise HubError(
                f"this token may not {what} {repo_id} (403 Forbidden)",
                hint=f"use a token with {'write' if writing else 'read'} access: {_LOGIN}",
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubError(
            f"the Hub failed a request for {repo_id}: {first}",
            hint="run the command again (downloads resume where they stopped)",
        ) from None
    except Exception as exc:
        # transport errors of the HTTP client (httpx in huggingface_hub 1.x, httpx2 in 2.x);
        # anything else is not a Hub problem
        if not _from_http_client(exc):
            raise
        raise HubError(
            f"cannot talk to the Hub for {repo_id} ({_endpoint(endpoint)}): "
            f"{type(exc).__name__}: {exc}",
            hint="check the network and HF_ENDPOINT, then run the command again"
            + ("" if writing else " (downloads resume where they stopped)"),
        ) from None


def _from_http_client(exc: BaseException) -> bool:
    roots = ("httpx", "httpx2", "httpcore", "requests", "urllib3")
    return any(c.__module__.split(".")[0] in roots for c in type(exc).__mro__)


def _endpoint(endpoint: str | None) -> str:
    return endpoint or _hf().constants.ENDPOINT


# -- push --------------------------------------------------------------------------------------
@dataclass
class PushResult:
    """What :func:`upload` did: the compressed folder it uploaded, and where to."""

    repo_id: str
    revision: str
    commit: str
    commit_url: str
    folder: FolderResult  # the compressed folder (sizes per file, SHA-256)
    uploaded_files: int
    uploaded_bytes: int  # bytes of the files handed to upload_folder (card and manifest included)
    seconds: float = 0.0
    lossy: bool = False  # weights quantized (a pull gives the dequantized weights back)

    def to_json(self) -> dict[str, Any]:
        f = self.folder
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "commit_url": self.commit_url,
            "files": len(f.files),
            "compressed_files": f.compressed_files,
            "original_bytes": f.original_bytes,
            "stored_bytes": f.stored_bytes,
            "uploaded_files": self.uploaded_files,
            "uploaded_bytes": self.uploaded_bytes,
            "ratio": round(self.uploaded_bytes / f.original_bytes, 6) if f.original_bytes else 1.0,
            "lossy": self.lossy,
            "seconds": round(self.seconds, 4),
        }


def push(
    repo_id: str,
    path: str | os.PathLike,
    *,
    revision: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    level: str = "default",
    threads: int = 0,
    min_size: int | None = None,
    follow_symlinks: bool = False,
    progress: Progress | None = None,
    lossy: str | LossyOptions | None = None,
    **lossy_options: Any,
) -> PushResult:
    """Compress the model folder or file ``path`` and upload it to the Hub repository ``repo_id``.

    The folder is compressed into a temporary folder (:func:`zipmodel.compress_dir`; a single
    file becomes a one-file folder), a model card saying how to restore is written, and the
    result goes up with ``HfApi.create_repo(exist_ok=True)`` and ``HfApi.upload_folder``
    (``revision``: a branch, created from the default branch when missing). A folder that is
    already compressed (holding ``zipmodel.json``) is uploaded as it is. Files already in the
    repository that the upload does not overwrite are kept. ``.git/`` and ``.cache/`` are left
    out, as ``upload_folder`` would. Returns a :class:`PushResult`.

    ``lossy`` and ``lossy_options``: as in :func:`zipmodel.compress_dir` (``lossy="int8"``,
    ``keep``, ``only``, ... or one :class:`~zipmodel.options.LossyOptions`;
    ``docs/lossy.md``). The model card then says the weights are quantized, and a
    pull restores the dequantized weights, not the original bytes.
    """
    lossy = LossyOptions.of(lossy, **lossy_options)  # a bad option fails before the Hub
    hf = _hf()
    t0 = time.perf_counter()
    src = Path(path)
    if not src.exists():
        raise ZipmodelError("no such file or folder", path=src)
    api = hf.HfApi(
        endpoint=endpoint, token=token, library_name="zipmodel", library_version=__version__
    )
    with _hub_errors(repo_id, revision, endpoint, writing=True):
        # before compressing: a missing or refused token fails in a second, not after minutes
        user = api.whoami()["name"]
    if "/" not in repo_id:  # "name" means the token owner's namespace
        repo_id = f"{user}/{repo_id}"
    with tempfile.TemporaryDirectory(prefix="zipmodel-push-") as tmp:
        staged = Path(tmp) / "repo"
        if is_zm_folder(src):
            if lossy.enabled:
                raise ZipmodelError(
                    "is compressed already; lossy options apply when compressing",
                    path=src,
                    hint="push the original folder with the lossy options instead",
                )
            read_manifest(src)  # refuse a broken manifest before uploading it
            shutil.copytree(src, staged, symlinks=False)
            result = read_manifest(staged)
        else:
            kw: dict[str, Any] = {"level": level, "threads": threads, "progress": progress}
            kw["lossy"] = lossy
            if min_size is not None:
                kw["min_size"] = min_size
            view = _source_view(src, Path(tmp) / "source")
            result = compress_dir(
                view or src, staged, follow_symlinks=follow_symlinks or view is not None, **kw
            )
            result.input = str(src)
        rev = revision or "main"
        is_lossy = lossy.enabled
        _write_card(staged, repo_id, rev, result, lossy.cli_args() if is_lossy else "")
        sizes = [p.stat().st_size for p in staged.rglob("*") if p.is_file()]
        with _hub_errors(repo_id, revision, endpoint, writing=True):
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != "main":
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            info = api.upload_folder(
                repo_id=repo_id,
                folder_path=staged,
                revision=revision,
                commit_message=commit_message
                or f"Upload {src.name} compressed with zipmodel {__version__}",
            )
    return PushResult(
        repo_id=repo_id,
        revision=rev,
        commit=info.oid,
        commit_url=str(info.commit_url),
        folder=result,
        uploaded_files=len(sizes),
        uploaded_bytes=sum(sizes),
        seconds=time.perf_counter() - t0,
        lossy=is_lossy,
    )


# Deprecated name (the CLI's verbs are push and pull; so are the library's): kept as an alias.
upload = push


def _source_view(src: Path, view: Path) -> Path | None:
    """A folder of links to what is pushed, when ``src`` is a file or holds ``.git``/``.cache``
    (which the Hub client would not upload); ``None`` when ``src`` can be compressed as it is."""
    if src.is_file():
        view.mkdir()
        (view / src.name).symlink_to(src.resolve())
        return view
    if not any(_NOT_UPLOADED & set(dirnames) for _, dirnames, _ in os.walk(src)):
        return None
    view.mkdir()
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in _NOT_UPLOADED)
        rel = Path(dirpath).relative_to(src)
        (view / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            (view / rel / name).symlink_to((Path(dirpath) / name).resolve())
    return view


def _write_card(
    staged: Path, repo_id: str, revision: str, result: FolderResult, lossy: str = ""
) -> None:
    """Make README.md the model card with the restore note; keep the source's README intact."""
    original = ""
    entry = next((e for e in result.files if e.path == CARD_NAME), None)
    if entry is not None and entry.stored == COPY and entry.stored_path == CARD_NAME:
        if any(e.stored_path == ORIGINAL_README for e in result.files):
            raise ZipmodelError(f"already holds {ORIGINAL_README}", path=staged)
        moved = staged / ORIGINAL_README
        moved.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / CARD_NAME, moved)
        original = moved.read_text(encoding="utf-8", errors="replace")
        entry.stored_path = ORIGINAL_README
        doc = json.loads((staged / MANIFEST).read_text(encoding="utf-8"))
        for f in doc["files"]:
            if f["path"] == CARD_NAME:
                f["stored_path"] = ORIGINAL_README
        (staged / MANIFEST).write_text(
            json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        read_manifest(staged)
    elif (staged / CARD_NAME).exists():
        return  # README.md is stored compressed (README.md.zm) or is an unlisted card: keep it
    card = model_card(repo_id, revision, result, original, lossy=lossy)
    (staged / CARD_NAME).write_text(card, "utf-8")


def model_card(
    repo_id: str, revision: str, result: FolderResult, original: str = "", *, lossy: str = ""
) -> str:
    """The repository's README.md: the original card's metadata with a ``zipmodel`` tag, the
    restore instructions, then the original card's text. ``lossy``: the options that quantized
    the weights (then the note says so)."""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard(original) if original.lstrip().startswith("---") else None
    except ValueError:
        card = None
    body = card.text if card is not None else original
    data = card.data if card is not None else None
    tags = list(getattr(data, "tags", None) or []) if data is not None else []
    if "zipmodel" not in tags:
        tags.append("zipmodel")
    rev = f" --revision {revision}" if revision != "main" else ""
    rev_py = f', revision="{revision}"' if revision != "main" else ""
    pct = 100 * result.ratio
    how = (
        f"**lossily** (`zipmodel compress {lossy}`: quantized weights, restored dequantized in "
        "their original dtypes, not the original bytes; `zipmodel info` shows the measured error)"
        if lossy
        else "losslessly"
    )
    note = f"""<!-- zipmodel: restore note -->
> [!NOTE]
> The weights in this repository are compressed with [zipmodel](https://pypi.org/project/zipmodel/),
> {how} ({len(result.files)} files, {result.original_bytes:,} bytes stored as
> {result.stored_bytes:,}, {pct:.1f}%); `zipmodel.json` lists every original file and its SHA-256.
> To get the model folder back (every file checked):
>
> ```bash
> pip install zipmodel
> zipmodel pull {repo_id}{rev}
> ```
>
> It prints the restored folder, which `from_pretrained` loads as it is. From Python:
> `path = zipmodel.hub.download("{repo_id}"{rev_py})`.
"""
    if data is not None:
        data.tags = tags
        head = f"---\n{data.to_yaml()}\n---\n"
    else:
        head = "---\ntags:\n- zipmodel\n---\n"
    return f"{head}\n{note}\n{body.lstrip()}" if body.strip() else f"{head}\n{note}"


# -- pull --------------------------------------------------------------------------------------
@dataclass
class PullResult:
    """What :func:`pull` did. ``path`` is the restored model folder."""

    repo_id: str
    revision: str
    commit: str
    path: Path
    snapshot: Path  # the compressed folder in the Hugging Face cache
    reused: bool  # the restored folder was already there: nothing downloaded or decoded
    folder: FolderResult
    downloaded_bytes: int = 0  # stored bytes that were not in the Hugging Face cache before
    download_seconds: float = 0.0
    restore_seconds: float = 0.0
    seconds: float = 0.0
    directories: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        f = self.folder
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "path": str(self.path),
            "snapshot": str(self.snapshot),
            "reused": self.reused,
            "files": len(f.files),
            "compressed_files": f.compressed_files,
            "original_bytes": f.original_bytes,
            "stored_bytes": f.stored_bytes,
            "downloaded_bytes": self.downloaded_bytes,
            "download_seconds": round(self.download_seconds, 4),
            "restore_seconds": round(self.restore_seconds, 4),
            "seconds": round(self.seconds, 4),
        }


def pull(
    repo_id: str,
    *,
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
    threads: int = 0,
    progress: Progress | None = None,
) -> PullResult:
    """Download the compressed model ``repo_id`` and restore the original folder.

    ``local_dir``: where to restore (default: ``restore_cache_dir()/models--ORG--NAME/COMMIT``).
    ``cache_dir``, ``token``, ``endpoint``: as for ``huggingface_hub.snapshot_download`` (the
    user's cache, token and ``HF_ENDPOINT`` by default). A restored folder that is already there
    is reused: in the default location it is complete by construction (it is renamed into
    place last); a ``local_dir`` is reused when every file matches the manifest's size and
    SHA-256, and is otherwise an error unless ``force`` (then it is replaced). Only the files the
    manifest lists are downloaded.
    """
    t0 = time.perf_counter()
    common = _common(token, endpoint, cache_dir)
    snap, repo_root, manifest = _snapshot_manifest(repo_id, revision, common)
    commit = snap.name
    out = Path(local_dir) if local_dir is not None else _default_restore(repo_id, commit)
    rev = revision or "main"

    def done(reused: bool, result: FolderResult, **kw: Any) -> PullResult:
        return PullResult(
            repo_id, rev, commit, out, snap, reused, result,
            seconds=time.perf_counter() - t0, **kw,
        )  # fmt: skip

    if out.exists() and _reusable(out, manifest, check=local_dir is not None) and not force:
        return done(True, manifest)
    if out.exists() and not force:
        raise OutputExistsError(
            f"exists and does not hold {repo_id}@{commit[:12]}",
            path=out,
            hint="use -f/--force to replace it, or choose another -o/--output",
        )
    missing = [e for e in manifest.files if not (snap / e.stored_path).exists()]
    t1 = time.perf_counter()
    _fetch(repo_id, commit, manifest.files, common, revision)
    t2 = time.perf_counter()
    if local_dir is None:
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        result = decompress_dir(
            snap, out, threads=threads, force=force, progress=progress, link_root=repo_root
        )
    except OutputExistsError:
        if local_dir is None and out.is_dir():  # another pull of this commit finished first
            return done(True, manifest)
        raise
    return done(
        False,
        result,
        downloaded_bytes=sum(e.stored_size for e in missing),
        download_seconds=t2 - t1,
        restore_seconds=time.perf_counter() - t2,
    )


def _common(token, endpoint, cache_dir) -> dict[str, Any]:
    """``snapshot_download``'s keyword arguments shared by every call of one pull."""
    return {
        "token": token,
        "endpoint": endpoint,
        "cache_dir": cache_dir,
        "library_name": "zipmodel",
        "library_version": __version__,
    }


def _snapshot_manifest(
    repo_id: str, revision: str | None, common: dict[str, Any]
) -> tuple[Path, Path, FolderResult]:
    """Download ``zipmodel.json`` alone: (snapshot folder, the repository's cache folder, the
    checked manifest)."""
    hf = _hf()
    with _hub_errors(repo_id, revision, common["endpoint"]):
        snap = Path(
            hf.snapshot_download(repo_id, revision=revision, allow_patterns=[MANIFEST], **common)
        )
    commit = snap.name
    if not _COMMIT.match(commit):
        raise HubError(f"unexpected snapshot folder {snap} from huggingface_hub", path=snap)
    if not (snap / MANIFEST).is_file():
        raise HubError(
            f"{repo_id}@{commit[:12]} holds no {MANIFEST}: it was not pushed with zipmodel",
            hint=f"download it as it is: hf download {repo_id}",
        )
    repo_root = snap.parent.parent  # models--ORG--NAME in the cache: snapshots link into blobs/
    return snap, repo_root, read_manifest(snap, link_root=repo_root)


def _fetch(repo_id: str, commit: str, entries, common: dict[str, Any], revision) -> None:
    """Download the stored files of ``entries`` (at ``commit``) into the snapshot."""
    if not entries:
        return
    with _hub_errors(repo_id, revision, common["endpoint"]):
        _hf().snapshot_download(
            repo_id,
            revision=commit,
            allow_patterns=[glob.escape(e.stored_path) for e in entries],
            **common,
        )


def load(
    repo_id: str,
    device: Any = None,
    *,
    framework: str | None = None,
    threads: int = 0,
    state_dict: bool = True,
    revision: str | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    base: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The state dict of the compressed model ``repo_id``, decoded from the downloaded
    ``.zm`` files: no restored folder is written (``zipmodel.load`` of the snapshot).

    Downloads only what the state dict needs: the manifest, the shard index, the weight files
    ``zipmodel.load`` picks for a folder, and the files they were stored against; not the
    tokenizer, the config or a second format of the same weights (``download`` restores the
    whole folder). ``device``, ``framework``, ``threads``, ``state_dict`` as for
    ``zipmodel.load``; ``revision``, ``token``, ``endpoint``, ``cache_dir`` as for :func:`pull`;
    ``base``: the base folder of a model pushed with ``--base``.
    """
    from .folder import weight_entries
    from .loading import load_folder

    common = _common(token, endpoint, cache_dir)
    snap, repo_root, manifest = _snapshot_manifest(repo_id, revision, common)
    indexes = [e for e in manifest.files if e.path.endswith(".index.json") and e.stored == COPY]
    _fetch(repo_id, snap.name, indexes, common, revision)
    by_path = {e.path: e for e in manifest.files}
    need, todo = {}, list(weight_entries(manifest, snap, link_root=repo_root))
    while todo:  # the weight files and every file they were stored against
        e = todo.pop()
        if e.path not in need:
            need[e.path] = e
            ref = (e.base or {}).get("path")
            if ref in by_path:
                todo.append(by_path[ref])
    _fetch(repo_id, snap.name, list(need.values()), common, revision)
    return load_folder(
        snap,
        device,
        framework=framework,
        threads=threads,
        state_dict=state_dict,
        base=base,
        link_root=repo_root,
    )


def download(
    repo_id: str,
    *,
    revision: str | None = None,
    local_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    **kwargs: Any,
) -> Path:
    """Shorthand for ``pull(...).path``: the restored model folder, for ``from_pretrained``."""
    return pull(repo_id, revision=revision, local_dir=local_dir, token=token, **kwargs).path


def _default_restore(repo_id: str, commit: str) -> Path:
    return restore_cache_dir() / ("models--" + repo_id.replace("/", "--")) / commit


def _reusable(out: Path, manifest: FolderResult, *, check: bool) -> bool:
    """Whether ``out`` already holds the restored files: trusted in the default location (it
    is renamed into place only when complete); else every size and SHA-256 is compared."""
    from .folder.fs import hash_file

    if not out.is_dir():
        return False
    for e in manifest.files:
        p = out / e.path
        if not p.is_file() or p.stat().st_size != e.size:
            return False
        if check and hash_file(p)[1] != e.sha256:
            return False
    return True
