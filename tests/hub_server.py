"""A loopback Hugging Face Hub for tests: dataset repos served the way the Hub's API serves them to
`huggingface_hub` and `datasets` (no client code is patched; point `HF_ENDPOINT` at `HubServer.url`).

Endpoints (what `HfApi.dataset_info`, `list_repo_tree`, `get_paths_info`, `HfFileSystem` and `hf_hub_download`
call):

    GET  /api/datasets/{repo}[/revision/{rev}]          repo info: id, sha, siblings, cardData
    GET  /api/datasets/{repo}/tree/{rev}[/{path}]         tree entries (?recursive=true for the whole subtree)
    POST /api/datasets/{repo}/paths-info/{rev}            entries of the paths asked (form field `paths`)
    HEAD|GET /datasets/{repo}/resolve/{rev}/{path}        the file, with X-Repo-Commit, ETag, Content-Length and,
                                                          for parquet (LFS on the Hub), X-Linked-Etag/-Size; Range
Unknown repos answer 404 with `X-Error-Code: RepoNotFound`, unknown revisions `RevisionNotFound`, unknown files
`EntryNotFound`, as the Hub does, so the clients raise their own typed errors. Every request is logged in
`requests` (method and path) for tests to assert on.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".arrow")


@dataclass
class Repo:
    """A dataset repo: commits (sha -> {path: bytes}) and refs (tag or branch -> sha)."""

    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], *refs: str) -> str:
        sha = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in files.items())).encode())
        commit = sha.hexdigest()
        self.files[commit] = dict(files)
        for ref in refs:
            self.refs[ref] = commit
        return commit

    def resolve(self, revision: str) -> str | None:
        if revision in self.files:
            return revision
        return self.refs.get(revision)


def parquet_bytes(table) -> bytes:
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def hub_env(endpoint: str, home: Path) -> dict[str, str]:
    """The user's environment with the Hub at `endpoint`, caches under `home`, online, and no token (for a
    `factory` subprocess: huggingface_hub reads HF_ENDPOINT when it is imported)."""
    tests = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return env | {
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "PYTHONPATH": os.pathsep.join([str(tests), str(tests.parent)]),
    }


def factory(endpoint: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`factory <args>` in a subprocess against the Hub at `endpoint`."""
    cmd = [sys.executable, "-m", "factory", *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, env=hub_env(endpoint, cwd), capture_output=True, text=True, timeout=300)


class HubServer:
    """`with HubServer() as hub: hub.repos['org/name'] = Repo(); ...` on 127.0.0.1, a free port, one thread."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _entry(path: str, data: bytes) -> dict:
    entry = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": path}
    if path.endswith(LFS_SUFFIXES):
        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
    return entry


def _folder(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def _tree(files: dict[str, bytes], under: str, recursive: bool) -> list[dict]:
    prefix = f"{under.strip('/')}/" if under.strip("/") else ""
    out, folders = [], {}
    for path in sorted(files):
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix) :]
        parts = rest.split("/")
        for depth in range(1, len(parts)):
            if recursive or depth == 1:
                folders.setdefault(prefix + "/".join(parts[:depth]), None)
        if recursive or len(parts) == 1:
            out.append(_entry(path, files[path]))
    return [_folder(f) for f in folders] + out


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the test reads `hub.requests`
            pass

        def do_HEAD(self) -> None:
            self._route(body=False)

        def do_GET(self) -> None:
            self._route(body=True)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            self._route(body=True, form=form)

        def _route(self, body: bool, form: dict | None = None) -> None:
            url = urlsplit(self.path)
            hub.requests.append(f"{self.command} {url.path}")
            query = parse_qs(url.query)
            parts = url.path.split("/")
            if url.path.startswith("/api/datasets/"):
                return self._api(parts[3:], query, form)
            if url.path.startswith("/datasets/") and len(parts) > 6 and parts[4] == "resolve":
                return self._resolve("/".join(parts[2:4]), unquote(parts[5]), unquote("/".join(parts[6:])), body)
            self._error(404, "RepoNotFound", "not found")

        def _repo(self, name: str, revision: str) -> tuple[Repo, str] | None:
            repo = hub.repos.get(name)
            if repo is None:
                self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
                return None
            commit = repo.resolve(revision)
            if commit is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return repo, commit

        def _api(self, parts: list[str], query: dict, form: dict | None) -> None:
            name = "/".join(parts[:2])
            action = parts[2] if len(parts) > 2 else "revision"
            revision = unquote(parts[3]) if len(parts) > 3 else "main"
            found = self._repo(name, revision)
            if found is None:
                return
            repo, commit = found
            files = repo.files[commit]
            if action == "revision":
                info = {
                    "_id": commit,
                    "id": name,
                    "sha": commit,
                    "private": False,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": [{"rfilename": p} for p in sorted(files)],
                    "lastModified": "2025-01-01T00:00:00.000Z",
                    "cardData": {},
                }
                return self._json(info, commit)
            if action == "tree":
                under = unquote("/".join(parts[4:]))
                recursive = query.get("recursive", ["false"])[0].lower() == "true"
                return self._json(_tree(files, under, recursive), commit)
            if action == "paths-info":
                asked = (form or {}).get("paths", [])
                dirs = {p.rsplit("/", depth)[0] for p in files for depth in range(1, p.count("/") + 1)}
                entries = [_entry(p, files[p]) if p in files else _folder(p) for p in asked if p in files or p in dirs]
                return self._json(entries, commit)
            self._error(404, "EntryNotFound", f"unknown endpoint {action}")

        def _resolve(self, name: str, revision: str, path: str, body: bool) -> None:
            found = self._repo(name, revision)
            if found is None:
                return
            repo, commit = found
            data = repo.files[commit].get(path)
            if data is None:
                return self._error(404, "EntryNotFound", f"Entry not found: {path}", commit)
            headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"', "Accept-Ranges": "bytes"}
            if path.endswith(LFS_SUFFIXES):
                headers |= {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))}
            status, chunk = 200, data
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                lo, _, hi = wanted[6:].partition("-")
                start = int(lo) if lo else max(len(data) - int(hi), 0)
                stop = min(int(hi) + 1, len(data)) if (hi and lo) else len(data)
                status, chunk = 206, data[start:stop]
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            self._send(status, chunk if body else b"", headers, length=len(chunk))

        def _json(self, payload, commit: str) -> None:
            data = json.dumps(payload).encode()
            self._send(200, data, {"Content-Type": "application/json", "X-Repo-Commit": commit})

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            data = json.dumps({"error": message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message}
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, data if self.command != "HEAD" else b"", headers, length=len(data))

        def _send(self, status: int, data: bytes, headers: dict, length: int | None = None) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            if data:
                self.wfile.write(data)

    return Handler
