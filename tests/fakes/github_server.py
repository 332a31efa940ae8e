"""A fake of the GitHub REST endpoints aca uses for pull requests, on loopback.

    GET   /repos/{owner}/{repo}                   the repository (its default_branch)
    GET   /repos/{owner}/{repo}/pulls             ?head=owner:branch&state=open|closed|all
    POST  /repos/{owner}/{repo}/pulls             open one: 201, or 422 "A pull request
                                                  already exists for owner:branch."
    PATCH /repos/{owner}/{repo}/pulls/{number}    update title/body: 200, or 404

With ``server.rate_limited`` set, every request is GitHub's rate limit: 403 "API rate limit
exceeded ...", ``x-ratelimit-remaining: 0`` and ``x-ratelimit-reset`` (epoch seconds).
Authentication as GitHub does it: ``Authorization: Bearer <token>`` (or ``token <token>``);
none gives 401 "Requires authentication", a wrong one 401 "Bad credentials"; an unknown
repository is 404 "Not Found". Error bodies have GitHub's shape (``message``,
``documentation_url``, ``status``, and ``errors`` for 422). Every request is recorded in
``server.requests``; ``server.repos`` holds the state (repositories and their pulls).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.llm_server import QuietServer

DOCS = "https://docs.github.com/rest"


@dataclass
class GitHubRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    received_at: float = field(default_factory=time.time)


@dataclass
class FakeRepo:
    owner: str
    name: str
    default_branch: str = "main"
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)

    def open_pull_for(self, head: str) -> dict[str, Any] | None:
        return next(
            (p for p in self.pulls.values() if p["head"]["ref"] == head and p["state"] == "open"),
            None,
        )


class FakeGitHub:
    """Start with ``with FakeGitHub(token="...") as github:``; ``github.url`` is the API URL."""

    def __init__(self, token: str = "ghp_faketoken0123456789abcdefABCDEF"):
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[GitHubRequest] = []
        self.rate_limited = False
        self._lock = threading.Lock()
        self._next_number = 1
        self._httpd: ThreadingHTTPServer | None = None

    def add_repo(self, full_name: str, default_branch: str = "main") -> FakeRepo:
        owner, name = full_name.split("/")
        self.repos[full_name] = FakeRepo(owner, name, default_branch)
        return self.repos[full_name]

    def pulls(self, full_name: str) -> list[dict[str, Any]]:
        return list(self.repos[full_name].pulls.values())

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeGitHub:
        handler = type("Handler", (_Handler,), {"fake": self})
        # Its accept loop never blocks, as the LLM fake's (llm_server.py).
        self._httpd = QuietServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # --- the endpoints ------------------------------------------------------------------

    def handle(self, request: GitHubRequest) -> tuple[int, Any] | tuple[int, Any, dict]:
        with self._lock:
            self.requests.append(request)
            if self.rate_limited:
                headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1796000000"}
                return 403, _error("API rate limit exceeded for user ID 1.", 403), headers
            auth = request.headers.get("authorization", "")
            if not auth:
                return 401, _error("Requires authentication", 401)
            scheme, _, token = auth.partition(" ")
            if scheme.lower() not in ("bearer", "token") or token != self.token:
                return 401, _error("Bad credentials", 401)
            match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/pulls(?:/(\d+))?)?", request.path)
            repo = match and self.repos.get(f"{match[1]}/{match[2]}")
            if not repo:
                return 404, _error("Not Found", 404)
            if not match[3]:
                if request.method != "GET":
                    return 404, _error("Not Found", 404)
                return 200, _repo_json(repo, self.url)
            if match[4]:
                return self._one_pull(repo, int(match[4]), request)
            if request.method == "GET":
                return 200, self._list(repo, request.query)
            if request.method == "POST":
                return self._create(repo, request.body or {})
            return 404, _error("Not Found", 404)

    def _list(self, repo: FakeRepo, query: dict[str, str]) -> list[dict[str, Any]]:
        state = query.get("state", "open")
        found = [p for p in repo.pulls.values() if state == "all" or p["state"] == state]
        if "head" in query:
            owner, _, ref = query["head"].partition(":")
            found = [p for p in found if p["head"]["ref"] == ref and owner == repo.owner]
        return found

    def _create(self, repo: FakeRepo, body: dict[str, Any]) -> tuple[int, Any]:
        missing = [f for f in ("title", "head", "base") if not body.get(f)]
        if missing:
            errors = [
                {"resource": "PullRequest", "field": f, "code": "missing_field"} for f in missing
            ]
            return 422, _error("Validation Failed", 422, errors, "pulls#create-a-pull-request")
        if repo.open_pull_for(body["head"]):
            errors = [
                {
                    "resource": "PullRequest",
                    "code": "custom",
                    "message": f"A pull request already exists for {repo.owner}:{body['head']}.",
                }
            ]
            return 422, _error("Validation Failed", 422, errors, "pulls#create-a-pull-request")
        number, self._next_number = self._next_number, self._next_number + 1
        pull = {
            "number": number,
            "state": "open",
            "title": body["title"],
            "body": body.get("body") or "",
            "head": {"ref": body["head"], "label": f"{repo.owner}:{body['head']}"},
            "base": {"ref": body["base"]},
            "html_url": f"https://github.com/{repo.owner}/{repo.name}/pull/{number}",
            "url": f"{self.url}/repos/{repo.owner}/{repo.name}/pulls/{number}",
        }
        repo.pulls[number] = pull
        return 201, pull

    def _one_pull(self, repo: FakeRepo, number: int, request: GitHubRequest) -> tuple[int, Any]:
        pull = repo.pulls.get(number)
        if pull is None:
            return 404, _error("Not Found", 404)
        if request.method == "PATCH":
            for key in ("title", "body", "state"):
                if key in (request.body or {}):
                    pull[key] = request.body[key]
            return 200, pull
        if request.method == "GET":
            return 200, pull
        return 404, _error("Not Found", 404)


def _repo_json(repo: FakeRepo, url: str) -> dict[str, Any]:
    return {
        "full_name": f"{repo.owner}/{repo.name}",
        "name": repo.name,
        "owner": {"login": repo.owner},
        "default_branch": repo.default_branch,
        "url": f"{url}/repos/{repo.owner}/{repo.name}",
    }


def _error(message: str, status: int, errors: list | None = None, doc: str = "") -> dict:
    body: dict[str, Any] = {
        "message": message,
        "documentation_url": f"{DOCS}/{doc}" if doc else DOCS,
        "status": str(status),
    }
    if errors is not None:
        body["errors"] = errors
    return body


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGitHub
    protocol_version = "HTTP/1.1"
    # As real servers do: the body, a second small write, does not wait for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, _error("Problems parsing JSON", 400))
            return
        request = GitHubRequest(
            method=self.command,
            path=parts.path.rstrip("/"),
            query={k: v[-1] for k, v in parse_qs(parts.query).items()},
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self._send(*self.fake.handle(request))

    def _send(self, status: int, payload: Any, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
