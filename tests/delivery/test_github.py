"""The pull-request client against the fake GitHub: open, update, and GitHub's refusals."""

from __future__ import annotations

import pytest

from aca_flows.delivery.github import (
    GitHubError,
    GitHubRepo,
    open_or_update_pull_request,
    parse_github_repo,
)
from aca_flows.errors import InputError
from tests.fakes.github_server import FakeGitHub

TOKEN = "ghp_faketoken0123456789abcdefABCDEF"
REPO = GitHubRepo("octo", "service")


@pytest.fixture
def github():
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo("octo/service", default_branch="trunk")
        yield fake


def deliver(github: FakeGitHub, token: str = TOKEN, repo: GitHubRepo = REPO, **kw):
    args = {"head": "aca/s1", "title": "aca: demo", "body": "first", **kw}
    return open_or_update_pull_request(repo, token=token, base_url=github.url, **args)


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/octo/service.git",
        "https://github.com/octo/service",
        "https://x-access-token:abc@github.com/octo/service.git",
        "git@github.com:octo/service.git",
        "ssh://git@github.com/octo/service",
    ],
)
def test_the_repository_is_read_from_https_and_ssh_remote_urls(url):
    assert parse_github_repo(url) == REPO


def test_a_remote_that_is_not_on_github_needs_the_repository_named():
    with pytest.raises(InputError, match="--github-repo OWNER/NAME"):
        parse_github_repo("/srv/git/service.git")
    assert parse_github_repo("/srv/git/service.git", "octo/service") == REPO
    with pytest.raises(InputError, match="OWNER/NAME"):
        parse_github_repo(None, "octo")
    # No remote at all: said so ("from no remote URL: it is not a github.com URL").
    with pytest.raises(InputError, match="the repository has no remote named origin"):
        parse_github_repo(None)


def test_the_first_delivery_opens_a_pull_request_against_the_default_branch(github):
    pull = deliver(github)
    assert pull.created and pull.number == 1
    assert pull.url == "https://github.com/octo/service/pull/1"
    (opened,) = github.pulls("octo/service")
    assert (opened["base"]["ref"], opened["head"]["ref"], opened["body"]) == (
        "trunk",
        "aca/s1",
        "first",
    )
    # Sent as GitHub asks: the bearer token, its media type and API version.
    headers = github.requests[-1].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"


def test_a_later_delivery_updates_the_same_pull_request(github):
    deliver(github)
    pull = deliver(github, body="second", title="aca: demo, done")
    assert not pull.created and pull.number == 1
    (only,) = github.pulls("octo/service")
    assert (only["title"], only["body"]) == ("aca: demo, done", "second")
    assert [r.method for r in github.requests][-2:] == ["GET", "PATCH"]


def test_a_pull_request_opened_meanwhile_is_found_after_422_and_updated(github):
    # Another worker opens it between our look and our create: GitHub answers 422.
    real_list = github._list
    calls = {"n": 0}

    def list_then_race(repo, query):
        calls["n"] += 1
        if calls["n"] == 1:
            github._create(repo, {"title": "theirs", "head": "aca/s1", "base": "trunk"})
            return []
        return real_list(repo, query)

    github._list = list_then_race
    pull = deliver(github, body="ours")
    assert not pull.created
    statuses = [r.method for r in github.requests]
    assert statuses == ["GET", "GET", "POST", "GET", "PATCH"]
    (only,) = github.pulls("octo/service")
    assert only["body"] == "ours"


def test_a_bad_token_is_a_401_that_names_the_fix_and_never_the_token(github):
    wrong = "ghp_wrongtoken0123456789abcdefABCDEF"
    with pytest.raises(GitHubError) as caught:
        deliver(github, token=wrong)
    message = str(caught.value)
    assert caught.value.status == 401
    assert "Bad credentials" in message and "GITHUB_TOKEN" in message
    assert wrong not in message and TOKEN not in message
    assert github.pulls("octo/service") == []


def test_a_rate_limit_is_told_as_one_not_as_a_missing_permission(github):
    # GitHub answers its rate limit with a 403: the fix said to give the token write access.
    github.rate_limited = True
    with pytest.raises(GitHubError) as caught:
        deliver(github)
    message = str(caught.value)
    assert "API rate limit exceeded for user ID 1. Fix:" in message  # one period, not two
    assert "rate limit for this token is spent: resume once it resets (at " in message
    assert "write access" not in message


def test_an_unknown_repository_is_a_404_naming_it(github):
    with pytest.raises(GitHubError, match="404.*octo/missing.*--github-repo") as caught:
        deliver(github, repo=GitHubRepo("octo", "missing"))
    assert caught.value.status == 404


def test_a_refused_create_reports_githubs_own_reason(github):
    with pytest.raises(GitHubError, match="422.*Validation Failed.*missing_field"):
        deliver(github, base="", title="")


def test_no_server_is_an_error_that_says_where_it_looked():
    with pytest.raises(GitHubError, match="did not answer.*GITHUB_API_URL"):
        open_or_update_pull_request(
            REPO, token=TOKEN, head="aca/s1", title="t", body="b", base_url="http://127.0.0.1:9"
        )
