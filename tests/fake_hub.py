"""A small Hub on 127.0.0.1: the endpoints huggingface_hub calls to create a repo, a branch, check a card
and commit files (preupload answers "regular", so file contents arrive base64-encoded in the commit), and the
ones a download calls (a revision's file list, and HEAD/GET of a file), so that a downstream user's plain
`AutoModel.from_pretrained("org/name")` reads what was pushed through the real Hub code path.
Repos live in memory as {branch: {path: bytes}}; `fail[route]` lists the statuses the next calls of a route
(create, branch, preupload, commit) answer instead of working."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        # repo_id -> {"private": bool, "branches": {name: {path: bytes}}, "heads": {name: commit id}}
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization header
        self.commits: list[tuple[str, str, list[str]]] = []  # repo, branch, paths
        self.fail: dict[str, list[int]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"][branch]

    def revision_sha(self, repo_id: str, branch: str) -> str:
        """The commit id a branch points at (40 hex digits, as the Hub's): its last commit's."""
        return self.repos[repo_id]["heads"][branch]

    def write_out(self, repo_id: str, branch: str, folder: Path) -> Path:
        """What arrived on a branch, as a folder on disk (to load it as downstream users would)."""
        for path, content in self.files(repo_id, branch).items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_bytes(content)
        return folder

    # ------------------------------------------------------------------ request handling

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: dict, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_HEAD(self):
                self._download(send_body=False)

            def do_GET(self):
                self._download(send_body=True)

            def _download(self, send_body: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Authorization")))
                path = self.path.split("?")[0]
                info = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if not (info or resolve):
                    return self._reply(404, {"error": f"no route {path}"})
                repo_id, revision = (info or resolve).group(1, 2)
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                revision = revision or "main"
                by_sha = {sha: name for name, sha in repo["heads"].items()}
                revision = by_sha.get(revision, revision)  # a download asks by commit id once it knows it
                if revision not in repo["branches"]:
                    return self._reply(
                        404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
                    )
                files, sha = repo["branches"][revision], hub.revision_sha(repo_id, revision)
                if info:
                    siblings = [{"rfilename": name} for name in sorted(files)]
                    return self._reply(
                        200, {"id": repo_id, "sha": sha, "private": repo["private"], "siblings": siblings}
                    )
                name = resolve.group(3)
                if name not in files:
                    headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}
                    return self._reply(404, {"error": f"{name} does not exist on {revision}"}, headers)
                content = files[name]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(content)))
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("X-Repo-Commit", sha)
                self.end_headers()
                if send_body:
                    self.wfile.write(content)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization")
                hub.requests.append(("POST", self.path, auth))
                if auth != f"Bearer {hub.token}":
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                path = self.path.split("?")[0]
                route = (
                    "create"
                    if path == "/api/repos/create"
                    else path.split("/")[-2]
                    if path.startswith("/api/models/")
                    else None
                )
                if hub.fail.get(route):
                    status = hub.fail[route].pop(0)
                    return self._reply(status, {"error": f"injected failure {status}"})
                if path == "/api/repos/create":
                    return self._create(json.loads(body))
                if path == "/api/validate-yaml":
                    return self._validate(json.loads(body))
                match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/(.+)", path)
                if not match:
                    return self._reply(404, {"error": f"no route {path}"})
                repo_id, action, revision = match.groups()
                if repo_id not in hub.repos:
                    return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                branches = hub.repos[repo_id]["branches"]
                if action == "branch":
                    if revision in branches:
                        return self._reply(409, {"error": "Reference already exists"})
                    branches[revision] = dict(branches["main"])
                    hub.repos[repo_id]["heads"][revision] = hub.repos[repo_id]["heads"]["main"]
                    return self._reply(200, {})
                if revision not in branches:
                    return self._reply(
                        404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"}
                    )
                if action == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                return self._commit(repo_id, revision, body)

            def _create(self, payload: dict):
                repo_id = (
                    f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
                )
                url = {"url": f"{hub.url}/{repo_id}"}
                if repo_id in hub.repos:
                    return self._reply(409, {"error": "You already created this model repo", **url})
                hub.repos[repo_id] = {
                    "private": payload.get("visibility") == "private" or bool(payload.get("private")),
                    "branches": {"main": {}},
                    "heads": {"main": hashlib.sha1(repo_id.encode()).hexdigest()},  # branch -> commit id
                }
                return self._reply(200, url)

            def _validate(self, payload: dict):
                text = payload["content"]
                if not text.startswith("---\n"):
                    return self._reply(400, {"error": "no metadata block"})
                try:
                    yaml.safe_load(text.split("---\n")[1])
                except yaml.YAMLError as e:
                    return self._reply(400, {"error": f"invalid YAML: {e}"})
                return self._reply(200, {"errors": [], "warnings": []})

            def _commit(self, repo_id: str, revision: str, body: bytes):
                files = hub.repos[repo_id]["branches"][revision]
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                if not lines or lines[0]["key"] != "header":
                    return self._reply(400, {"error": "commit payload must start with a header"})
                changed = []
                for line in lines[1:]:
                    if line["key"] == "file":
                        files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                        changed.append(line["value"]["path"])
                    elif line["key"] == "deletedFile":
                        files.pop(line["value"]["path"], None)
                    else:
                        return self._reply(400, {"error": f"unsupported operation {line['key']}"})
                hub.commits.append((repo_id, revision, changed))
                oid = hashlib.sha1(json.dumps(sorted(changed)).encode() + str(len(hub.commits)).encode()).hexdigest()
                hub.repos[repo_id]["heads"][revision] = oid
                return self._reply(
                    200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid, "success": True}
                )

        return Handler
