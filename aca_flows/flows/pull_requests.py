"""``open_pr``: the session branch arrives as one pull request on GitHub.

Before any task starts, the run finds its token (``GITHUB_TOKEN``, or the Prefect Secret
block named by ``[github] token_secret``) and its repository (``github_repo``, else the
github.com URL of the repository's ``origin``); a run that could not deliver ends Failed with
the fix before anything is spent. The pull request is opened (or the open one updated) when a
task lands and once more at the end, from the session record, so its body always tells how far
the run got. With a ``repo`` it is delivered only once the push of what landed succeeded: while
the remote lacks landed commits it is not touched, and at the end that is the summary's
``pull_request_error``. A refusal from GitHub is logged and returned in the summary
(``pull_request_error``): the work itself is on the session branch either way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aca_flows._threads import in_thread
from aca_flows.delivery import (
    GitHubError,
    GitHubRepo,
    open_or_update_pull_request,
    parse_github_repo,
    pull_request_body,
    pull_request_title,
)
from aca_flows.errors import ConfigError
from aca_flows.flows.publishing import published
from aca_flows.flows.remote_sync import pushes_settled
from aca_flows.flows.secret_keys import read_secret_block
from aca_flows.plan.vacuous_check import pass_notes
from aca_flows.session.record import SessionRecord
from aca_flows.session.secret_values import register_secret
from aca_flows.settings import AcaConfig
from aca_flows.workspace.repository import origin_url

if TYPE_CHECKING:
    from aca_flows.flows.summary import RunSummary
    from aca_flows.flows.task_run import ActiveRun
    from aca_flows.session.store import SessionStore

__all__ = [
    "PULL_REQUESTS",
    "PullRequestTarget",
    "deliver",
    "deliver_pull_request",
    "pull_request_target",
    "update_pull_request",
]

TOKEN_VARIABLES = ("GITHUB_TOKEN",)


@dataclass
class PullRequestTarget:
    """Where and as whom a session's pull request is delivered (the token is never logged:
    it is registered with the redactor when read)."""

    repo: GitHubRepo
    token: str
    base: str | None = None
    url: str | None = None
    error: str | None = None
    lock: asyncio.Lock | None = None


# The target of each running session that asked for a pull request, by session id.
PULL_REQUESTS: dict[str, PullRequestTarget] = {}


def pull_request_target(
    config: AcaConfig, workdir: Path, github_repo: str | None
) -> PullRequestTarget:
    """The target of ``open_pr`` for the repository at ``workdir``; raises ``AcaError``
    (naming the fix) when there is none."""
    repo = parse_github_repo(origin_url(workdir), github_repo)
    return PullRequestTarget(repo=repo, token=github_token(config), base=config.github.base_branch)


def github_token(config: AcaConfig) -> str:
    block = config.github.token_secret
    if block:
        return read_secret_block(block, setting="[github] token_secret")
    for name in TOKEN_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            register_secret(value)
            return value
    raise ConfigError(
        "open_pr needs a GitHub token: set GITHUB_TOKEN in the environment of the run (the "
        "worker's, for a deployment), or name a Prefect Secret block holding it in "
        "[github] token_secret."
    )


async def deliver(
    target: PullRequestTarget,
    session: SessionRecord,
    verify: dict[str, str],
    flow_run_url: str | None,
) -> None:
    """Open or update the pull request from ``session`` as it stands; records the URL, or
    GitHub's refusal, on ``target``. One delivery at a time per run. Nothing is delivered
    while the session's last push failed: the body would list commits the remote lacks."""
    target.lock = target.lock or asyncio.Lock()
    await pushes_settled(session.id)  # the push of what landed first
    if session.remote is not None and session.remote.unpushed:
        return  # the push's warning says why; the end of the run tells it (scheduler.py)
    title = pull_request_title(session)
    body = pull_request_body(session, verify, flow_run_url)
    async with target.lock:
        try:
            pull = await in_thread(
                open_or_update_pull_request,
                target.repo,
                token=target.token,
                head=session.branch,
                title=title,
                body=body,
                base=target.base,
            )
        except GitHubError as exc:
            target.error = str(exc)
            return
        target.url, target.error = pull.url, None


def update_pull_request(session: SessionRecord, outcomes: dict) -> Coroutine | None:
    """The delivery of the run's pull request from ``session`` as it stands, with what each
    task's verify said (``outcomes``: task id -> ``TaskOutcome``); None when the run opens
    none. Called inside the flow run, whose UI link goes into the body."""
    target = PULL_REQUESTS.get(session.id)
    if target is None:
        return None
    return deliver(target, session, _verify_results(outcomes), _flow_run_url())


def _verify_results(outcomes: dict) -> dict[str, str]:
    """What each task's verify command said in this run, for the pull request."""
    results = {}
    for task_id, outcome in outcomes.items():
        if outcome.verify_command and outcome.verify_passed is not None:
            said = "passed" if outcome.verify_passed else "failed"
            results[task_id] = f"{said}: `{outcome.verify_command}`"
            # As the log and the report say.
            notes = pass_notes(outcome.verify_passed, outcome.verify_command, outcome.files_changed)
            results[task_id] += "".join(f" ({note})" for note in notes)
    return results


def _flow_run_url() -> str | None:
    from prefect.context import get_run_context
    from prefect.utilities.urls import url_for

    from aca_flows.flows.server import runs_on_a_temporary_server

    if runs_on_a_temporary_server():  # gone with the run: a link to nowhere
        return None
    flow_run = getattr(get_run_context(), "flow_run", None)
    return url_for(flow_run) if flow_run is not None else None


async def deliver_pull_request(store: SessionStore, run: ActiveRun, summary: RunSummary) -> None:
    """The pull request's last update, once the session's end is recorded; its URL or
    GitHub's refusal goes into the summary and the log."""
    target = PULL_REQUESTS.get(run.session_id)
    if target is None:
        return
    from prefect import get_run_logger

    await published(run.session_id)  # the per-task updates first: this one is the last word
    if summary.unpushed:
        # The remote lacks landed commits: the pull request would claim work it does not hold.
        summary.pull_request = None
        summary.pull_request_error = (
            f"{summary.branch} is not on {summary.remote}: {summary.unpushed}"
        )
    else:
        await update_pull_request(store.session, run.outcomes)
        summary.pull_request, summary.pull_request_error = target.url, target.error
    if summary.pull_request_error:
        get_run_logger().error(f"pull request not delivered: {summary.pull_request_error}")
    else:
        get_run_logger().info(f"pull request: {target.url}")
