"""A stuck task asks a person instead of failing (``[approval] on_failure = "ask"``).

A task whose verification still fails after its fix attempts, that ended without a change or
a reason, or whose agent asked for a person (``ask_human``, ``NEEDS HUMAN:``) does not fail at
once: the flow run pauses for a ``TaskHelp`` input. Next to the form, as artifacts: the
question with the task's last output and verify output (``aca-question-<session>-<task>``,
also written above the form) and the diff of its worktree against its base
(``aca-diff-<session>-<task>``), both redacted. The session journals the question
(``task_question``), so ``aca sessions list`` shows the run ``waiting: task <id> asks: ...``
and ``aca answer`` (``send_answer``) finds its flow run. The answer:

- ``retry`` with a ``hint``: the hint is appended to the task's prompt (after the agent's
  question, when it asked one) and the task runs again (a new task run, from a clean worktree);
- ``skip``: the task ends skipped ("skipped after it failed: ..."); like any task left out on
  purpose it counts as done, so its dependents run;
- ``fail``: the task fails as it would have (its dependents are skipped).

A ``reason`` given with the answer is kept in the task's status. Nobody answering within
``[approval] timeout_seconds`` means ``fail``. Tasks already running go on while the run
waits; no new task starts. The run always *pauses* here (its process waits), deployment runs
included: other tasks may be running.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import acreate_markdown_artifact
from prefect.context import get_run_context
from prefect.input import RunInput
from pydantic import Field

from aca_flows._words import workdir_option
from aca_flows.agent.execute import TaskOutcome
from aca_flows.errors import InputError
from aca_flows.flows.approval import (
    INTERRUPTED,
    api_url,
    resume_waiting_run,
    running_again,
    wait_for_input,
)
from aca_flows.flows.artifacts import md
from aca_flows.flows.events import emit_task_event
from aca_flows.flows.remote_sync import session_resume
from aca_flows.plan.models import TaskStatus
from aca_flows.session.events import TaskAnswered, TaskQuestion
from aca_flows.session.reading import display_status, load_session
from aca_flows.session.redact import redact_text, redacted_tail

if TYPE_CHECKING:
    from aca_flows.flows.task_run import ActiveRun
    from aca_flows.session.record import PendingQuestion

__all__ = [
    "HINT_PREFIX",
    "TaskHelp",
    "add_hint",
    "answer_of",
    "ask_about_failed_task",
    "reviewed_reason",
    "send_answer",
    "take_answer_left",
]

HINT_PREFIX = "Hint from a reviewer:"
QUESTION_PREFIX = "You asked a person:"
OUTPUT_LIMIT = 4_000
# The diff written above the form; the artifact holds all the outcome kept (DIFF_LIMIT).
FORM_DIFF_LIMIT = 6_000


class TaskHelp(RunInput):
    """The form of a task that failed and asks what to do."""

    action: Literal["retry", "skip", "fail"] = Field(
        default="retry", description="retry (with the hint below), skip the task, or fail it."
    )
    hint: str = Field(default="", description="retry: appended to the task's prompt.")
    reason: str = Field(default="", description="Why (kept in the task's status).")


async def ask_about_failed_task(
    run: ActiveRun, task_id: str, outcome: TaskOutcome, attempt: int, interrupt
) -> TaskHelp | None:
    """A person's answer for ``task_id``, failed at its ``attempt``; ``fail`` when nobody
    answers in time, ``None`` when the run is stopped meanwhile (nobody decided)."""
    logger = get_run_logger()
    question = _question(run, task_id, outcome)
    key = _artifact_key("question", run.session_id, task_id)
    await acreate_markdown_artifact(
        key=key, markdown=question, description=f"{task_id} failed and asks what to do"
    )
    diff_key = _artifact_key("diff", run.session_id, task_id)
    if outcome.diff:
        await acreate_markdown_artifact(
            key=diff_key,
            markdown=_diff_markdown(task_id, outcome.diff),
            description=f"{task_id}: its changes when it failed (not merged)",
        )
    form_text = question + _form_diff(outcome.diff, diff_key)
    timeout = run.config.approval.timeout_seconds
    asked = " ".join((outcome.human_question or outcome.failure_reason or "failed").split())
    pause_key = f"aca-help-{_key_of(task_id)}-{attempt}"
    flow_run = get_run_context().flow_run
    _record(
        run,
        TaskQuestion(
            task_id=task_id,
            question=redact_text(asked),
            flow_run_id=str(flow_run.id),
            api_url=api_url(),
            expires_at=datetime.now(UTC) + timedelta(seconds=timeout),
            # As Prefect keeps a pause's input (``wait_for_input`` adds the attempt's count).
            input_key=f"paused-{pause_key}-run{flow_run.run_count}-response",
        ),
    )
    logger.warning(
        f"{task_id} failed and waits for a decision: resume the flow run in the Prefect UI, "
        f"or `aca answer {run.session_id} {task_id}{workdir_option(run.workdir)} --retry --hint "
        "TEXT | --skip | --fail`"
    )
    form = TaskHelp.with_initial_data(description=form_text)
    answer = await wait_for_input(form, "pause", timeout, pause_key, interrupt)
    if answer is INTERRUPTED:
        # No decision, so no verdict: the task stays unfinished, and a resume asks again.
        return None
    # Nobody decided in time: the task fails for its own reason (the journal says why).
    if answer is None:
        logger.warning(f"nobody answered for {task_id} within {timeout:g} s: it fails")
        await running_again()
        why = f"{NO_ANSWER} {timeout:g} s"
        _record(run, TaskAnswered(task_id=task_id, action="fail", reason=why, timed_out=True))
        return TaskHelp(action="fail", reason=why)  # said in its status, its event, its run
    answer = _tidied(answer)
    logger.info(f"{task_id}: {answer.action}" + (f" ({answer.hint})" if answer.hint else ""))
    _record(run, TaskAnswered(task_id=task_id, **answer.model_dump()))
    return answer


def _key_of(task_id: str) -> str:
    """``task_id`` as Prefect's pause keys take it (lower-case letters, digits and dashes),
    told apart by a hash: `Login`, `db_init` and a subtask's `parent.child` are task ids too,
    and their pause was refused, so nobody was asked."""
    slug = re.sub(r"[^a-z0-9-]+", "-", task_id.lower()).strip("-")
    return f"{slug}-{hashlib.sha1(task_id.encode()).hexdigest()[:8]}"


# The reasons of a failure no person decided: aca could not ask (``answer_of``), or nobody
# answered in time.
COULD_NOT_ASK = "could not ask a person"
NO_ANSWER = "no answer within"


def answer_of(question: asyncio.Task) -> TaskHelp | None:
    """The answer of a finished ``ask_about_failed_task`` task; ``None`` when the run stopped
    first. One that could not be asked (the server refused the pause) fails its task: asking
    again would fail again."""
    if question.cancelled():
        return None
    if (error := question.exception()) is not None:
        return TaskHelp(action="fail", reason=f"{COULD_NOT_ASK} ({error})")
    return question.result()


def add_hint(run: ActiveRun, task_id: str, hint: str, question: str | None = None) -> None:
    """The task's next run gets ``hint`` at the end of its description (its prompt), after
    the agent's own ``question`` when it asked one."""
    if not hint:
        return
    task = run.plan.task(task_id)
    asked = f"{QUESTION_PREFIX} {question}\n" if question else ""
    task.description = f"{task.description.rstrip()}\n\n{asked}{HINT_PREFIX} {hint}".lstrip()


def reviewed_reason(reason: str, answer: TaskHelp) -> str:
    """A failed task's ``reason`` after a person's ``answer``: their own reason first."""
    if not answer.reason:
        return reason
    if answer.reason.startswith((COULD_NOT_ASK, NO_ANSWER)):  # aca's, not a reviewer's
        return f"{reason}; {answer.reason}"
    return f"{answer.reason} (a reviewer's decision); {reason}"


def send_answer(workdir, session_id: str, task_id: str, answer: dict[str, Any]) -> str:
    """Resume the flow run of ``session_id`` waiting for an answer about ``task_id`` with
    ``answer`` (a ``TaskHelp``); returns the flow run id. For ``aca answer``; takes no lock."""
    session = load_session(workdir, session_id)
    status = display_status(session, workdir)
    question = session.question
    if question is None or not status.startswith("waiting: task"):
        hint = {
            "waiting for approval": f"; `aca approve {session.id}` answers it.",
            "interrupted": (
                f"; `{session_resume(session, workdir)}` runs its unfinished tasks again."
            ),
        }.get(status, ".")
        raise InputError(
            f"session {session.id} has no task waiting for an answer (status: {status}); "
            "`aca sessions list` shows the sessions that wait" + hint
        )
    if question.task_id != task_id:
        raise InputError(
            f"task {task_id} of session {session.id} is not waiting for an answer; task "
            f"{question.task_id} is: `aca answer {session.id} {question.task_id} ...`."
        )
    resume_waiting_run(
        question.api_url, question.flow_run_id, session.id, TaskHelp(**answer).model_dump()
    )
    return question.flow_run_id


async def take_answer_left(run: ActiveRun) -> None:
    """The answer a person gave in the Prefect UI to a run that waited for it and died (its
    flow run took it; nothing was there to act on it), taken by the resume, on the server it
    talks to: the task runs again with the hint, or ends skipped or failed, as they said.
    Without one, the task runs again and may ask again."""
    question = run.left_question
    if question is None or question.api_url not in (None, api_url()):
        return
    answer = await _answer_in(question)
    if answer is None:
        return
    task_id = question.task_id
    get_run_logger().warning(
        f"{task_id}: the answer given in the Prefect UI to the run that died waiting for it is "
        f"taken: {answer.action}" + (f" ({answer.hint})" if answer.hint else "")
    )
    _record(run, TaskAnswered(task_id=task_id, **answer.model_dump()))
    if answer.action == "retry":
        add_hint(run, task_id, answer.hint)
        return
    reason = reviewed_reason(question.question, answer)
    task = run.plan.task(task_id)
    if answer.action == "skip":
        task.status = TaskStatus(state="skipped", reason=f"skipped after it failed: {reason}")
        run.store.task_skipped(task_id, task.status.reason)
        emit_task_event(run.store, task_id, "skipped", task.status.reason)
    else:
        task.status = TaskStatus(state="failed", reason=reason)
        run.store.task_failed(task_id, reason)
        emit_task_event(run.store, task_id, "failed", reason)


async def _answer_in(question: PendingQuestion) -> TaskHelp | None:
    """The answer stored in the question's flow run while it waited, under the key of that
    question (an earlier question of the run, answered and acted on, is not its answer);
    ``None`` without one, or when the server cannot say."""
    from prefect.client.orchestration import get_client

    if question.input_key is None:  # journalled before its key was
        return None
    try:
        async with get_client() as client:
            inputs = await client.filter_flow_run_input(
                flow_run_id=UUID(question.flow_run_id),
                key_prefix=question.input_key,
                limit=1,
                exclude_keys=set(),
            )
        found = next((found for found in inputs if found.key == question.input_key), None)
        if found is None or (question.expires_at and found.created > question.expires_at):
            return None
        return _tidied(TaskHelp.model_validate(found.decoded_value))
    except Exception:  # a server that cannot say, an answer that is no form's
        return None


def _tidied(answer: TaskHelp) -> TaskHelp:
    hint, reason = answer.hint.strip(), answer.reason.strip()
    if answer.action != "retry" and hint:
        # A hint goes with a retry (the form has both fields): with a skip or a fail it was
        # logged as if it counted and went nowhere. It is what the person said: the reason.
        reason, hint = (f"{reason}; {hint}" if reason else hint), ""
    return TaskHelp(action=answer.action, hint=hint, reason=reason)


def _record(run: ActiveRun, event) -> None:
    if run.store is not None:
        run.store.record(event)


def _question(run: ActiveRun, task_id: str, outcome: TaskOutcome) -> str:
    task = run.plan.task(task_id)
    # The agent's words show as text, as written: an image in them was fetched by the
    # reviewer's browser from wherever the agent, which has no network, chose (a link, a lure).
    if outcome.human_question:
        lines = [
            f"## Task `{task_id}` asks a person",
            "",
            f"**{md(task.title)}** — the agent asks:",
            "",
            _fenced(outcome.human_question),
        ]
    else:
        reason = md(outcome.failure_reason or "failed", keep_code=True)
        lines = [f"## Task `{task_id}` failed: what now?", "", f"**{md(task.title)}** — {reason}"]
    lines += [
        "",
        "Choose **retry** with a hint for the agent, **skip** (its dependents still run) or "
        "**fail** (its dependents are skipped). From a terminal: "
        f"`aca answer {run.session_id} {task_id}{workdir_option(run.workdir)} --retry --hint "
        "TEXT` (or `--skip`, `--fail`).",
    ]
    if outcome.summary and outcome.summary != outcome.human_question:
        answer = redacted_tail(outcome.summary, OUTPUT_LIMIT)  # redacted before it is cut
        lines += ["", "### The agent's last answer", "", _fenced(answer)]
    if outcome.verify_output:
        said = f"$ {outcome.verify_command}\n{redacted_tail(outcome.verify_output, OUTPUT_LIMIT)}"
        lines += ["", "### Its check said", "", _fenced(said)]
    return redact_text("\n".join(lines))  # it leaves aca: an artifact and the form


def _diff_markdown(task_id: str, diff: str) -> str:
    title = f"## The changes of task `{task_id}` when it failed (not merged)"
    return redact_text(f"{title}\n\n{_fenced(diff, 'diff')}\n")


def _form_diff(diff: str, key: str) -> str:
    """The diff under the question above the form: its start, the artifact for the rest."""
    if not diff:
        return "\n\n### Its changes\n\nNone: the worktree was unchanged."
    diff = redact_text(diff)  # before the cut, which would leave a secret's start unfound
    shown = diff if len(diff) <= FORM_DIFF_LIMIT else diff[:FORM_DIFF_LIMIT] + "\n[...]"
    more = f" (the whole diff: artifact `{key}`)" if len(diff) > FORM_DIFF_LIMIT else ""
    return redact_text(f"\n\n### Its changes{more}\n\n{_fenced(shown, 'diff')}")


def _fenced(text: str, language: str = "text") -> str:
    """``text`` in a code block whose fence no run of backticks inside it can close."""
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _artifact_key(kind: str, session_id: str, task_id: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    raw = f"aca-{kind}-{session_id}-{task_id}".lower()
    return "".join(ch if ch.isalnum() else "-" for ch in raw)[:100]
