"""What ``aca run`` and ``aca resume`` print when the flow has ended: the session's tasks, one
line of how the run ended (where the work is, and what continues it), and what became of the
pull request."""

from __future__ import annotations

import shlex

from aca_flows._words import exact_usd, one_line, resume_command, shown
from aca_flows.cli.options import RunOptions

__all__ = ["show_summary"]


def show_summary(summary: dict, options: RunOptions) -> None:
    from aca_flows.cli.sessions import show_command
    from aca_flows.flows.summary import branch_head

    workdir = options.workdir
    show_command(summary["session_id"], workdir=workdir, json_output=False)
    status = summary["status"]
    committed = any(task.get("commit") for task in summary.get("tasks", {}).values())
    where = "work is on" if committed else "nothing was committed to"
    where += f" branch {summary['branch']}"
    if committed and branch_head(workdir, summary["session_id"]) is None:
        where = f"its branch {summary['branch']} is gone (deleted or renamed while it ran)"
    line = f"Session {summary['session_id']} {status}; {where}"
    if summary.get("unpushed") and summary.get("taken_over"):  # the remote is the resume's
        line += f" (NOT pushed to {summary['remote']}: {summary['unpushed']}; kept in {workdir})."
    elif summary.get("unpushed"):
        line += (
            f" (NOT pushed to {summary['remote']}: {summary['unpushed']}; it is kept in "
            f"{workdir}, and `{_resume_of(summary, options)}` pushes it)."
        )
    elif summary.get("remote"):
        line += f", pushed to {summary['remote']}."
    else:
        line += "."
    if summary.get("no_change_ids"):
        ids = ", ".join(summary["no_change_ids"])
        line += f" Completed without a change (no change needed): {ids}."
    if summary.get("stopped_reason"):
        line += f" {'Why' if status == 'failed' else 'Stopped'}: {summary['stopped_reason']}."
        if go_on := _how_to_go_on(summary, options):
            line += f" {go_on}"
    print(shown(line))  # its reasons quote agents and servers
    pull_request = _pull_request_line(summary, options)
    if pull_request:
        print(shown(pull_request))


def _resume_of(summary: dict, options: RunOptions) -> str:
    """The resume of the run's session, as the reader runs it: with the run's remote (this
    run's ``--repo``, or the one the session pushed to before), if it has one."""
    remote = summary.get("remote") or options.repo
    return resume_command(summary["session_id"], options.workdir, remote)


def _how_to_go_on(summary: dict, options: RunOptions) -> str:
    """What continues a run that did not complete, as the user would run it: a resume that
    would stop or be refused the same way is not offered as the way on."""
    from aca_flows.errors import InputError
    from aca_flows.flows.run_inputs import changed_source_warning, refuse_redacted_work
    from aca_flows.session.reading import load_session

    workdir, session_id = options.workdir, summary["session_id"]
    if summary.get("taken_over"):  # a resume here would take it back from a live run
        return "The session goes on where it was resumed."
    if summary.get("stuck"):  # resuming runs the same plan, which stalls the same way
        return "The plan cannot progress: fix the dependencies named and run it anew."
    session = load_session(workdir, session_id)
    try:
        refuse_redacted_work(session.plan, session_id)
    except InputError as refused:
        return f"It cannot be resumed: {refused}"
    resume = _resume_of(summary, options)
    # A stop that names its fix names the resume after it (a refused key, a lost branch).
    said = f"`{resume}`" in summary["stopped_reason"]
    budget, spent = summary.get("budget_usd"), summary.get("cost_usd") or 0.0
    if said:
        go_on = ""
    elif summary["status"] == "stopped" and budget is not None and spent >= budget:
        go_on = f"`{resume} --budget-usd N` continues, with N above the ${exact_usd(spent)} spent"
        # Just above it, the resume pays for a call or two and stops again: the stopped task
        # starts over, and needs what a whole task costs; and the tasks a resume starts at
        # once share N: room for one was room for none when two started.
        completed = set(session.completed_task_ids)
        finished = [run.cost_usd for task_id, run in session.tasks.items() if task_id in completed]
        if task := max(finished, default=0.0):
            go_on += f": a finished task of this session cost up to ${task:.4f}, so N = "
            at_once = _started_at_once(session, options)
            if at_once == 1:
                go_on += f"{exact_usd(spent + task)} leaves room for about one more"
            else:
                go_on += (
                    f"{exact_usd(spent + at_once * task)} leaves room for the {at_once} tasks "
                    "the resume starts at once"
                )
        elif task := max((run.cost_usd for run in session.tasks.values()), default=0.0):
            # Only what stopped tasks had cost by the stop: a whole task costs more, unknown.
            go_on += (
                f": no task of this session has finished yet, and one had cost ${task:.4f} "
                "when the budget stopped it, so give N well above what a whole task costs you"
            )
        go_on += "."
    else:
        go_on = f"`{resume}` continues."
    if changed_source_warning(session):
        # The resume replays the plan as the session started: the file's edits are not in it.
        path = session.source.path
        # Where the resume works, the run works too: a remote's session takes its --repo
        # (--workdir alone would run in its working area, and push nothing).
        where = resume.removeprefix(f"aca resume {session_id}")
        run = f"aca run {shlex.quote(path)}{where}"
        go_on += (
            f" But {path} changed since the session started, and a resume runs the plan as it "
            f"was then: `{run}` runs it as it is now."
        )
    return go_on.strip()


def _started_at_once(session, options: RunOptions) -> int:
    """How many tasks a resume of ``session`` starts at once: those ready to start, up to
    the configuration's ``max_concurrent_tasks`` (a resume has no --max-concurrent)."""
    from aca_flows.config_loader import load_config
    from aca_flows.plan.dag import DagProgress

    limit = load_config(options.workdir, options.config).config.session.max_concurrent_tasks
    return max(1, min(limit, len(DagProgress(session.plan).ready())))


def _pull_request_line(summary: dict, options: RunOptions) -> str | None:
    """What became of the pull request the run was asked for (--open-pr), on one line; a
    failure with the command that delivers it once the cause is fixed."""
    if summary.get("pull_request_error"):
        why = one_line(summary["pull_request_error"]).rstrip(".")
        github = f" --github-repo {options.github_repo}" if options.github_repo else ""
        again = f"{_resume_of(summary, options)} --open-pr{github}"
        return f"Pull request NOT delivered: {why}. Once that is fixed, `{again}` delivers it."
    if summary.get("pull_request"):
        return f"Pull request: {summary['pull_request']}"
    return None
