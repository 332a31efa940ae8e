"""What ``aca run --dry-run`` prints: the plan's tree and size (or its JSON summary), where a
``--repo`` run would work, and where ``--dump-plan`` wrote the plan."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from aca_flows.cli.options import RunOptions
from aca_flows.plan import ExecutionPlan
from aca_flows.plan.render import plan_size, render_tree

__all__ = ["show_dry_run"]


def show_dry_run(plan: ExecutionPlan, options: RunOptions) -> None:
    pending = [t for t in plan.leaves() if t.status.state == "pending"]
    if options.json:
        summary = {
            "dry_run": True,
            "plan": plan.name,
            "tasks": len(plan.leaves()),
            "groups": len(plan.tasks) - len(plan.leaves()),
            "pending": len(pending),
            "dumped_to": str(options.dump_plan) if options.dump_plan else None,
        }
        if options.repo:  # not cloned: where a run would clone it
            summary["working_area"] = str(options.workdir)
        print(json.dumps(summary))
        return
    print(render_tree(plan))
    print(f"\nDry run: {plan_size(plan)} ({len(pending)} pending); nothing was run.")
    if options.repo:
        print(_repo_line(options.repo, options.workdir))
    if options.dump_plan:
        print(
            f"Plan written to {options.dump_plan}; review or edit it, then run "
            f"`{_run_command(options)}`."
        )


def _run_command(options: RunOptions) -> str:
    """The command that runs the dumped plan as this dry run would have run it: the same
    workdir (or --repo) and every run option given (the plan holds the task file's own, and
    the context and system prompt given: an edit of them in the plan must not be undone):
    without them, the plan ran in the current folder with the default provider, and without
    the budget the plan was reviewed with."""
    from aca_flows._words import workdir_option
    from aca_flows.workspace.remote import public_url

    command = f"aca --execution-plan {shlex.quote(str(options.dump_plan))}"
    if options.repo:
        command += f" --repo {shlex.quote(public_url(options.repo))}"
    else:
        command += workdir_option(options.workdir)
    for flag, value in (
        ("--provider", options.provider),
        ("--model", options.model),
        ("--max-concurrent", options.max_concurrent),
        ("--config", options.config),
        # A float as it was given: 5, not 5.0.
        ("--budget-usd", None if options.budget_usd is None else f"{options.budget_usd:g}"),
        ("--record", options.record),
        ("--github-repo", options.github_repo),
    ):
        if value is not None:
            command += f" {flag} {shlex.quote(str(value))}"
    for flag, given in (
        ("--init-git", options.init_git),
        ("--require-approval", options.require_approval),
        ("--open-pr", options.open_pr),
    ):
        if given:
            command += f" {flag}"
    return command


def _repo_line(url: str, area: Path) -> str:
    """What a run would do with ``--repo`` (the URL shown without its credentials)."""
    from aca_flows.workspace.remote import public_url

    if (area / ".git").exists():
        return (
            f"--repo {public_url(url)}: a run fetches it into {area}, the checkout whose "
            "configuration this dry run read."
        )
    return (
        f"--repo {public_url(url)} was not cloned; a run clones it into {area} (and reads "
        "its aca.toml, which this dry run could not)."
    )
