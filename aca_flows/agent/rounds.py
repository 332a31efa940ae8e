"""``run_agent_and_verify``: the agent's rounds in a task's worktree, until its checks pass.

The task's prompt goes to the agent (aca's tool loop, or Claude Code in the worktree with its
sandbox's options); its answer is weighed (a question for a person, evidence of a change or of
none, links leaving the worktree, aca's own files, repositories made inside it, secrets), the
task's checks run on the work in the sandbox, and a failed check goes back to the agent as a
fix request, up to ``max_fix_attempts`` times. Nothing is committed here: ``execute_task``
lands a passed result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from aca_flows._threads import in_thread
from aca_flows.agent.aca_files import (
    aca_files_problem,
    case_variants_problem,
    host_read_files_problem,
)
from aca_flows.agent.landing import run_checks_on_the_work, sandbox_for_check, sandbox_of
from aca_flows.agent.links import leaving_links_problem
from aca_flows.agent.loop import AgentConversation, AgentRound, run_claude_code, run_tool_loop
from aca_flows.agent.needs_human import asks_human_reason
from aca_flows.agent.nested_repos import nested_repositories_problem
from aca_flows.agent.no_change import (
    changes_and_work,
    evidence_problem,
    unfinished_reason,
    with_ignored_writes,
    with_refused_writes,
)
from aca_flows.agent.prompt import DependencyContext, build_task_prompt
from aca_flows.agent.secrets_in_work import secrets_problem
from aca_flows.agent.subtasks import (
    SUBTASK_BLOCK_TAG,
    ProposedSubtask,
    SubtaskProposalError,
    placement_problems,
)
from aca_flows.agent.tools import TaskTools, ToolRefused, resolve_inside
from aca_flows.agent.verify import (
    FAILURE_OUTPUT_LIMIT,
    Check,
    VerifyResult,
    describe_failure,
    fix_request,
    missing_from_worktree,
    task_checks,
)
from aca_flows.plan.models import ExecutionPlan, Task
from aca_flows.session.layout import SessionPaths
from aca_flows.session.redact import redacted_tail
from aca_flows.settings import AcaConfig
from aca_flows.workspace import TaskWorktree

__all__ = ["CLAUDE_CODE", "RoundsResult", "run_agent_and_verify"]

CLAUDE_CODE = "claude-code"


class RoundsResult(BaseModel):
    """The agent's rounds in one worktree, before commit."""

    passed: bool
    no_change_reason: str | None = None
    failure_reason: str | None = None
    human_question: str | None = None
    last_round: AgentRound | None = None
    verify: VerifyResult | None = None
    attempts: int = 0


async def run_agent_and_verify(
    plan: ExecutionPlan,
    task: Task,
    worktree: TaskWorktree,
    conversation: AgentConversation,
    dependencies: list[DependencyContext],
    config: AcaConfig,
    paths: SessionPaths,
    stop_requested: Callable[[], bool],
) -> RoundsResult:
    """Agent rounds until the checks pass, the fix attempts run out or the run is stopping."""
    message = build_task_prompt(
        plan, task, dependencies=dependencies, read_file=lambda p: _read_ref(worktree.path, p)
    )
    # run_command and verify; network off unless the task or [sandbox] network allows it
    sandbox = sandbox_of(worktree, config.sandbox, network=task.network)
    tools = TaskTools(
        worktree.path,
        config.agent,
        existing_task_ids={t.id for t in plan.tasks},
        plan_check=lambda proposals: placement_problems(plan, task.id, proposals),
        sandbox=sandbox,
    )
    claude_code = conversation.provider.name == CLAUDE_CODE
    # Its sandbox's paths, worked out once, with the mounts, before the agent runs.
    claude_options = sandbox.claude_code_options() if claude_code else {}
    max_rounds = 1 + config.agent.max_fix_attempts
    started = time.time()  # what the agent writes from now on (setup commands ran before)
    verify: VerifyResult | None = None
    failed: tuple[Check, VerifyResult] | None = None
    agent_round: AgentRound | None = None
    proposed: list[ProposedSubtask] = []  # Claude Code's, over its rounds
    for attempt in range(1, max_rounds + 1):
        if claude_code:
            # Permission mode, allowed tools, turns and budget come from [claude_code] config,
            # which the provider reads itself; aca adds only the worktree and the session.
            agent_round = await run_claude_code(
                conversation, message, worktree=worktree.path, options=claude_options
            )
        else:
            agent_round = await run_tool_loop(
                conversation, tools, message, max_turns=config.agent.max_turns
            )
        if not agent_round.finished:
            return RoundsResult(
                passed=False,
                failure_reason=unfinished_reason(agent_round, config.agent.max_turns),
                last_round=agent_round,
                attempts=attempt,
            )
        question = agent_round.human_question
        if question:
            # The agent cannot go on alone: nothing to verify, a person decides.
            return RoundsResult(
                passed=False,
                failure_reason=asks_human_reason(question),
                human_question=question,
                last_round=agent_round,
                attempts=attempt,
            )
        if claude_code:
            proposed, refused = _claude_code_proposals(plan, task, proposed, agent_round)
            if refused is not None:
                conversation.log.write("subtasks_rejected", reason=refused)
                if attempt == max_rounds or stop_requested():
                    return RoundsResult(
                        passed=False,
                        failure_reason=f"{refused} Nothing was merged.",
                        last_round=agent_round,
                        attempts=attempt,
                    )
                message = (
                    f"Your {SUBTASK_BLOCK_TAG} block was refused: {refused} Send the corrected "
                    "block with your final answer, or do that work yourself and send none."
                )
                continue
            agent_round.proposed_subtasks = proposed
        every_change, changed = await in_thread(changes_and_work, worktree)
        no_change = agent_round.no_change_reason
        if no_change is None and not changed and agent_round.proposed_subtasks:
            # Splitting is the work: the subtasks change the code, the parent itself does not.
            ids = ", ".join(p.id for p in agent_round.proposed_subtasks)
            no_change = f"the work is split into subtasks ({ids}); they make the changes"
        problem = evidence_problem(no_change, changed, agent_round.summary)
        if problem is not None and not changed and no_change is None:
            ignored = await in_thread(worktree.ignored_since, started)
            problem = with_ignored_writes(problem, ignored)
            problem = with_refused_writes(problem, agent_round.refused_writes)
        # Off the loop: a change of many large files takes seconds to look through, and
        # every other task of the run (its calls, its commands' timeouts) waited meanwhile.
        problem = problem or await in_thread(change_problem, worktree, every_change)
        if problem is not None:
            return RoundsResult(
                passed=False, failure_reason=problem, last_round=agent_round, attempts=attempt
            )
        checks = await in_thread(task_checks, plan, task, changed, paths, worktree.contains)
        if not checks:
            return RoundsResult(
                passed=True, no_change_reason=no_change, last_round=agent_round, attempts=attempt
            )
        results = await run_checks_on_the_work(
            worktree,
            checks,
            lambda network: sandbox_for_check(worktree, config, network, sandbox),
            config,
            conversation.log,
            attempt=attempt,
            agent_since=started,
        )
        verify = results[0] if checks[0].owner is None else None  # the task's own check
        failed = checks[len(results) - 1], results[-1]
        if failed[1].passed:
            return RoundsResult(
                passed=True,
                no_change_reason=no_change,
                last_round=agent_round,
                verify=verify,
                attempts=attempt,
            )
        missing = missing_from_worktree(failed[1], worktree.path, worktree.repo_root)
        if stop_requested() or missing:
            # The agent cannot fix a program missing from the worktree: no fix round is paid.
            why = f"verify command {failed[0].describe()} failed while the run stopped"
            if missing:
                why = f"verify command {failed[0].describe()} found no program to run: {missing}"
            return RoundsResult(
                passed=False,
                failure_reason=why,
                last_round=agent_round,
                verify=verify,
                attempts=attempt,
            )
        message = fix_request(failed[1], attempts_left=max_rounds - attempt, owner=failed[0].owner)
    assert failed is not None
    check, result = failed
    tail = redacted_tail(result.output, FAILURE_OUTPUT_LIMIT)
    rounds = max_rounds - 1  # fix rounds, after the first try
    how = f"still failed after {rounds} fix round(s) of the agent" if rounds else "failed"
    return RoundsResult(
        passed=False,
        failure_reason=(
            f"verify command {check.describe()} {how} ({describe_failure(result)}); "
            f"nothing was merged. Output:\n{tail or '(none)'}"
        ),
        last_round=agent_round,
        verify=verify,
        attempts=max_rounds,
    )


def _claude_code_proposals(
    plan: ExecutionPlan, task: Task, earlier: list[ProposedSubtask], agent_round: AgentRound
) -> tuple[list[ProposedSubtask], str | None]:
    """The subtasks a Claude Code task proposed over its rounds, and why they cannot be taken
    when they cannot. aca's tool loop refuses a proposal as it is made; Claude Code's block is
    read when its round ends, and a fix round's answer (which needs none) dropped it. A later
    block adds to the earlier ones, and replaces a proposal of the same id."""
    if agent_round.subtask_problem is not None:
        return earlier, agent_round.subtask_problem
    new = {proposal.id: proposal for proposal in agent_round.proposed_subtasks}
    proposed = [p for p in earlier if p.id not in new] + list(new.values())
    problems = placement_problems(plan, task.id, proposed) if new else []
    if problems:
        return earlier, str(SubtaskProposalError(problems))
    return proposed, None


def change_problem(worktree: TaskWorktree, every_change: list[str]) -> str | None:
    """Why a change can never be committed, whatever its checks say: a link out, aca's own
    files, case variants, files the host reads, nested repositories, a secret aca knows."""
    return (
        leaving_links_problem(worktree.path, every_change)
        or aca_files_problem(every_change)
        or case_variants_problem(every_change)
        or host_read_files_problem(every_change)
        or nested_repositories_problem(worktree, every_change)
        or secrets_problem(worktree, every_change)
    )


def _read_ref(root: Path, path: str) -> str | None:
    try:
        target = resolve_inside(root, path)
        return target.read_text(encoding="utf-8") if target.is_file() else None
    except (ToolRefused, OSError, UnicodeDecodeError):
        return None
