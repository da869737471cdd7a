"""A Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests (no real Hub is reachable).

It speaks the endpoints huggingface_hub really calls (checked against 1.33; see
``shared/research/ecosystem.md`` §2.4), with the Hub's headers and error codes:

- ``GET /api/whoami-v2``; ``POST /api/repos/create`` (409 when it exists);
- ``POST /api/models/{repo}/branch/{branch}`` (create_branch);
- ``POST /api/models/{repo}/preupload/{rev}``: every file is ``uploadMode: "regular"`` (no LFS or
  Xet), with ``oid`` (git blob SHA-1) of a file already there so unchanged files are skipped;
- ``POST /api/models/{repo}/commit/{rev}``: NDJSON, ``file`` lines with base64 content,
  ``deletedFile``/``deletedFolder``; ``lfsFile`` is refused (nothing was uploaded to LFS);
- ``GET /api/models/{repo}/revision/{rev}`` (repo_info) and ``GET /api/models/{repo}/refs``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=true`` (with ``lfs`` for big files);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``ETag``, ``X-Repo-Commit``,
  ``Content-Length``, ``Accept-Ranges`` and ``Range`` requests (206).

Auth: ``Authorization: Bearer TOKEN``. An unknown token gets 401 "Invalid credentials in
Authorization header" on every request, as on the Hub; writes need a write token for the
namespace (else 403); a private repository is 401 (anonymous) or 404 (other users).

Every request is logged (:attr:`HubServer.log`) with the bytes received and sent. Faults:
:meth:`HubServer.fail` answers matching requests with an error status, :meth:`HubServer.drop`
closes the connection after some bytes of a download, :meth:`HubServer.throttle` slows one.
Stdlib only (``http.server`` in a thread); no HTTP-mocking library.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_THRESHOLD = 10 << 20  # the Hub stores files from 10 MiB up in LFS (tree entries get "lfs")
WRITE, READ = "write", "read"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str  # unquoted, without the query
    query: dict[str, list[str]]
    status: int = 0
    received: int = 0  # request body bytes
    sent: int = 0  # response body bytes
    range: str | None = None
    token: str | None = None


@dataclass
class Repo:
    owner: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> {path: data}
    committed_paths: list[str] = field(default_factory=list)  # every path ever uploaded


@dataclass
class _Fault:
    method: str
    pattern: str
    status: int = 0  # fail: answer with this status
    drop_after: int = -1  # drop: close the connection after this many body bytes
    rate: float = 0.0  # throttle: bytes per second
    times: int | None = None  # how many more requests it applies to (None: always)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubServer:
    """The fake Hub: ``url`` is the endpoint to hand to huggingface_hub (``endpoint=``)."""

    def __init__(self, tokens: dict[str, tuple[str, str]] | None = None):
        # token -> (user, "write" | "read")
        self.tokens = tokens or {"hf_write": ("alice", WRITE), "hf_read": ("bob", READ)}
        self.repos: dict[str, Repo] = {}
        self.log: list[Request] = []
        self.faults: list[_Fault] = []
        self.lock = threading.Lock()
        self._counter = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- faults and the log ---------------------------------------------------------------------
    def fail(self, method: str, pattern: str, status: int = 500, times: int | None = None):
        """Answer requests whose path matches the glob ``pattern`` with ``status``."""
        self.faults.append(_Fault(method, pattern, status=status, times=times))

    def drop(self, pattern: str, after: int, times: int | None = 1):
        """Close the connection after ``after`` body bytes of a matching GET download."""
        self.faults.append(_Fault("GET", pattern, drop_after=after, times=times))

    def throttle(self, pattern: str, bytes_per_s: float):
        self.faults.append(_Fault("GET", pattern, rate=bytes_per_s))

    def clear_faults(self) -> None:
        self.faults.clear()

    def _fault(self, method: str, path: str) -> _Fault | None:
        with self.lock:
            for f in self.faults:
                if f.method == method and fnmatch.fnmatch(path, f.pattern):
                    if f.times is not None:
                        if f.times <= 0:
                            continue
                        f.times -= 1
                    return f
        return None

    def downloads(self) -> list[Request]:
        """GET requests of files that sent content."""
        return [r for r in self.log if r.method == "GET" and "/resolve/" in r.path and r.sent]

    def uploaded(self, repo_id: str) -> list[str]:
        """Every path a commit to ``repo_id`` ever carried content for."""
        return list(self.repos[repo_id].committed_paths)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.branches[revision]])

    # -- state ------------------------------------------------------------------------------------
    def _new_commit(self, repo: Repo, files: dict[str, bytes]) -> str:
        with self.lock:
            self._counter += 1
            n = self._counter
        sha = hashlib.sha1(f"commit {n} {sorted(files)}".encode()).hexdigest()
        repo.commits[sha] = files
        return sha


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1"

    def log_message(self, *args) -> None:  # quiet
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    # -- plumbing -------------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        req = Request(method, unquote(parts.path), parse_qs(parts.query))
        req.range = self.headers.get("Range")
        auth = self.headers.get("Authorization", "")
        req.token = auth[7:] if auth.startswith("Bearer ") else None
        self.req = req
        self.hub.log.append(req)
        try:
            body = self._read_body()
            req.received = len(body)
            fault = self.hub._fault(method, req.path)
            if fault is not None and fault.status:
                raise HubError(fault.status, "injected failure")
            self.fault = fault
            if req.token is not None and req.token not in self.hub.tokens:
                # the Hub's answer to a bad token, whatever the URL
                self._error(401, "Invalid credentials in Authorization header", message_header=True)
                return
            self._route(method, req, body)
        except HubError as e:
            self._error(e.status, e.message, e.code)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self._handle("GET")

    def do_HEAD(self):
        self._handle("HEAD")

    def do_POST(self):
        self._handle("POST")

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype=None):
        self.req.status = status
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)
            self.req.sent += len(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), ctype="application/json")

    def _error(self, status: int, message: str, code: str | None = None, message_header=False):
        headers = {}
        if code:
            headers["X-Error-Code"] = code
        if message_header or code is None:
            headers["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message}).encode(), headers, "application/json")

    # -- auth -----------------------------------------------------------------------------------
    def _user(self) -> tuple[str, str] | None:
        return self.hub.tokens.get(self.req.token) if self.req.token else None

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user()
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and (user is None or user[0] != repo.owner)):
            if user is None:
                raise HubError(401, "Repository not found", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write:
            self._check_write(repo_id.split("/")[0])
        return repo

    def _check_write(self, namespace: str) -> None:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to write")
        if user[1] != WRITE or user[0] != namespace:
            raise HubError(403, f"You don't have the rights to write to {namespace}")

    @staticmethod
    def _commit_of(repo: Repo, rev: str) -> str:
        rev = unquote(rev)
        if rev in repo.branches:
            return repo.branches[rev]
        if rev in repo.commits:
            return rev
        raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")

    # -- routes ---------------------------------------------------------------------------------
    _API = re.compile(
        r"^/api/models/([^/]+/[^/]+)/(revision|tree|preupload|commit|branch|refs)(?:/(.*))?$"
    )
    _RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")

    def _route(self, method: str, req: Request, body: bytes) -> None:
        path = req.path
        if path == "/api/whoami-v2" and method == "GET":
            user = self._user()
            if user is None:
                raise HubError(401, "Invalid username or password.")
            self._json(
                {
                    "type": "user",
                    "name": user[0],
                    "orgs": [],
                    "auth": {"accessToken": {"role": user[1]}},
                }
            )
            return
        if path == "/api/repos/create" and method == "POST":
            self._create(json.loads(body or b"{}"))
            return
        if path == "/api/validate-yaml" and method == "POST":
            self._validate_yaml(json.loads(body)["content"])
            return
        # the raw path keeps %2F inside a revision ("refs%2Fpr%2F1") apart from path separators
        raw = urlsplit(self.path).path
        m = self._API.match(raw)
        if m:
            repo_id, what, rest = unquote(m.group(1)), m.group(2), m.group(3) or ""
            rev, _, sub = rest.partition("/")
            getattr(self, f"_api_{what}")(method, repo_id, unquote(rev), unquote(sub), body)
            return
        m = self._RESOLVE.match(raw)
        if m and method in ("GET", "HEAD"):
            self._resolve(unquote(m.group(1)), unquote(m.group(2)), unquote(m.group(3)))
            return
        raise HubError(404, f"no route for {method} {path}")

    def _create(self, payload: dict) -> None:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        ns = payload.get("organization") or user[0]
        self._check_write(ns)
        repo_id = f"{ns}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            self._json({"error": "You already created this model repo", "url": url}, 409)
            return
        repo = Repo(
            owner=ns, private=payload.get("visibility") == "private" or bool(payload.get("private"))
        )
        repo.branches["main"] = self.hub._new_commit(repo, {})
        self.hub.repos[repo_id] = repo
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, content: str) -> None:
        """Uploading a README.md makes the client validate its metadata block."""
        import yaml

        m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            meta = yaml.safe_load(m.group(1)) if m else {}
        except yaml.YAMLError as e:
            self._json({"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []}, 400)
            return
        if not isinstance(meta, dict | None):
            self._json({"errors": [{"message": "metadata must be a mapping"}], "warnings": []}, 400)
            return
        self._json({"errors": [], "warnings": []})

    def _api_branch(self, method, repo_id, branch, _sub, body) -> None:
        repo = self._repo(repo_id, write=True)
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        repo.branches[branch] = self._commit_of(repo, start)
        self._json({})

    def _api_refs(self, method, repo_id, _rev, _sub, _body) -> None:
        repo = self._repo(repo_id)
        branches = [
            {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
            for b, c in repo.branches.items()
        ]
        self._json({"branches": branches, "converts": [], "tags": []})

    def _api_revision(self, method, repo_id, rev, _sub, _body) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_of(repo, rev)
        files = repo.commits[commit]
        self._json(
            {
                "_id": repo_id,
                "id": repo_id,
                "modelId": repo_id,
                "author": repo.owner,
                "sha": commit,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "lastModified": "2026-11-29T00:00:00.000Z",
                "createdAt": "2026-11-29T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in sorted(files)],
            }
        )

    def _api_tree(self, method, repo_id, rev, sub, _body) -> None:
        repo = self._repo(repo_id)
        files = repo.commits[self._commit_of(repo, rev)]
        recursive = self.req.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = sub.strip("/")
        entries, dirs = [], set()
        for p in sorted(files):
            if prefix and not p.startswith(prefix + "/"):
                continue
            rel = p[len(prefix) + 1 :] if prefix else p
            parts = rel.split("/")
            for i in range(1, len(parts)):
                d = "/".join(([prefix] if prefix else []) + parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append(
                        {
                            "type": "directory",
                            "oid": git_blob_sha1(d.encode()),
                            "size": 0,
                            "path": d,
                        }
                    )
            if len(parts) > 1 and not recursive:
                continue
            data = files[p]
            e = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": p}
            if len(data) >= LFS_THRESHOLD:
                e["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(e)
        if prefix and not entries:
            raise HubError(404, f"{sub} does not exist on {rev}", "EntryNotFound")
        self._json(entries)

    def _api_preupload(self, method, repo_id, rev, _sub, body) -> None:
        repo = self._repo(repo_id, write=True)
        files = repo.commits[self._commit_of(repo, rev)]
        out = []
        for f in json.loads(body)["files"]:
            old = files.get(f["path"])
            out.append(
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(old) if old is not None else None,
                }
            )
        self._json({"files": out, "commitOid": self._commit_of(repo, rev)})

    def _api_commit(self, method, repo_id, rev, _sub, body) -> None:
        repo = self._repo(repo_id, write=True)
        parent = self._commit_of(repo, rev)
        if rev not in repo.branches:
            raise HubError(400, f"cannot commit to {rev}: not a branch")
        files = dict(repo.commits[parent])
        added = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                if value.get("parentCommit") not in (None, parent):
                    raise HubError(
                        412, "A commit has happened since. Please refresh and try again."
                    )
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, "only base64 file content is supported")
                files[value["path"]] = base64.b64decode(value["content"])
                added.append(value["path"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                pre = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(pre)}
            else:  # lfsFile: this server never asked for an LFS upload
                raise HubError(400, f"unsupported commit operation {key!r} (no LFS here)")
        commit = self.hub._new_commit(repo, files)
        repo.branches[rev] = commit
        repo.committed_paths.extend(added)
        self._json(
            {
                "success": True,
                "commitOid": commit,
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit}",
                "pullRequestUrl": None,
            }
        )

    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        repo = self._repo(repo_id)
        commit = self._commit_of(repo, rev)
        files = repo.commits[commit]
        if path not in files:
            raise HubError(404, "Entry not found", "EntryNotFound")
        data = files[path]
        etag = (
            hashlib.sha256(data).hexdigest() if len(data) >= LFS_THRESHOLD else git_blob_sha1(data)
        )
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit, "Accept-Ranges": "bytes"}
        start, end, status = 0, len(data), 200
        rng = self.req.range
        if rng and self.command == "GET":
            m = re.match(r"bytes=(\d+)-(\d*)$", rng)
            if not m or int(m.group(1)) >= len(data) > 0:
                raise HubError(416, f"bad range {rng}")
            start = int(m.group(1))
            end = int(m.group(2)) + 1 if m.group(2) else len(data)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        headers["Content-Length"] = end - start
        self.req.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            self.send_header(k, str(v))
        self.end_headers()
        if self.command == "HEAD":
            return
        fault = self.fault
        body = memoryview(data)[start:end]
        step = 64 << 10
        for i in range(0, len(body), step):
            piece = body[i : i + step]
            if (
                fault is not None
                and fault.drop_after >= 0
                and self.req.sent + len(piece) > fault.drop_after
            ):
                keep = fault.drop_after - self.req.sent
                self.wfile.write(piece[:keep])
                self.req.sent += keep
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(piece)
            self.req.sent += len(piece)
            if fault is not None and fault.rate:
                time.sleep(len(piece) / fault.rate)
