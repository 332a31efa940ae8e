"""The ``aca`` command: thin typer commands that hand over to the layers below.

The original aca's flags (``aca --task-file tasks.md``, ``aca --execution-plan plan.json``,
``aca --list-checkpoints``) work beside the subcommands (``aca run``, ``aca resume``, ...).
Nothing here imports prefect: the engine is imported only when tasks really run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from aca_flows import __version__
from aca_flows.cli import approval as approval_cli
from aca_flows.cli import checkpoints as checkpoints_cli
from aca_flows.cli import config as config_cli
from aca_flows.cli import limits as limits_cli
from aca_flows.cli import plan as plan_cli
from aca_flows.cli import providers as providers_cli
from aca_flows.cli import server as server_cli
from aca_flows.cli import sessions as sessions_cli
from aca_flows.cli.options import (
    AppendSystemPrompt,
    BudgetUsd,
    ConfigFile,
    Context,
    DryRun,
    DumpPlan,
    ExistingWorkdir,
    ForceNaiveParser,
    GitHubRepoName,
    InitGit,
    JsonOutput,
    MaxConcurrent,
    ModelName,
    OpenPr,
    ProviderName,
    Record,
    Repo,
    RequireApproval,
    RunOptions,
    Strict,
    UseIntelligentParser,
    Workdir,
    existing_folder,
    refuse_github_repo_without_open_pr,
)


class CommandInterrupted(Exception):
    """A Ctrl-C that ended a command: ``main`` says so (with ``--json``, on stdout too)."""


class _Commands(typer.core.TyperGroup):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            # Left to typer, it ends the command with 130 and no word: silently with --json,
            # whose stdout a script reads.
            raise CommandInterrupted("interrupted") from exc


app = typer.Typer(
    name="aca",
    cls=_Commands,
    help=(
        "aca — Automatic Coding Agent. Runs a task file (Markdown or TOML) as a DAG of "
        "verified coding tasks on Prefect."
    ),
    no_args_is_help=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(plan_cli.app, name="plan", help="Show, parse (with an LLM) and describe plans.")
app.add_typer(config_cli.app, name="config", help="Show the effective configuration.")
app.add_typer(sessions_cli.app, name="sessions", help="List and inspect sessions.")
app.add_typer(checkpoints_cli.app, name="checkpoints", help="List and create checkpoints.")
app.add_typer(providers_cli.app, name="providers", help="Providers: credentials and a test call.")
app.add_typer(server_cli.app, name="server", help="A local Prefect server with its UI for runs.")
app.add_typer(
    limits_cli.app, name="limits", help="Provider limits on the Prefect server, for every worker."
)
app.command("approve")(approval_cli.approve_command)
app.command("reject", short_help="Reject the plan of a waiting run; no task runs.")(
    approval_cli.reject_command
)
app.command("answer", short_help="Answer a task that waits: --retry, --skip or --fail.")(
    approval_cli.answer_command
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"aca {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    task_file: Annotated[
        Path | None, typer.Option("--task-file", "-t", help="Markdown or TOML task file to run.")
    ] = None,
    execution_plan: Annotated[
        Path | None,
        typer.Option("--execution-plan", help="Run a plan written by --dump-plan (reviewed)."),
    ] = None,
    list_checkpoints: Annotated[
        bool, typer.Option("--list-checkpoints", help="List the checkpoints of the workdir.")
    ] = False,
    workdir: Workdir = Path("."),
    dry_run: DryRun = False,
    dump_plan: DumpPlan = None,
    use_intelligent_parser: UseIntelligentParser = False,
    force_naive_parser: ForceNaiveParser = False,
    strict: Strict = False,
    context: Context = None,
    append_system_prompt: AppendSystemPrompt = None,
    provider: ProviderName = None,
    model: ModelName = None,
    max_concurrent: MaxConcurrent = None,
    budget_usd: BudgetUsd = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
    init_git: InitGit = False,
    record: Record = None,
    require_approval: RequireApproval = False,
    open_pr: OpenPr = False,
    github_repo: GitHubRepoName = None,
    repo: Repo = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    if ctx.invoked_subcommand is not None:
        _refuse_misplaced_options(ctx)
        return
    if list_checkpoints:
        from aca_flows.cli.checkpoints import print_checkpoints

        _refuse_options_a_listing_ignores(ctx)
        print_checkpoints(existing_folder(workdir), all_sessions=True, as_json=json_output)
        raise typer.Exit(0)
    if task_file is None and execution_plan is None:
        if _options_given(ctx):  # `aca --dry-run`: a run was asked for, of nothing
            from aca_flows.errors import InputError

            raise InputError(
                "nothing to run: give a task file (`aca run FILE` or --task-file FILE) or a "
                "reviewed plan (--execution-plan FILE)."
            )
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    options = _run_options(locals())
    _run(options)


@app.command("run", short_help="Run a task file as a Prefect flow, or --dry-run it.")
def run_command(
    file: Annotated[Path, typer.Argument(help="Task file (.md, .toml) or execution plan (.json).")],
    workdir: Workdir = Path("."),
    dry_run: DryRun = False,
    dump_plan: DumpPlan = None,
    use_intelligent_parser: UseIntelligentParser = False,
    force_naive_parser: ForceNaiveParser = False,
    strict: Strict = False,
    context: Context = None,
    append_system_prompt: AppendSystemPrompt = None,
    provider: ProviderName = None,
    model: ModelName = None,
    max_concurrent: MaxConcurrent = None,
    budget_usd: BudgetUsd = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
    init_git: InitGit = False,
    record: Record = None,
    require_approval: RequireApproval = False,
    open_pr: OpenPr = False,
    github_repo: GitHubRepoName = None,
    repo: Repo = None,
) -> None:
    """Run a task file as a Prefect flow (or review it with --dry-run)."""
    options = _run_options(locals(), task_file=file)
    _run(options)


@app.command("resume", short_help="Continue a session; finished tasks are never redone.")
def resume_command(
    target: Annotated[str | None, typer.Argument(help="A checkpoint id or a session id.")] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Resume the newest unfinished session.")
    ] = False,
    workdir: Workdir = Path("."),
    budget_usd: BudgetUsd = None,
    config: ConfigFile = None,
    json_output: JsonOutput = False,
    repo: Repo = None,
    open_pr: OpenPr = False,
    github_repo: GitHubRepoName = None,
    require_approval: RequireApproval = False,
) -> None:
    """Continue a session from a checkpoint or session id; finished tasks are never redone.
    With --open-pr, a completed session's pull request is delivered (again); with
    --require-approval, what is left to run waits for approval first."""
    given = dict(locals())
    from aca_flows._startup import signals_remembered

    with signals_remembered():  # a Ctrl-C from now on is never lost (_startup.py)
        code = _resume(**given)
    raise typer.Exit(code)


def not_on_the_remote(repo: str, target: str | None) -> Exception:
    """A resume of ``--repo URL`` whose session neither the remote nor this machine holds:
    the clone says nothing, the remote and the machine that ran it do."""
    from aca_flows.errors import InputError
    from aca_flows.workspace.remote import public_url, session_record_ref

    url = public_url(repo)
    return InputError(
        f"{url} holds no record of session {target!r} ({session_record_ref(target or '')}), "
        f"and this machine has none: check the URL and the id (`git ls-remote {url} "
        "'refs/aca/sessions/*'` lists the sessions it holds). A session whose pushes all "
        "failed is only on the machine that ran it: resume it there."
    )


def nothing_to_resume_here(repo: str) -> Exception:
    """``aca resume --latest --repo URL`` with no session of URL to resume on this machine:
    --latest looks only at the sessions run here, not at the remote's."""
    from aca_flows.errors import InputError
    from aca_flows.workspace.remote import public_url

    url = public_url(repo)
    return InputError(
        f"no unfinished session of {url} on this machine: --latest looks only at the sessions "
        f"run here. `aca resume ID --repo {url}` resumes one the remote holds (`git ls-remote "
        f"{url} 'refs/aca/sessions/*'` lists them), or start new work with `aca run`."
    )


def _resume(
    *,
    target,
    latest,
    workdir,
    budget_usd,
    config,
    json_output,
    repo,
    open_pr,
    github_repo,
    require_approval,
) -> int:
    from aca_flows.cli.preflight import require_writable_workdir
    from aca_flows.cli.run import run_session
    from aca_flows.cli.working_area import checkout_remote, clone_removed_if_refused
    from aca_flows.session.checkpoints import resolve_resume_target
    from aca_flows.session.errors import NothingToResumeError, UnknownSessionError

    refuse_github_repo_without_open_pr(github_repo, open_pr)  # before a clone or a fetch
    with clone_removed_if_refused(repo, workdir):
        if repo:  # the session's branch and record come from the remote (docs/sessions.md)
            workdir = checkout_remote(repo, workdir, session_id=target)
        workdir = existing_folder(workdir).resolve()
        try:
            resolved = resolve_resume_target(
                workdir, target, latest=latest, pushes=bool(repo), opens_pr=open_pr
            )
        except UnknownSessionError as exc:
            if not repo or exc.ambiguous:
                raise
            raise not_on_the_remote(repo, target) from None
        except NothingToResumeError:
            if not repo:
                raise
            raise nothing_to_resume_here(repo) from None
        require_writable_workdir(workdir)
    options = RunOptions(
        workdir=workdir,
        config=config,
        json=json_output,
        budget_usd=budget_usd,
        repo=repo,
        open_pr=open_pr,
        github_repo=github_repo,
        require_approval=require_approval,
    )
    return run_session(options, session_id=resolved.session_id)


@app.command("usage", short_help="Tokens and cost of the workdir's sessions, by model.")
def usage_command(workdir: ExistingWorkdir = Path("."), json_output: JsonOutput = False) -> None:
    """Tokens and cost of every session of the workdir, by provider and model."""
    import json

    from aca_flows.cli.sessions import console, no_sessions, read_sessions, usage_table
    from aca_flows.session.usage import usage_by_provider_model

    workdir = workdir.resolve()
    scan = read_sessions(workdir)  # their spend is left out: said
    entries = usage_by_provider_model(scan.sessions)
    if json_output:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    if not scan.sessions:
        no_sessions(workdir, scan)
        return
    console().print(usage_table(entries, title=f"Usage of the sessions in {workdir}"))


def _options_given(ctx: typer.Context) -> bool:
    # By name: typer carries its own copy of click, with its own ParameterSource.
    sources = (ctx.get_parameter_source(name) for name in ctx.params)
    return any(source is not None and source.name != "DEFAULT" for source in sources)


def _given_on_the_command_line(ctx: typer.Context) -> list[str]:
    """The options of ``ctx``'s command the user typed, each by its long name."""
    return [
        max(param.opts, key=len)
        for param in ctx.command.params
        if param.name in ctx.params
        and getattr(ctx.get_parameter_source(param.name), "name", "") == "COMMANDLINE"
    ]


def _refuse_options_a_listing_ignores(ctx: typer.Context) -> None:
    """``aca --list-checkpoints -t tasks.md`` listed checkpoints and ran nothing, without a
    word on the task file it was given."""
    from aca_flows.errors import InputError

    kept = ("--list-checkpoints", "--workdir", "--json")
    if ignored := [option for option in _given_on_the_command_line(ctx) if option not in kept]:
        raise InputError(
            f"--list-checkpoints lists checkpoints and runs nothing, so {', '.join(ignored)} "
            "would do nothing; list with `aca --list-checkpoints` (--workdir, --json), run "
            "without it."
        )


def _refuse_misplaced_options(ctx: typer.Context) -> None:
    """``aca --workdir x sessions list`` would silently ignore --workdir: say where it goes,
    or that the subcommand has no such option (``aca --dry-run usage``), or that ``aca run``
    takes the file itself (``aca -t tasks.md run``)."""
    from aca_flows.errors import InputError

    given = _given_on_the_command_line(ctx)
    if not given:
        return
    sub = ctx.invoked_subcommand
    message = f"{', '.join(given)} given before the subcommand '{sub}'"
    if sub == "run" and given[0] in ("--task-file", "--execution-plan"):
        raise InputError(
            f"{message}; `aca run` takes the file itself: `aca run FILE`, "
            f"or `aca {given[0]} FILE` without the subcommand."
        )
    command = ctx.command.get_command(ctx, sub) if sub else None
    # The commands that take it: of a group (`aca plan`), those of its commands that do; the
    # group's callback is not told which one follows (`plan show` takes no --dump-plan).
    takers = [
        f"aca {sub} {name}".strip()
        for name, leaf in (getattr(command, "commands", None) or {"": command}).items()
        if given[0] in _options_of(leaf)
    ]
    if takers:
        after = " or ".join(f"`{taker} ... {given[0]} ...`" for taker in takers)
        raise InputError(f"{message}; put it after the command that takes it: {after}.")
    raise InputError(
        f"{message}, which takes no {given[0]}; see `aca {sub} --help` for its options."
    )


def _options_of(command: Any) -> set[str]:
    """Every option name of a command and of its subcommands (``aca sessions list``)."""
    names = {opt for param in getattr(command, "params", []) for opt in param.opts}
    for child in getattr(command, "commands", {}).values():
        names |= _options_of(child)
    return names


def _run_options(params: dict[str, Any], **fields: Any) -> RunOptions:
    """``RunOptions`` from a command's parameters (its ``locals()``), plus ``fields``."""
    names = {f.name for f in dataclasses.fields(RunOptions)}
    values = {"json" if k == "json_output" else k: v for k, v in params.items()}
    values["context"] = values.get("context") or []
    values.update(fields)
    return RunOptions(**{k: v for k, v in values.items() if k in names})


def _run(options: RunOptions) -> None:
    from aca_flows.cli.run import execute

    raise typer.Exit(execute(options))
