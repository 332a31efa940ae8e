"""One pull request per session branch, through GitHub's REST API (httpx).

The endpoints used: ``GET /repos/{owner}/{repo}`` (the default branch, the base when none is
configured), ``GET /repos/{owner}/{repo}/pulls?head=owner:branch&state=open`` (the session's
pull request, if one is open), ``POST /repos/{owner}/{repo}/pulls`` (open it) and
``PATCH /repos/{owner}/{repo}/pulls/{number}`` (update its title and body). A create that
GitHub answers with 422 "A pull request already exists" (another worker opened it meanwhile)
finds that one and updates it.

The base URL is ``GITHUB_API_URL`` (what GitHub Actions sets, GitHub Enterprise included),
else the public API. The token goes in the ``Authorization`` header only; every message this
module raises is redacted, so the token never reaches a log, the session or a result.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from aca_flows.errors import AcaError, InputError
from aca_flows.session.redact import redact_text
from aca_flows.session.secret_values import register_secret

__all__ = [
    "DEFAULT_API_URL",
    "GitHubError",
    "GitHubRepo",
    "PullRequest",
    "api_url",
    "open_or_update_pull_request",
    "parse_github_repo",
]

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
TIMEOUT_SECONDS = 30

# https://github.com/o/r(.git), git@github.com:o/r(.git), ssh://git@github.com/o/r(.git)
_URL_FORMS = (
    re.compile(r"^https?://(?:[^@/]+@)?github\.com/(?P<owner>[^/]+)/(?P<name>[^/]+?)(?:\.git)?/?$"),
    re.compile(r"^(?:ssh://)?git@github\.com[:/](?P<owner>[^/]+)/(?P<name>[^/]+?)(?:\.git)?/?$"),
)
_OWNER_NAME = re.compile(r"^(?P<owner>[A-Za-z0-9_.-]+)/(?P<name>[A-Za-z0-9_.-]+)$")


class GitHubError(AcaError):
    """GitHub refused or failed a request; the message says which, and what to do."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None):
        super().__init__(redact_text(message))
        self.status = status


@dataclass(frozen=True)
class GitHubRepo:
    owner: str
    name: str

    def __str__(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    created: bool
    """True when this call opened it; False when it updated one already open."""


def parse_github_repo(remote_url: str | None, explicit: str | None = None) -> GitHubRepo:
    """The repository a pull request goes to: ``explicit`` (``OWNER/NAME``) when given, else
    the one a github.com remote URL names (https or ssh form)."""
    if explicit:
        match = _OWNER_NAME.match(explicit.strip())
        if not match:
            raise InputError(
                f"--github-repo {explicit!r}: give the repository as OWNER/NAME, "
                "e.g. --github-repo octo-org/service."
            )
        return GitHubRepo(match["owner"], match["name"])
    for form in _URL_FORMS:
        match = form.match((remote_url or "").strip())
        if match:
            return GitHubRepo(match["owner"], match["name"])
    if not remote_url:
        raise InputError(
            "the repository has no remote named origin, whose URL names the GitHub repository "
            "of a pull request: add it (`git remote add origin URL`), or name the repository "
            "with --github-repo OWNER/NAME (the github_repo parameter of a deployment)."
        )
    raise InputError(
        f"cannot tell the GitHub repository from the remote {redact_text(remote_url)}: it is "
        "not a github.com URL. Name it with --github-repo OWNER/NAME (the github_repo "
        "parameter of a deployment)."
    )


def api_url(environ: dict[str, str] | None = None) -> str:
    """``GITHUB_API_URL`` as GitHub Actions sets it, else the public API."""
    environ = os.environ if environ is None else environ
    return (environ.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")


def open_or_update_pull_request(
    repo: GitHubRepo,
    *,
    token: str,
    head: str,
    title: str,
    body: str,
    base: str | None = None,
    base_url: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> PullRequest:
    """Open the pull request of branch ``head``, or update the one already open. ``base``:
    the branch it merges into (default: the repository's default branch)."""
    register_secret(token)
    with httpx.Client(
        base_url=base_url or api_url(),
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "aca-flows",
        },
        timeout=TIMEOUT_SECONDS,
        transport=transport,
    ) as client:
        pulls = f"/repos/{repo.owner}/{repo.name}/pulls"
        existing = _open_pull(client, repo, head)
        if existing is None:
            base = base or _default_branch(client, repo)
            payload = {"title": title, "head": head, "base": base, "body": body}
            response = _send(client, "POST", pulls, repo, json=payload)
            if response.status_code == 201:
                return _pull(response.json(), created=True)
            if not _already_exists(response):
                raise _error(response, repo, f"opening a pull request for {head}")
            existing = _open_pull(client, repo, head)
            if existing is None:  # closed between the two calls: say so rather than guess
                raise _error(response, repo, f"opening a pull request for {head}")
        number = existing["number"]
        response = _send(
            client, "PATCH", f"{pulls}/{number}", repo, json={"title": title, "body": body}
        )
        if response.status_code != 200:
            raise _error(response, repo, f"updating pull request #{number}")
        return _pull(response.json(), created=False)


def _open_pull(client: httpx.Client, repo: GitHubRepo, head: str) -> dict[str, Any] | None:
    response = _send(
        client,
        "GET",
        f"/repos/{repo.owner}/{repo.name}/pulls",
        repo,
        params={"head": f"{repo.owner}:{head}", "state": "open"},
    )
    if response.status_code != 200:
        raise _error(response, repo, f"looking for the pull request of {head}")
    found = response.json()
    return found[0] if found else None


def _default_branch(client: httpx.Client, repo: GitHubRepo) -> str:
    response = _send(client, "GET", f"/repos/{repo.owner}/{repo.name}", repo)
    if response.status_code != 200:
        raise _error(response, repo, "reading the repository's default branch")
    return response.json()["default_branch"]


def _send(client: httpx.Client, method: str, path: str, repo: GitHubRepo, **kwargs):
    try:
        return client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise GitHubError(
            f"GitHub API at {client.base_url} did not answer ({type(exc).__name__}: {exc}) "
            f"for {repo}; check GITHUB_API_URL and the network, then resume the session."
        ) from None


def _already_exists(response: httpx.Response) -> bool:
    if response.status_code != 422:
        return False
    errors = _body(response).get("errors") or []
    return any("already exists" in str(e.get("message", "")) for e in errors if isinstance(e, dict))


def _pull(data: dict[str, Any], created: bool) -> PullRequest:
    return PullRequest(number=data["number"], url=data["html_url"], created=created)


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error(response: httpx.Response, repo: GitHubRepo, doing: str) -> GitHubError:
    """GitHub's own message, and what fixes it."""
    status = response.status_code
    body = _body(response)
    said = body.get("message") or response.text[:200] or response.reason_phrase
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    details = "; ".join(str(e.get("message") or e.get("code")) for e in errors)
    if details:
        said = f"{said} ({details})"
    fix = {
        401: "the token is wrong or expired: set a valid GITHUB_TOKEN (or the Secret block "
        "named in [github] token_secret)",
        403: "the token may not do this: give it pull-request write access to the repository",
        404: f"GitHub shows no repository {repo} to this token: check --github-repo and that "
        "the token can see it",
        422: "GitHub refused the request: check that the session branch was pushed and the "
        "base branch exists",
    }.get(status, "try again later; the work is on the session branch either way")
    if status in (403, 429) and (
        response.headers.get("x-ratelimit-remaining") == "0" or "rate limit" in said.lower()
    ):  # GitHub's rate limits answer 403 too: no permission is missing
        fix = "GitHub's rate limit for this token is spent: resume once it resets"
        if (reset := response.headers.get("x-ratelimit-reset", "")).isdigit():
            fix += f" (at {datetime.fromtimestamp(int(reset), UTC):%H:%M} UTC)"
    said = said.rstrip(". ")
    return GitHubError(f"GitHub {status} while {doing} in {repo}: {said}. Fix: {fix}.", status)
