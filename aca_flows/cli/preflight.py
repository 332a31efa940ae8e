"""What a run is refused for before anything is made: options that contradict each other
or do nothing, a workdir the flow would refuse, a provider that cannot work, a sandbox that
cannot start, a pull request with nowhere to go. Each is bad input (exit 2), named before
Prefect starts, and leaves nothing behind."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from aca_flows.cli.options import (
    RunOptions,
    refuse_options_that_do_nothing,
    warn_of_options_a_dry_run_ignores,
)
from aca_flows.cli.plan_files import check_dump_target, check_record_target
from aca_flows.errors import InputError
from aca_flows.plan import ExecutionPlan
from aca_flows.settings import AcaConfig

__all__ = [
    "check_options",
    "check_provider_names",
    "check_task_providers",
    "check_pull_request_target",
    "preflight",
    "refuse_what_asks_no_one",
    "require_providers_here",
    "require_the_runs_workdir",
    "require_writable_home",
    "require_writable_workdir",
]


def check_options(options: RunOptions) -> None:
    """Refuse options that contradict each other or do nothing, before any work is done."""
    if options.task_file and options.execution_plan:
        raise InputError(
            "give either --task-file or --execution-plan, not both: "
            "the execution plan is the reviewed form of a task file."
        )
    _in_the_workdir_not_here(options.task_file or options.execution_plan, options)
    if options.dump_plan and options.task_file and _same_path(options.dump_plan, options.task_file):
        raise InputError(
            f"--dump-plan {options.dump_plan} is the task file itself: the plan would replace "
            "what you wrote. Name another file, e.g. --dump-plan plan.json."
        )
    check_dump_target(options.dump_plan)
    check_record_target(options.record, _the_runs_files(options))
    if options.use_intelligent_parser and options.force_naive_parser:
        raise InputError("--use-intelligent-parser and --force-naive-parser contradict; pick one.")
    refuse_options_that_do_nothing(options)
    warn_of_options_a_dry_run_ignores(options)
    if options.repo:  # named before a whole clone of the remote is waited for
        from aca_flows.plan.source import read_text_file

        if options.task_file:
            read_text_file(options.task_file)
        elif options.execution_plan:
            read_text_file(options.execution_plan, "execution plan")
        if options.provider:
            check_provider_names({options.provider})


def _in_the_workdir_not_here(source: Path | None, options: RunOptions) -> None:
    """A relative path is read from the current folder: a file found only in --workdir
    was "does not exist; check the path" while the user saw it there."""
    if not source or source.is_absolute() or source.exists() or options.repo:
        return
    beside = options.workdir / source
    if beside.is_file():
        what = "task file" if options.task_file else "execution plan"
        raise InputError(
            f"{what} {source} is not in the current folder {Path.cwd()}, where a relative "
            f"path is read from (not from --workdir); give {beside}."
        )


def _the_runs_files(options: RunOptions) -> dict[str, Path | None]:
    """The files the run reads or writes besides its cassette, by flag."""
    return {
        "task file": options.task_file,
        "execution plan": options.execution_plan,
        "--config file": options.config,
        "--dump-plan file": options.dump_plan,
    }


def _same_path(a: Path, b: Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def refuse_what_asks_no_one(names: set[str], config: AcaConfig, plan: ExecutionPlan) -> None:
    """The run's refusals a dry run can make without a provider's server: a replay's
    cassette, a budget on models aca has no price for. (Keys, logins and servers it leaves
    to the run: a dry run may be made where they are not.)"""
    from aca_flows.flows.unpriced import refuse_a_budget_without_prices

    if "replay" in names:
        require_providers_here({"replay"}, config)
    refuse_a_budget_without_prices(plan, config)


def check_provider_names(names: set[str]) -> None:
    from aca_flows.providers import check_provider_name

    for name in sorted(names):
        check_provider_name(name)


def check_task_providers(plan: ExecutionPlan, source: Path | str) -> None:
    """Refuse a plan whose tasks name a provider aca does not know, each with its tasks and
    the file: in a plan of hundreds, "unknown provider 'gpt'" left the user searching."""
    from aca_flows.providers import PROVIDER_NAMES

    unknown: dict[str, list[str]] = {}
    for task in plan.tasks:
        if task.provider and task.provider not in PROVIDER_NAMES:
            unknown.setdefault(task.provider, []).append(task.id)
    if not unknown:
        return
    lines = [
        f"  - provider '{name}' of task(s) {', '.join(ids)} is none aca knows"
        for name, ids in unknown.items()
    ]
    raise InputError(
        f"{source}: the plan names {len(unknown)} unknown provider(s):\n"
        + "\n".join(lines)
        + f"\nChoose one of {', '.join(PROVIDER_NAMES)} for each, or leave provider out for "
        "the run's."
    )


def preflight(
    options: RunOptions, names: set[str], config: AcaConfig, models: dict | None = None
) -> None:
    """Refuse what would fail inside the flow, before Prefect starts: a workdir that is not
    a repository, a provider that cannot work (no key, a rejected key, no login, no server
    or a model it lacks (``models``: by provider, ``ExecutionPlan.models_by_provider``), no
    cassette: ``providers.require_providers``), a sandbox that cannot start (warned about
    when switched off)."""
    from aca_flows.sandbox import OFF_WARNING, check_sandbox
    from aca_flows.workspace import open_repository

    require_the_runs_workdir(options)  # a missing repository is named first
    require_writable_home()
    # Every refusal before --init-git creates anything: a refused run leaves nothing behind.
    require_providers_here(names, config, models)
    check_sandbox(config.sandbox, claude_code="claude-code" in names)
    if options.open_pr:
        check_pull_request_target(options, config)
    if options.init_git:
        from aca_flows.flows.server import require_given_server

        require_given_server()
        options.workdir.mkdir(parents=True, exist_ok=True)
        _say_secrets_left_out(open_repository(options.workdir, init_git=True))
    if config.sandbox.mode == "off":
        print(f"warning: {OFF_WARNING}", file=sys.stderr)


def require_the_runs_workdir(options: RunOptions) -> None:
    """Refuse a workdir the run's flow would refuse (read-only, not a repository's top level,
    no commit), writing nothing. A --repo URL's working area is the run's to clone."""
    from aca_flows.workspace.repository import require_repository

    if options.repo and options.dry_run:
        return
    if options.workdir.is_dir():
        require_writable_workdir(options.workdir)  # the run writes .aca/ and .git/ there
    require_repository(options.workdir, init_git=options.init_git)


def _say_secrets_left_out(repo) -> None:
    """--init-git leaves secrets (``.env``, keys) out of the first commit: say which."""
    from aca_flows.workspace.repository import secrets_left_out

    left = secrets_left_out(repo)
    if left:
        shown = ", ".join(left[:10]) + (f" and {len(left) - 10} more" if len(left) > 10 else "")
        print(
            f"aca: --init-git left {shown} out of the first commit (secrets the agents must not "
            f"see; listed in {Path(repo.common_dir) / 'info' / 'exclude'}). Commit a file "
            "yourself (git add -f) if the tasks need it.",
            file=sys.stderr,
        )


def require_writable_home(*, dry_run: bool = False) -> None:
    """Refuse a home aca cannot keep its state in (``~/.aca``: rate limits, plan seals, its
    server): a read-only HOME failed each task after its paid call, or in a traceback. A
    dry run writes nothing: it asks the file system instead of writing a file there."""
    home = Path.home() / ".aca"
    try:
        if dry_run:
            existing = next(p for p in (home, *home.parents) if p.exists())
            if not existing.is_dir() or not os.access(existing, os.W_OK):
                raise NotADirectoryError(20, "not a writable folder")
        else:
            home.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=home).close()
    except OSError as exc:
        raise InputError(
            f"aca keeps its state in {home}, which cannot be written ({exc.strerror}): set "
            "HOME to a writable folder."
        ) from None


def require_writable_workdir(workdir: Path) -> None:
    """Refuse a workdir aca cannot write its session (``.aca/``) and branch (``.git/``) to:
    found inside the run, it was a traceback and exit 1."""
    from aca_flows.session.layout import linked_aca_folder
    from aca_flows.workspace.repository import checkout_tracking_aca_files

    # The run's own refusals, before a dry run says yes.
    if problem := linked_aca_folder(workdir) or checkout_tracking_aca_files(workdir):
        raise InputError(problem)
    aca = workdir / ".aca"
    for folder in (aca, aca / "sessions", aca / "worktrees"):
        if folder.exists() and not folder.is_dir():
            raise InputError(
                f"{folder} is a file, but aca keeps its sessions in a folder of that name; "
                "move the file away and run again."
            )
    for folder in (workdir, aca, workdir / ".git"):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise InputError(
                f"{folder} is read-only; aca writes its session (.aca/) and a branch (.git/) in "
                "the workdir. Make it writable, or give --workdir a writable clone."
            )


def check_pull_request_target(options: RunOptions, config: AcaConfig) -> None:
    """--open-pr without a token, or without a repository to open it in, is bad input."""
    import os

    from aca_flows.delivery import parse_github_repo
    from aca_flows.workspace.repository import origin_url

    if not config.github.token_secret and not os.environ.get("GITHUB_TOKEN", "").strip():
        raise InputError(
            "--open-pr needs a GitHub token: set GITHUB_TOKEN, or name a Prefect Secret block "
            "holding it in [github] token_secret."
        )
    parse_github_repo(origin_url(options.workdir), options.github_repo)


def require_providers_here(names: set[str], config: AcaConfig, models: dict | None = None) -> None:
    from aca_flows.providers import require_providers

    # A key in a Prefect Secret block can only be read once Prefect is up: the flow checks
    # those providers itself, before any task starts.
    names = {n for n in names if not config.provider(n).api_key_secret}
    require_providers(names, config, models=models, another="--provider picks another")
