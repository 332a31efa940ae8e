"""What a run's inputs are checked for before it starts: refusals (``InputError``, exit 2)
of a resume that would run altered prompts or build on lost work, or of a run whose session
branch is checked out where aca cannot move it, and warnings of what the
user may not expect (uncommitted changes the tasks do not see, a task file edited since the
session started, setup commands that will run without the network)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from aca_flows._words import exact_usd, listed, resume_command
from aca_flows.errors import InputError
from aca_flows.plan import ExecutionPlan
from aca_flows.session.events import SourceFile
from aca_flows.session.redact import REDACTED
from aca_flows.workspace.commit import completed_task_commits
from aca_flows.workspace.merge import refuse_checked_out_branch
from aca_flows.workspace.repository import (
    SessionBranchCheckedOut,
    staged_paths,
    uncommitted_paths,
)

if TYPE_CHECKING:
    import git

    from aca_flows.flows.run_setup import RunRequest
    from aca_flows.session.record import SessionRecord
    from aca_flows.settings import SandboxSection

__all__ = [
    "changed_source_warning",
    "refuse_a_spent_budget",
    "refuse_checked_out_session_branch",
    "refuse_lost_work",
    "refuse_redacted_work",
    "setup_network_warning",
    "source_of",
    "tasks_left",
    "uncommitted_work_warning",
]


def source_of(request: RunRequest) -> SourceFile | None:
    """The task file or plan the run was started from, with its digest: what a resume compares."""
    given = request.task_file or request.execution_plan
    if not given:
        return None
    path = Path(given).expanduser().resolve()
    with contextlib.suppress(OSError):
        return SourceFile(path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    return None


def changed_source_warning(recorded: SessionRecord) -> str | None:
    """A resume runs the plan recorded at the session's start; an edit of its file since then
    is not in it, and the user must hear so."""
    source = recorded.source
    if source is None:  # a session from before sources were recorded
        return None
    path = Path(source.path)
    with contextlib.suppress(OSError):
        if hashlib.sha256(path.read_bytes()).hexdigest() != source.sha256:
            return (
                f"{path} changed since session {recorded.id} started: the resume runs the plan "
                f"as it was then; to run the file as it is now, start a new run (aca run {path})"
            )
    return None


def uncommitted_work_warning(repo: git.Repo, request: RunRequest) -> str | None:
    """The tasks start from the checkout's last commit: changes not committed are not theirs.
    aca's own inputs (the task file, say) are read by aca, not by the tasks."""
    root = Path(repo.working_tree_dir or ".")
    given = [request.task_file, request.execution_plan, request.config_file, request.record]
    inputs = {Path(f).expanduser().resolve() for f in given if f}
    paths = [p for p in uncommitted_paths(repo) if (root / p).resolve() not in inputs]
    if not paths:
        return None
    shown = listed(paths, 3)
    warning = (
        f"the checkout has uncommitted changes ({shown}): the tasks start from its last "
        "commit and do not see them; commit them first for the tasks to build on them"
    )
    if staged := staged_paths(repo):
        warning += (
            f". Those staged ({listed(staged, 3)}) are in git's object store, which the tasks' "
            "commands can read (docs/security.md): unstage any secret among them"
        )
    return warning


def refuse_redacted_work(plan: ExecutionPlan, session_id: str) -> None:
    """A resumed session runs the plan from its record, which was redacted when written: an
    unfinished task whose prompt or commands lost a secret-looking value would run altered."""
    unfinished = [t for t in plan.tasks if not t.children and t.status.state != "completed"]
    if not unfinished:
        return
    shared = plan.model_dump(
        mode="json", include={"context_hints", "append_system_prompt", "verify", "setup_commands"}
    )
    fields = {"title", "description", "verify", "metadata"}
    altered = [t.id for t in unfinished if REDACTED in json.dumps(t.model_dump(include=fields))]
    if REDACTED in json.dumps(shared):
        altered = [t.id for t in unfinished]
    if altered:
        raise InputError(
            f"session {session_id} cannot be resumed: its record keeps the plan with secrets "
            f"redacted, and unfinished task(s) {', '.join(altered)} would run with "
            f"{REDACTED} in place of your text. aca never runs an altered command or prompt. "
            "Keep secret values out of task files and prompts (read them from environment "
            "variables, e.g. verify = 'pytest' with SECRET exported), and start a new run "
            "from the task file."
        )


def refuse_lost_work(repo: git.Repo, session: SessionRecord) -> None:
    """A resume builds on the session branch: every task on record as landed must be on it.
    A deleted or reset branch would otherwise be made again from HEAD, the tasks after it
    built on work that is gone, and the session still reported completed."""
    landed = [t for t in session.completed_task_ids if (run := session.tasks.get(t)) and run.commit]
    if not landed:
        return
    lost = sorted(set(landed) - set(completed_task_commits(repo, session.id)))
    if not lost:
        return
    last = max(
        (session.tasks[t] for t in landed), key=lambda run: run.finished_at or session.created_at
    )
    shown = ", ".join(lost[:10]) + (" ..." if len(lost) > 10 else "")
    raise InputError(
        f"the session branch {session.branch} no longer holds the work of {len(lost)} "
        f"completed task(s) ({shown}): it was deleted or reset. Restore it "
        f"(`git branch -f {session.branch} {last.commit}`, the last commit on record; "
        "`git reflog` finds others), then resume; or start the work again with `aca run`."
    )


def refuse_a_spent_budget(
    session: SessionRecord, budget_usd: float | None, workdir: Path, remote: str | None = None
) -> None:
    """A resume whose budget the session has already spent would stop before its first call
    (a run that does nothing, ending "Stopped" again): refused, naming the spend to give more
    than. ``budget_usd`` is the resume's; without one, the session keeps the budget it has.
    A session with no task left to run is let through (a resume that only pushes, or delivers
    its pull request, spends nothing). ``remote``: the ``--repo`` of the resume, which its
    command keeps."""
    budget = session.budget_usd if budget_usd is None else budget_usd
    if budget is None or session.cost_usd < budget or not tasks_left(session.plan):
        return
    given = "" if budget_usd is not None else " (its own, kept without --budget-usd)"
    remote = remote or getattr(session.remote, "url", None)  # the --repo it is resumed with
    raise InputError(
        f"session {session.id} has spent ${exact_usd(session.cost_usd)} already, so a budget of "
        f"${budget:g}{given} would stop it before any task runs. Give it a budget above what "
        f"is spent (`{resume_command(session.id, workdir, remote)} --budget-usd N`, "
        f"N > {exact_usd(session.cost_usd)}; a deployment's run: run the deployment again with "
        f"session_id={session.id} and budget_usd=N, as a Retry keeps the budget it had)."
    )


def setup_network_warning(plan: ExecutionPlan, sandbox: SandboxSection) -> str | None:
    """Said before any task starts, not found out at the second task's setup: required setup
    commands that run without the network in tasks whose commands have none (a command's own
    ``network = true`` holds only until a task's work has landed; agent/setup.py)."""
    if sandbox.mode == "off" or not plan.setup_commands:
        return None
    offline = [
        t.id for t in tasks_left(plan) if not (sandbox.network if t.network is None else t.network)
    ]
    # Its own network = true covers the tasks that start before any lands: one task at least.
    named = [
        c.name
        for c in plan.setup_commands
        if c.required and (c.network is None or (c.network and len(offline) > 1))
    ]
    if not offline or not named:
        return None
    shown = listed(offline, 3)
    return (
        f"setup command {', '.join(repr(n) for n in named)} will run without the network in "
        f"tasks whose commands have none ({shown}), at the latest once a task's work has "
        "landed: if it installs from the network, those tasks fail at setup. Give them "
        "`network = true`, or install offline and set the command's `network = false` "
        '(docs/security.md, "Setup commands")'
    )


def tasks_left(plan: ExecutionPlan) -> list:
    """The tasks a resume may still run: none when every task completed."""
    return [t for t in plan.tasks if not t.children and t.status.state != "completed"]


def refuse_checked_out_session_branch(repo: git.Repo, session_id: str) -> None:
    """aca moves the session branch as tasks land; checked out in the user's checkout (as
    after "the work is on branch aca/<id>") or a worktree of theirs, that checkout's files
    would stay behind it, and show the tasks' work as staged deletions. Refused before the
    run starts (the merge refuses it too, should the branch be checked out mid-run)."""
    try:
        refuse_checked_out_branch(repo, session_id)
    except SessionBranchCheckedOut as exc:
        raise InputError(str(exc)) from None
