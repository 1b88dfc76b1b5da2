"""A loopback stand-in for the part of the Hugging Face Hub API that `huggingface_hub` uses to
push and download: whoami, create repo, create branch, validate YAML, preupload, commit (files
inline, base64 in the NDJSON body), repo info, and file download (HEAD/GET ``resolve``).

Test helper, not library code. Repos live in memory. The token holder is ``user`` (member of
``orgs``) with ``role`` ("write" or "read"); ``accepted`` limits the valid tokens (None: any
non-empty bearer token), others get 401 everywhere. Private repos answer only requests that
carry a token, and every request is logged in ``server.requests`` as (method, path) so that
tests can count commits.

    with HubServer() as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_TYPE = r"(?P<type>model|dataset|space)s"
_RESOLVE = re.compile(r"^/(?:(?P<type>dataset|space)s/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_ROUTES = [
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/api/{_TYPE}/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/{_TYPE}/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/{_TYPE}/{_REPO}/branch/(?P<rev>[^/]+)$"), "create_branch"),
    ("GET", re.compile(rf"^/api/{_TYPE}/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "repo_info"),
    ("GET", _RESOLVE, "resolve"),
    ("HEAD", _RESOLVE, "resolve"),
]


@dataclass
class Repo:
    private: bool
    branches: dict[str, tuple[str, dict[str, bytes]]] = field(default_factory=dict)  # name -> (commit oid, files)


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Handler(BaseHTTPRequestHandler):
    server: HubServer

    def log_message(self, *args):  # keep test output clean; requests are in server.requests
        pass

    def do_POST(self):
        self._dispatch("POST")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def _dispatch(self, method: str):
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((method, path))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        for route_method, pattern, name in _ROUTES:
            match = pattern.match(path)
            if route_method == method and match:
                params = {k: v for k, v in match.groupdict().items() if v is not None}
                try:
                    with self.server.lock:
                        status, headers, payload = getattr(self.server, name)(self, body, **params)
                except HubError as error:
                    status, payload = error.status, json.dumps({"error": error.message}).encode()
                    headers = {"X-Error-Message": error.message, **({"X-Error-Code": error.code} if error.code else {})}
                break
        else:
            status, headers, payload = 501, {}, {"error": f"test hub does not serve {method} {path}"}
        if isinstance(payload, (dict, list)):
            payload, headers = json.dumps(payload).encode(), {"Content-Type": "application/json", **headers}
        self.send_response(status)
        for key, value in {"Content-Length": str(len(payload)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    @property
    def token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth.removeprefix("Bearer ").strip() or None


def _git_blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubServer(ThreadingHTTPServer):
    """In-memory Hub on 127.0.0.1 at a free port; use as a context manager."""

    daemon_threads = True

    def __init__(self, user: str = "me", orgs: tuple[str, ...] = (), role: str = "write",
                 accepted: set[str] | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.user, self.orgs, self.role, self.accepted = user, orgs, role, accepted
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.tokens: set[str] = set()
        self.lock = threading.Lock()

    def __enter__(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()

    # --- helpers -------------------------------------------------------------------------
    def _check_token(self, handler: _Handler, write: bool = False) -> str | None:
        token = handler.token
        if token:
            self.tokens.add(token)
            if self.accepted is not None and token not in self.accepted:
                raise HubError(401, None, "Invalid credentials in Authorization header")
        if write and (not token or self.role != "write"):
            raise HubError(401 if not token else 403, None, "You don't have the rights to write here")
        return token

    def _repo(self, handler: _Handler, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        token = self._check_token(handler)
        repo = self.repos.get((repo_type or "model", repo_id))
        if repo is None or (repo.private and not token):
            raise HubError(401 if not token else 404, "RepoNotFound", f"Repository Not Found for url: {handler.path}")
        self._check_token(handler, write)
        return repo

    @staticmethod
    def _branch(repo: Repo, rev: str) -> tuple[str, dict[str, bytes]]:
        if rev in repo.branches:
            return repo.branches[rev]
        for oid, files in repo.branches.values():
            if oid == rev:
                return oid, files
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def commits(self, repo_id: str) -> int:
        """How many commit calls reached ``repo_id``."""
        return sum(1 for method, path in self.requests if method == "POST" and f"/{repo_id}/commit/" in path)

    # --- routes: each returns (status, headers, payload) ---------------------------------
    def whoami(self, handler, body):
        if not self._check_token(handler):
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return 200, {}, {"type": "user", "name": self.user, "orgs": [{"name": org} for org in self.orgs],
                         "auth": {"type": "access_token", "accessToken": {"role": self.role}}}

    def create_repo(self, handler, body):
        self._check_token(handler, write=True)
        request = json.loads(body)
        repo_type = request.get("type") or "model"
        repo_id = f"{request['organization']}/{request['name']}" if request.get("organization") else request["name"]
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.url}/{prefix}{repo_id}"
        if (repo_type, repo_id) in self.repos:
            return 409, {}, {"error": "You already created this repo", "url": url}
        if repo_id.split("/")[0] not in (self.user, *self.orgs):
            raise HubError(403, None, f"You don't have the rights to create a repo under {repo_id.split('/')[0]}")
        repo = Repo(private=request.get("visibility") == "private")
        repo.branches["main"] = (hashlib.sha1(repo_id.encode()).hexdigest(), {})
        self.repos[(repo_type, repo_id)] = repo
        return 200, {}, {"url": url}

    def validate_yaml(self, handler, body):
        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, flags=re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as error:
            return 400, {}, {"errors": [{"message": f"YAML does not parse: {error}"}]}
        if not isinstance(metadata, dict):
            return 400, {}, {"errors": [{"message": "metadata must be a mapping"}]}
        return 200, {}, {"errors": [], "warnings": []}

    def preupload(self, handler, body, type, repo, rev):
        self._branch(self._repo(handler, type, repo, write=True), rev)
        files = json.loads(body)["files"]
        return 200, {}, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}

    def create_branch(self, handler, body, type, repo, rev):
        stored = self._repo(handler, type, repo, write=True)
        if rev in stored.branches:
            return 409, {}, {"error": f"branch {rev} already exists"}
        start = (json.loads(body or b"{}") or {}).get("startingPoint", "main")
        oid, files = self._branch(stored, start)
        stored.branches[rev] = (oid, dict(files))
        return 200, {}, {}

    def commit(self, handler, body, type, repo, rev):
        stored = self._repo(handler, type, repo, write=True)
        parent, files = self._branch(stored, rev)
        files = dict(files)
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        for item in lines[1:]:
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "deletedFile":
                files.pop(value["path"], None)
            else:
                raise HubError(400, None, f"test hub does not accept {item['key']} operations")
        oid = hashlib.sha1(json.dumps([parent, lines[0]["value"], sorted(files)]).encode()).hexdigest()
        stored.branches[rev] = (oid, files)
        prefix = "" if type == "model" else f"{type}s/"
        url = f"{self.url}/{prefix}{repo}/commit/{oid}"
        return 200, {}, {"commitUrl": url, "commitOid": oid, "pullRequestUrl": None}

    def repo_info(self, handler, body, type, repo, rev="main"):
        stored = self._repo(handler, type, repo)
        oid, files = self._branch(stored, rev)
        siblings = [{"rfilename": path, "size": len(content)} for path, content in sorted(files.items())]
        return 200, {}, {"id": repo, "sha": oid, "private": stored.private, "siblings": siblings}

    def resolve(self, handler, body, repo, rev, path, type="model"):
        stored = self._repo(handler, type, repo)
        oid, files = self._branch(stored, rev)
        if path not in files:
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}")
        content = files[path]
        headers = {"X-Repo-Commit": oid, "ETag": f'"{_git_blob_sha(content)}"'}
        return 200, headers, content
