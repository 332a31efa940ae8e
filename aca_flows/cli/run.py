"""What ``aca run`` and ``aca --task-file`` do: load the plan, show or dump it, then run it."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from aca_flows._words import resume_command
from aca_flows.cli.dry_run import show_dry_run
from aca_flows.cli.options import RunOptions
from aca_flows.cli.plan_files import dump_plan
from aca_flows.cli.preflight import (
    check_options,
    check_provider_names,
    check_pull_request_target,
    check_task_providers,
    preflight,
    refuse_what_asks_no_one,
    require_providers_here,
    require_the_runs_workdir,
    require_writable_home,
)
from aca_flows.cli.run_summary import show_summary
from aca_flows.cli.working_area import checkout_remote, clone_removed_if_refused, working_area_of
from aca_flows.config_loader import load_config, run_overrides
from aca_flows.errors import AcaError, InputError
from aca_flows.plan import ExecutionPlan, load_execution_plan, load_task_file
from aca_flows.plan.io import MARKDOWN_SUFFIXES
from aca_flows.plan.vacuous_check import unchecked_warning
from aca_flows.settings import AcaConfig


def prepare_plan(options: RunOptions) -> ExecutionPlan:
    """The plan the user asked for (options already passed ``check_options``), with
    command-line context applied, fully validated."""
    if options.execution_plan:
        plan = load_execution_plan(options.execution_plan)
    elif options.task_file and _wants_intelligent_parse(options, options.task_file):
        # The model already got the context and instructions; the plan carries them.
        return parse_intelligently(options.task_file, options)
    elif options.task_file:
        plan = load_task_file(options.task_file)
        _warn_of_prose_dependencies(options.task_file, plan)
    else:
        raise InputError(
            "no work given: pass a task file (aca run tasks.md, or aca --task-file tasks.md) "
            "or a reviewed plan (aca --execution-plan plan.json)."
        )
    return plan.with_run_context(options.context, options.append_system_prompt)


def _warn_of_prose_dependencies(task_file: Path, plan: ExecutionPlan) -> None:
    """The original aca's files state dependencies in prose; run as read, those tasks would
    run at once without a word (docs/task-files.md, "Files of the original aca")."""
    from aca_flows.plan.prose_dependencies import prose_dependencies_warning

    if warning := prose_dependencies_warning(plan):
        print(f"warning: {task_file}: {warning}", file=sys.stderr)


def _wants_intelligent_parse(options: RunOptions, task_file: Path) -> bool:
    """The LLM reads Markdown only: TOML task files and plans are structured already."""
    return options.use_intelligent_parser and task_file.suffix.lower() in MARKDOWN_SUFFIXES


def parse_intelligently(task_file: Path, options: RunOptions) -> ExecutionPlan:
    """``task_file`` parsed by the configured provider (cached in ``~/.aca/parse_cache``); lost
    source items are warned about on stderr, or refused with ``options.strict``."""
    from aca_flows.plan.intelligent import parse_cache_dir, parse_task_file
    from aca_flows.session.redact import redact

    workdir = options.workdir.resolve()
    config = load_config(workdir, options.config, run_overrides(options)).config
    parse = parse_task_file(
        task_file,
        config,
        cache_dir=parse_cache_dir(),
        environ=secret_block_environ(config.session.provider, config),
        scrub=redact,
        on_retry=_say_parse_retry,
        context=options.context,
        append_system_prompt=options.append_system_prompt,
        strict=options.strict,
    )
    if parse.lost:
        print(f"warning: {task_file}: {parse.lost_warning()}", file=sys.stderr)
    return parse.plan


def secret_block_environ(name: str, config: AcaConfig):
    """The environment to build provider ``name`` from when its key is in a Prefect Secret
    block (``api_key_secret``), else ``None``; Prefect is imported only then."""
    if not config.provider(name).api_key_secret:
        return None
    from aca_flows.flows.secret_keys import provider_environ

    return provider_environ(name, config)


def _say_parse_retry(seconds: float, error: Exception, retry_number: int, retries: int) -> None:
    # The call retries' own callback (``providers.retry``): it was called with one argument
    # more than it took, and a parse that met a 529 ended in a TypeError.
    from aca_flows.providers.retry import describe_retry

    said = describe_retry(error, seconds, retry_number, retries, "the parse's call")
    print(f"warning: {said}", file=sys.stderr)


def execute(options: RunOptions) -> int:
    """Run (or dry-run) what the options ask for; return the process exit code."""
    from aca_flows._startup import collect_as_usual, collect_less, signals_remembered

    collect_less()  # until the run's SDKs are imported (flows/run_setup.py), or the end
    try:
        with signals_remembered():  # a Ctrl-C from now on is never lost (_startup.py)
            return _execute(options)
    except BaseException as exc:
        # run_session makes the session
        return said_interrupted(exc, lambda: NOT_STARTED, as_json=options.json)
    finally:
        collect_as_usual()


def _execute(options: RunOptions) -> int:
    check_options(options)  # before a clone or a provider is asked: their errors would hide it
    with clone_removed_if_refused(options.repo, options.workdir):
        if (refused_or_dry := _prepare(options)) is not None:
            return refused_or_dry
    _say_an_unfinished_session_of_the_file(options)
    # (With --repo, a given id means "fetch this session first": the flow makes it.)
    from aca_flows.session.store import new_session_id

    return run_session(options, session_id=None if options.repo else new_session_id())


def _say_an_unfinished_session_of_the_file(options: RunOptions) -> None:
    """``aca run FILE`` again after a crash started over without a word, its paid work in the
    interrupted session of the same file left unused: the newest session of the file, if it
    is unfinished, is named with the resume that continues it."""
    from aca_flows.session.layout import AcaDir
    from aca_flows.session.reading import display_status, load_session
    from aca_flows.session.record import describe_counts

    source = options.task_file or options.execution_plan
    folder = AcaDir(options.workdir).sessions_dir
    if source is None or not folder.is_dir():
        return
    path = str(source.expanduser().resolve())
    for session_dir in sorted(folder.iterdir(), reverse=True)[:_SESSIONS_LOOKED_AT]:
        try:  # its source from the JSON alone: a 500-task record takes 15 ms to load whole
            record = json.loads((session_dir / "meta" / "session.json").read_bytes())
            if (record.get("source") or {}).get("path") != path:
                continue
            session = load_session(options.workdir, session_dir.name)
        except Exception:  # damaged, or being made: not this one
            continue
        status = display_status(session, options.workdir)
        if status in ("interrupted", "stopped", "failed"):
            print(
                f"aca: note: session {session.id} of {source} is {status} "
                f"({describe_counts(session.task_counts)}); "
                f"`{resume_command(session.id, options.workdir, options.repo)}` continues it. "
                "This run starts a new session.",
                file=sys.stderr,
            )
        return  # the file's newest session decides


# The newest sessions looked at for one of the same file: each is a read at every run's start.
_SESSIONS_LOOKED_AT = 5


def _prepare(options: RunOptions) -> int | None:
    """Everything before the run: the clone, the configuration, the plan, the checks. The
    exit code of a dry run, or None for the run to start."""
    # A dry run that parses clones as a run: it parses with the clone's configuration (its
    # provider and model), as the run will, which then finds the parse in the cache.
    parses = bool(options.task_file and _wants_intelligent_parse(options, options.task_file))
    if options.repo and options.dry_run and not parses:
        options.workdir = working_area_of(options.repo, options.workdir)
    elif options.repo:
        options.workdir = checkout_remote(options.repo, options.workdir)
    options.workdir = options.workdir.resolve()
    loaded = load_config(options.workdir, options.config, run_overrides(options))
    for line in loaded.ignored if options.dry_run else ():  # a run's flow says it in its log
        print(f"warning: {line}", file=sys.stderr)
    config = loaded.config
    plan = _plan_unless_the_flow_parses(options, config)
    if plan is not None and (unchecked := unchecked_warning(plan)):
        print(f"warning: {unchecked}", file=sys.stderr)
    default = config.session.provider
    names = {default} if plan is None else plan.provider_names(default)
    if plan is not None:  # a dry run too: it must not pass a plan the run refuses
        check_task_providers(plan, options.task_file or options.execution_plan)
    check_provider_names(names)
    if plan is not None and options.dry_run:
        require_the_runs_workdir(options)  # a dry run passes no workdir the run refuses
        require_writable_home(dry_run=True)
        refuse_what_asks_no_one(names, config, plan)
        _dump_if_asked(plan, options)
        show_dry_run(plan, options)
        return 0
    models = None if plan is None else plan.models_by_provider(default)
    preflight(options, names, config, models)
    _dump_if_asked(plan, options)  # only now: a refused run leaves no file behind
    # The id is made next, not in the flow: a Ctrl-C while Prefect starts can name the session.
    from aca_flows._startup import stop_if_signalled

    stop_if_signalled()  # a Ctrl-C swallowed on its way (a finalizer's): nothing is made
    return None


def _dump_if_asked(plan: ExecutionPlan | None, options: RunOptions) -> None:
    if plan is not None and options.dump_plan:
        dump_plan(plan, options.dump_plan)


def _plan_unless_the_flow_parses(options: RunOptions, config: AcaConfig) -> ExecutionPlan | None:
    """The plan to run, or ``None`` when the flow parses the task file with the LLM."""
    intelligent = bool(options.task_file and _wants_intelligent_parse(options, options.task_file))
    if intelligent:
        from aca_flows.plan.source import read_text_file

        read_text_file(options.task_file)  # a missing or unusable file is named first
        # The parser calls the provider: it must be able to work before anything is spent.
        require_providers_here({config.session.provider}, config)
    if intelligent and not (options.dry_run or options.dump_plan or options.strict):
        # The flow parses, in its `parse-task-file` task run (shown, cached, billed there);
        # the plan it makes uses the configured provider only. (A dump, a dry run or --strict
        # needs the plan here; the flow then finds the parse in the parser's cache.)
        return None
    return prepare_plan(options)


def run_session(options: RunOptions, session_id: str | None = None) -> int:
    """Run the flow (``session_id`` resumed, or a new session: with that id, if given) and
    report how it ended; everything the run prints is redacted."""
    from aca_flows._startup import signals_remembered

    with redacted_terminal():
        try:
            with signals_remembered():
                return _run_session(options, session_id)
        except BaseException as exc:
            return said_interrupted(
                exc,
                lambda: interrupted_line(options.workdir, session_id, options.repo),
                as_json=options.json,
            )


NOT_STARTED = "interrupted before the run started: no session was created, no task ran."


def said_interrupted(
    exc: BaseException, explain: Callable[[], str], *, as_json: bool = False
) -> int:
    """A Ctrl-C (or SIGTERM) that came before the flow took over the signals, or after it
    ended, said in one line on stderr (``explain()``; with ``as_json`` on stdout too, as
    ``--json`` says an error), and its exit code (130); ``exc`` is re-raised if it is
    anything else. (Left to typer, a ``KeyboardInterrupt`` ends the command with 130 and not
    a word.)"""
    from aca_flows.cli import interrupt_inside, print_json_error

    if not interrupt_inside(exc):
        raise exc
    said = explain()
    print(f"aca: {said}", file=sys.stderr)
    if as_json:
        print_json_error(said, 130)
    return 130


def interrupted_line(workdir: Path, session_id: str | None, repo: str | None = None) -> str:
    """What an interrupted run left behind: ``session_id`` is the run's session, if known
    (``repo``: the run's ``--repo``)."""
    from aca_flows.session.layout import AcaDir
    from aca_flows.session.reading import load_session

    if session_id is None:
        return (
            f"interrupted; `aca sessions list --workdir {workdir}` shows whether the run "
            "made a session to resume."
        )
    if not (AcaDir(workdir).session(session_id).root / "meta").is_dir():
        return NOT_STARTED
    with contextlib.suppress(AcaError):  # a record that cannot be read: resume says why
        if load_session(workdir, session_id).status == "completed":
            return f"interrupted after session {session_id} completed."
    resume = resume_command(session_id, workdir, repo)
    return f"interrupted before session {session_id} finished: `{resume}` continues."


def _run_session(options: RunOptions, session_id: str | None) -> int:
    with _held_for_the_run(options.workdir, session_id, options.repo):
        resumed = _refuse_a_resume_the_flow_would_refuse(options, session_id)
        if resumed is not None and _nothing_left_to_do(resumed, options):
            return _say_completed_already(resumed, options)
        return _run_held_session(options, session_id)


def _nothing_left_to_do(session, options: RunOptions) -> bool:
    """A resume of a completed session with nothing to deliver (no --repo, no --open-pr, no
    remote of its own) would run a flow whose every task is cached: seconds for nothing, a
    temporary server's ten on a machine without `aca server start`."""
    from aca_flows.flows.run_inputs import tasks_left

    delivers = options.repo or options.open_pr or session.remote
    return session.status == "completed" and not delivers and not tasks_left(session.plan)


def _say_completed_already(session, options: RunOptions) -> int:
    from aca_flows.flows.summary import session_summary

    summary = session_summary(session, options.workdir, "completed").model_dump(mode="json")
    print(
        f"aca: session {session.id} completed in an earlier run: nothing to resume.",
        file=sys.stderr,
    )
    if options.json:
        print(json.dumps(summary))
    else:
        show_summary(summary, options)
    return EXIT_CODES["completed"]


def _refuse_a_resume_the_flow_would_refuse(options: RunOptions, session_id: str | None):
    """A resume whose budget (given, or the session's own, kept) is spent, whose session
    branch lost landed work or is checked out where aca cannot move it, or whose --open-pr
    lacks a token or a repository, is refused here: in the flow it was refused only once
    Prefect had started (seconds), leaving a Failed flow run in the UI. (The flow refuses them
    too, for a run started without the CLI.) Returns the resumed session's record, or None
    for a new session."""
    from aca_flows.flows.run_inputs import (
        refuse_a_spent_budget,
        refuse_checked_out_session_branch,
        refuse_lost_work,
        tasks_left,
    )
    from aca_flows.session.layout import AcaDir
    from aca_flows.session.reading import load_session
    from aca_flows.workspace import open_repository

    if (
        session_id is None
        or not (AcaDir(options.workdir).session(session_id).root / "meta").is_dir()
    ):
        return None  # a new session
    session = load_session(options.workdir, session_id)
    refuse_a_spent_budget(session, options.budget_usd, options.workdir, options.repo)
    if options.config or options.open_pr:  # a bad --config: refused as `aca run` refuses it
        config = load_config(options.workdir, options.config, run_overrides(options)).config
        if options.open_pr:  # refused in the flow, it ended a completed session "failed"
            check_pull_request_target(options, config)
    repo = open_repository(options.workdir)
    refuse_lost_work(repo, session)
    if tasks_left(session.plan):  # a finished session's branch does not move
        refuse_checked_out_session_branch(repo, session_id)
    return session


def _run_held_session(options: RunOptions, session_id: str | None) -> int:
    from contextlib import nullcontext

    from aca_flows._startup import signals_remembered, stop_if_signalled
    from aca_flows.flows import run_flow
    from aca_flows.flows.aca_run import interrupt_on_signals

    live = sys.stdout.isatty() and not options.json
    view = nullcontext()
    if live:
        from rich.console import Console

        from aca_flows.cli.live import LiveView

        view = LiveView(options.workdir, session_id=session_id, console=Console())
    # SIGINT/SIGTERM: the flow stops starting tasks, lets running ones finish within
    # [session] interrupt_grace_seconds, checkpoints and reports "interrupted" (exit 130).
    # One that came before (or comes before the flow's handlers are in) ends the command, or
    # is handed to the flow: signals_remembered.
    with view, signals_remembered(), interrupt_on_signals():
        stop_if_signalled()
        outcome = _outcome_of(run_flow, options, session_id, quiet_console=live)
    if outcome.summary is None:
        error = outcome.error
        if isinstance(error, AcaError):
            raise error
        raise RunCrashed(f"the run stopped before finishing: {error}")
    summary = outcome.summary
    if options.json:
        print(json.dumps(summary))
    else:
        show_summary(summary, options)
    if summary.get("not_delivered"):
        return NOT_DELIVERED
    return EXIT_CODES[summary["status"]]


def _outcome_of(run_flow, options: RunOptions, session_id: str | None, quiet_console: bool):
    """How the run ended. A server lost after the session ended takes only the flow run's
    final state with it: the session's end is the outcome, and a note says what was lost."""
    from aca_flows.flows import FlowOutcome
    from aca_flows.flows.lost_server import ServerLost

    try:
        return _run_flow(run_flow, options, session_id, quiet_console)
    except ServerLost as lost:
        if lost.summary is None:
            raise
        print(f"aca: note: {lost}", file=sys.stderr)
        return FlowOutcome("Unrecorded", lost.summary.model_dump(mode="json"), None)


def _run_flow(run_flow, options: RunOptions, session_id: str | None, quiet_console: bool):
    return run_flow(
        quiet_console=quiet_console,
        # prepare_plan warned of the task file's prose dependencies; the flow need not.
        prose_warning_said=options.task_file is not None,
        task_file=str(options.task_file.resolve()) if options.task_file else None,
        execution_plan=str(options.execution_plan.resolve()) if options.execution_plan else None,
        workdir=str(options.workdir),
        provider=options.provider,
        model=options.model,
        max_concurrent=options.max_concurrent,
        budget_usd=options.budget_usd,
        session_id=session_id,
        context=options.context,
        append_system_prompt=options.append_system_prompt,
        # The flow parses (a --dump-plan's parse left its answer in the parser's cache).
        use_intelligent_parser=bool(
            options.task_file and _wants_intelligent_parse(options, options.task_file)
        ),
        init_git=options.init_git,
        config_file=str(options.config.resolve()) if options.config else None,
        record=str(options.record.resolve()) if options.record else None,
        require_approval=options.require_approval,
        open_pr=options.open_pr,
        github_repo=options.github_repo,
        repo=options.repo,
    )


EXIT_CODES = {"completed": 0, "failed": 1, "stopped": 3, "rejected": 3, "interrupted": 130}
# Every task completed, but the push to --repo or the pull request failed: the job's product
# is not where it was to go. Its own code, so a pipeline can retry the delivery alone.
NOT_DELIVERED = 4


@contextmanager
def _held_for_the_run(workdir, session_id: str | None, repo: str | None) -> Iterator[None]:
    """An existing session's lock, from before Prefect starts to the run's end: a session
    another process runs is refused here (exit 2, naming its pid and the resume to run after,
    with ``repo``), before a flow run is made that would end failed beside that process's run;
    the flow's store borrows the lock."""
    from aca_flows.session.layout import AcaDir
    from aca_flows.session.lock import held_for_run

    lock_file = AcaDir(workdir).session(session_id).lock_file if session_id else None
    if lock_file is None or not lock_file.parent.is_dir():  # never create a session's folder
        yield
        return
    with held_for_run(lock_file, session_id, repo):
        yield


@contextmanager
def redacted_terminal() -> Iterator[None]:
    """What a run prints (the live view, its summary, errors) passes the redactor, and a
    reader that went away (a ``| tee`` the same Ctrl-C ended) does not end the run."""
    from aca_flows._closed_output import survive_a_gone_reader
    from aca_flows.session.redact import RedactingStream

    survive_a_gone_reader()

    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(sys.stdout), RedactingStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


class RunCrashed(AcaError):
    exit_code = 1
