"""A small Hub-compatible HTTP server, enough for huggingface_hub 2.4's upload and download paths.

It speaks what the real client sends (read from ``hf_api.py``, ``_commit_api.py``, ``lfs.py`` and
``file_download.py``): repo creation, README YAML validation, preupload, the LFS batch / upload /
verify steps, NDJSON commits with inline and LFS files, branches, revision info and
``/resolve/`` downloads. Tokens map to users; a user may write only to their own namespace.
Xet is not offered, so clients must run with ``HF_HUB_DISABLE_XET=1``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REPO = r"(?P<repo>[^/]+/[^/]+)"


def git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    data: bytes
    lfs_oid: str | None = None  # sha256 for LFS files, None for inline git blobs


@dataclass
class Commit:
    sha: str
    files: dict[str, StoredFile]
    summary: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch → commit sha

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class FakeHub:
    """The server's state; tests read it to check what arrived."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = dict(tokens)  # token → user name
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), for tests to inspect
        self.auth_headers_seen: list[str] = []
        self.lock = threading.Lock()
        # Fault injection: a commit that arrives sets commit_arrived, then waits for
        # commit_gate (when set up); with drop_commits it is then refused instead of applied.
        self.commit_arrived = threading.Event()
        self.commit_gate: threading.Event | None = None
        self.drop_commits = False

    def user_for(self, authorization: str | None, *, required: bool) -> str | None:
        if not authorization:
            if required:
                raise HubError(401, "Invalid username or password.")
            return None
        token = authorization.removeprefix("Bearer ").strip()
        user = self.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def repo(self, repo_id: str, user: str | None, *, write: bool = False) -> Repo:
        repo = self.repos.get(repo_id)
        owner = repo_id.split("/", 1)[0]
        if repo is None or (repo.private and user != owner):
            raise HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        if write and user != owner:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def new_commit(self, repo: Repo, parent: Commit | None, files: dict[str, StoredFile],
                   summary: str) -> Commit:
        digest = hashlib.sha1((parent.sha if parent else "").encode())
        for path in sorted(files):
            digest.update(path.encode() + git_blob_oid(files[path].data).encode())
        digest.update(summary.encode() + str(len(repo.commits)).encode())
        commit = Commit(sha=digest.hexdigest(), files=files, summary=summary)
        repo.commits[commit.sha] = commit
        return commit


class HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
        pass  # keep test output clean

    # --- plumbing -----------------------------------------------------------------------
    @property
    def hub(self) -> FakeHub:
        return self.server.hub

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _dispatch(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.requests.append((self.command, path))
        if auth := self.headers.get("Authorization"):
            self.hub.auth_headers_seen.append(auth)
        body = self._body() if self.command in ("POST", "PUT") else b""
        try:
            with self.hub.lock:
                for method, pattern, handler in ROUTES:
                    match = re.fullmatch(pattern, path)
                    if method == self.command and match:
                        handler(self, body, **match.groupdict())
                        return
            raise HubError(404, f"no route for {self.command} {path}")
        except HubError as exc:
            headers = {"X-Error-Code": exc.code} if exc.code else {}
            headers["X-Error-Message"] = exc.message
            self._json(exc.status, {"error": exc.message}, headers)

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # --- endpoints ----------------------------------------------------------------------
    def create_repo(self, body: bytes) -> None:
        user = self.hub.user_for(self.headers.get("Authorization"), required=True)
        payload = json.loads(body)
        name, owner = payload["name"], payload.get("organization") or user
        if not REPO_NAME.match(name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        if owner != user:
            raise HubError(403, f"You don't have the rights to create a model under {owner}")
        repo_id = f"{owner}/{name}"
        url = f"{self.base_url}/{repo_id}"
        if repo_id in self.hub.repos:
            # The real Hub names the existing repo in the 409 body; create_repo(exist_ok=True)
            # reads its URL from there.
            self._json(409, {"error": "You already created this model repo", "url": url})
            return
        repo = Repo(repo_id, private=payload.get("visibility") == "private")
        initial = self.hub.new_commit(
            repo, None, {".gitattributes": StoredFile(b"*.safetensors filter=lfs\n")},
            "initial commit")
        repo.branches["main"] = initial.sha
        self.hub.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id})

    def validate_yaml(self, body: bytes) -> None:
        import yaml

        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        try:
            if match:
                yaml.safe_load(match.group(1))
        except yaml.YAMLError as exc:
            self._json(400, {"errors": [{"message": str(exc)}]})
            return
        self._json(200, {"warnings": []})

    def preupload(self, body: bytes, repo: str, rev: str) -> None:
        user = self.hub.user_for(self.headers.get("Authorization"), required=True)
        target = self.hub.repo(repo, user, write=True)
        current = target.resolve(rev)
        files = []
        for item in json.loads(body)["files"]:
            sample = base64.b64decode(item["sample"])
            lfs = item["path"].endswith(LFS_SUFFIXES) or b"\0" in sample
            existing = current.files.get(item["path"]) if current else None
            oid = None
            if existing is not None:
                oid = existing.lfs_oid or git_blob_oid(existing.data)
            files.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                          "shouldIgnore": False, "oid": oid})
        self._json(200, {"files": files, "commitOid": current.sha if current else None})

    def lfs_batch(self, body: bytes, repo: str) -> None:
        user = self.hub.user_for(self.headers.get("Authorization"), required=True)
        self.hub.repo(repo, user, write=True)
        payload = json.loads(body)
        objects = []
        for obj in payload["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.base_url}/lfs-storage/{obj['oid']}"},
                    "verify": {"href": f"{self.base_url}/{repo}.git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects},
                   {"Content-Type": "application/vnd.git-lfs+json"})

    def lfs_upload(self, body: bytes, oid: str) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its sha256")
        self.hub.lfs_objects[oid] = body
        self._send(200)

    def lfs_verify(self, body: bytes, repo: str) -> None:
        user = self.hub.user_for(self.headers.get("Authorization"), required=True)
        self.hub.repo(repo, user, write=True)
        obj = json.loads(body)
        stored = self.hub.lfs_objects.get(obj["oid"])
        if stored is None or len(stored) != obj["size"]:
            raise HubError(404, f"LFS object {obj['oid']} was not uploaded")
        self._json(200, {"success": True})

    def commit(self, body: bytes, repo: str, rev: str) -> None:
        self.hub.commit_arrived.set()
        if self.hub.commit_gate is not None:
            self.hub.commit_gate.wait(timeout=120)
            if self.hub.drop_commits:
                raise HubError(503, "the commit was lost")
        user = self.hub.user_for(self.headers.get("Authorization"), required=True)
        target = self.hub.repo(repo, user, write=True)
        parent = target.resolve(rev)
        if parent is None or rev not in target.branches:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        files = dict(parent.files)
        summary = ""
        for line in body.splitlines():
            item = json.loads(line)
            value = item["value"]
            if item["key"] == "header":
                summary = value["summary"]
            elif item["key"] == "file":
                files[value["path"]] = StoredFile(base64.b64decode(value["content"]))
            elif item["key"] == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None:
                    raise HubError(422, f"LFS object {value['oid']} of {value['path']} is missing")
                files[value["path"]] = StoredFile(data, lfs_oid=value["oid"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            else:
                raise HubError(400, f"unsupported commit operation {item['key']!r}")
        commit = self.hub.new_commit(target, parent, files, summary)
        target.branches[rev] = commit.sha
        self._json(200, {"success": True, "commitOid": commit.sha,
                         "commitUrl": f"{self.base_url}/{repo}/commit/{commit.sha}"})

    def create_branch(self, body: bytes, repo: str, branch: str) -> None:
        user = self.hub.user_for(self.headers.get("Authorization"), required=True)
        target = self.hub.repo(repo, user, write=True)
        if branch in target.branches:
            raise HubError(409, f"Reference {branch} already exists")
        start = (json.loads(body or b"{}").get("startingPoint")) or "main"
        commit = target.resolve(start)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {start}", "RevisionNotFound")
        target.branches[branch] = commit.sha
        self._json(200, {})

    def model_info(self, body: bytes, repo: str, rev: str = "main") -> None:
        user = self.hub.user_for(self.headers.get("Authorization"), required=False)
        target = self.hub.repo(repo, user)
        commit = target.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        self._json(200, {
            "id": repo, "sha": commit.sha, "private": target.private,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        })

    def resolve_file(self, body: bytes, repo: str, rev: str, path: str) -> None:
        user = self.hub.user_for(self.headers.get("Authorization"), required=False)
        target = self.hub.repo(repo, user)
        commit = target.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_oid(stored.data)}"'}
        if stored.lfs_oid:
            headers["X-Linked-Etag"] = f'"{stored.lfs_oid}"'
            headers["X-Linked-Size"] = str(len(stored.data))
        self._send(200, stored.data, headers, content_type="application/octet-stream")


ROUTES = [
    ("POST", r"/api/repos/create", HubRequestHandler.create_repo),
    ("POST", r"/api/validate-yaml", HubRequestHandler.validate_yaml),
    ("POST", rf"/api/models/{_REPO}/preupload/(?P<rev>.+)", HubRequestHandler.preupload),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", HubRequestHandler.lfs_batch),
    ("POST", rf"/{_REPO}\.git/info/lfs/objects/verify", HubRequestHandler.lfs_verify),
    ("PUT", r"/lfs-storage/(?P<oid>[0-9a-f]{64})", HubRequestHandler.lfs_upload),
    ("POST", rf"/api/models/{_REPO}/commit/(?P<rev>.+)", HubRequestHandler.commit),
    ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>.+)", HubRequestHandler.create_branch),
    ("GET", rf"/api/models/{_REPO}", HubRequestHandler.model_info),
    ("GET", rf"/api/models/{_REPO}/revision/(?P<rev>.+)", HubRequestHandler.model_info),
    ("GET", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", HubRequestHandler.resolve_file),
    ("HEAD", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", HubRequestHandler.resolve_file),
]


class HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: FakeHub) -> None:
        super().__init__(("127.0.0.1", 0), HubRequestHandler)
        self.hub = hub

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def start_hub(tokens: dict[str, str]) -> tuple[HubHTTPServer, threading.Thread]:
    """Serve a fresh hub on a free localhost port in a daemon thread; stop with ``shutdown()``."""
    server = HubHTTPServer(FakeHub(tokens))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
