"""Delivering a session's work where people review it: GitHub pull requests.

Below ``flows`` (which reads tokens from Prefect Secret blocks and decides when to deliver):
this package knows GitHub's REST API and how a session reads as a pull request, nothing of
Prefect.
"""

from aca_flows.delivery.github import (
    GitHubError,
    GitHubRepo,
    PullRequest,
    open_or_update_pull_request,
    parse_github_repo,
)
from aca_flows.delivery.pr_body import pull_request_body, pull_request_title

__all__ = [
    "GitHubError",
    "GitHubRepo",
    "PullRequest",
    "open_or_update_pull_request",
    "parse_github_repo",
    "pull_request_body",
    "pull_request_title",
]
