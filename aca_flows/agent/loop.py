"""Driving the provider: the tool loop for API providers, one delegated run for Claude Code.

``AgentConversation`` is one task's conversation with its provider. It lives across the fix
attempts of verification (the verify output goes back into the same conversation), adds up
tokens and cost, saves the messages after every provider call (and what was added since when a
round ends or a call fails) and logs every turn and tool call. Every
provider call of a task passes through ``AgentConversation.complete``: the one place where a
spend check can stop a task before a call.

- ``run_tool_loop`` (anthropic, openai, ollama, replay): turns until the model calls
  ``finish`` or answers without tool calls, at most ``max_turns`` per round.
- ``run_claude_code``: Claude Code runs its own tool loop in the worktree; aca makes one
  ``complete`` call with ``options["cwd"]`` (and ``resume`` on a fix attempt), logs the
  stream of events and takes the response as final. Subtasks come from its answer's
  ``aca-subtasks`` block, a "no change needed" from its final ``NO CHANGE NEEDED:`` line, a
  question for a person from its final ``NEEDS HUMAN:`` line (``needs_human.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from aca_flows._threads import in_thread_to_its_end
from aca_flows.agent.needs_human import parse_needs_human
from aca_flows.agent.no_change import parse_no_change
from aca_flows.agent.subtasks import (
    ProposedSubtask,
    SubtaskProposalError,
    parse_subtask_block,
)
from aca_flows.agent.tools import TaskTools
from aca_flows.agent.transcript import ConversationStore, TaskLog
from aca_flows.errors import PermanentProviderError
from aca_flows.providers.base import (
    UNPARSED_ARGUMENTS,
    Message,
    Provider,
    ProviderEvent,
    ProviderRequest,
    ProviderResponse,
    ToolCall,
    ToolDefinition,
    ToolResult,
    Usage,
)
from aca_flows.sandbox import placeholders_removed
from aca_flows.session.redact import redact_known, redact_text
from aca_flows.session.usage import summed_cost

__all__ = ["AgentConversation", "AgentRound", "run_claude_code", "run_tool_loop"]

LOGGED_TEXT_LIMIT = 4000

StopKind = Literal["finish", "final_answer", "max_turns", "no_finish"]

# What the tool loop answers a turn with no tool call: only ``finish`` (or ``report_no_change``,
# ``ask_human``) says the work is done. Such a turn may be the model's "done", but also a
# gateway's error passed on as text ("Error: rate limit exceeded") after half the work.
NOT_FINISHED = (
    "You answered without calling a tool, so aca cannot tell whether the task is done. If it "
    "is, call finish with a short summary of what you changed; if the task needs no change, "
    "call report_no_change with the reason; if you need a person's decision, call ask_human. "
    "Otherwise go on with the work."
)


# The tools that change files: a refusal of one is why a task may end with no change.
WRITE_TOOLS = ("write_file", "edit_file")


class AgentRound(BaseModel):
    """How one round of agent work (the first try, or one fix attempt) ended."""

    stop: StopKind
    summary: str = ""
    turns: int = 0
    proposed_subtasks: list[ProposedSubtask] = Field(default_factory=list)
    subtask_problem: str | None = None
    no_change_reason: str | None = Field(
        default=None, description="Set when the agent stated that the task needs no change."
    )
    human_question: str | None = Field(
        default=None, description="Set when the agent cannot go on without a person."
    )
    refused_writes: list[str] = Field(
        default_factory=list, description="Why each write or edit of the agent was refused."
    )

    @property
    def finished(self) -> bool:
        return self.stop not in ("max_turns", "no_finish")


class AgentConversation:
    """One task's conversation with its provider, its accounting, its log and its store."""

    def __init__(
        self,
        provider: Provider,
        *,
        system: str,
        model: str | None,
        max_tokens: int | None,
        log: TaskLog,
        store: ConversationStore,
    ):
        self.provider = provider
        # What the model is sent holds no secret aca knows (a token in a title, or printed by
        # a command it was given to): the provider's servers are no place for it.
        self.system = redact_known(system)
        self.model = model
        self.max_tokens = max_tokens
        self.log = log
        self.store = store
        self.messages: list[Message] = []
        self.usage = Usage()
        self.cost_usd = 0.0
        self.turns = 0
        self.session_id: str | None = None
        self.response_model = ""
        self.refused_outside = 0
        """Tool calls the provider's own agent refused outside the worktree (Claude Code)."""
        self.sandbox_failed = 0
        """Commands Claude Code's sandbox could not start (bwrap: a path it mounts was gone)."""
        self._unsaved = False  # messages added since the last save

    def add_user_text(self, text: str) -> None:
        """Add a user turn. After tool results it joins that turn, keeping roles alternating."""
        text = redact_known(text)
        last = self.messages[-1] if self.messages else None
        if last is not None and last.role == "user":
            joined = f"{last.text}\n\n{text}" if last.text else text
            self.messages[-1] = last.model_copy(update={"text": joined})
        else:
            self.messages.append(Message(role="user", text=text))
        # Saved with the response it asks for: a save is for what a crash must not lose, and
        # only a provider call costs anything to redo (one save less per turn).
        self._unsaved = True

    def add_tool_results(self, results: list[ToolResult]) -> None:
        results = [r.model_copy(update={"content": redact_known(r.content)}) for r in results]
        self.messages.append(Message(role="user", tool_results=results))
        self._unsaved = True  # saved with the next response, or when the round ends

    async def add_assistant(self, response: ProviderResponse) -> None:
        self.messages.append(
            Message(role="assistant", text=response.text, tool_calls=response.tool_calls)
        )
        await self.save()

    async def complete(
        self, *, tools: list[ToolDefinition], options: dict[str, Any] | None = None
    ) -> ProviderResponse:
        """One provider call with the whole conversation; accounted and logged."""
        request = ProviderRequest(
            system=self.system,
            messages=list(self.messages),
            tools=tools,
            model=self.model,
            max_tokens=self.max_tokens,
            options=options or {},
        )
        try:
            response = await self.provider.complete(request, on_event=self._on_event)
        except BaseException:
            await self.save_changes()  # the conversation up to the failed call stays on record
            raise
        self.turns += 1
        self.usage = self.usage + response.usage
        self.cost_usd = summed_cost((self.cost_usd, response.cost_usd))
        self.session_id = response.session_id or self.session_id
        self.response_model = response.model or self.response_model
        self.log.write(
            "turn",
            turn=self.turns,
            provider=response.provider or self.provider.name,
            model=response.model or self.model,
            stop_reason=response.stop_reason,
            text=_clip(response.text),
            tool_calls=[c.name for c in response.tool_calls],
            usage=response.usage.model_dump(),
            cost_usd=response.cost_usd,
        )
        return response

    async def save(self) -> None:
        # In a worker thread: the file is replaced whole, and a rename over a file waits for
        # the disk (ext4 writes the new file's blocks first); on the event loop that held up
        # every other task's turn.
        messages = list(self.messages)
        await in_thread_to_its_end(
            self.store.save, messages, provider=self.provider.name, model=self.model
        )
        self._unsaved = False

    async def save_changes(self) -> None:
        if self._unsaved:
            await self.save()

    def _on_event(self, event: ProviderEvent) -> None:
        self.log.write("provider_event", event=event.kind, data=_clip_data(event.data))
        if event.data.get("subtype") == "refused_outside_worktree":
            self.refused_outside += event.data.get("refused", 0)
            self.sandbox_failed += event.data.get("sandbox_failed", 0)


async def run_tool_loop(
    conversation: AgentConversation, tools: TaskTools, user_text: str, *, max_turns: int
) -> AgentRound:
    """Run turns until ``finish`` (``report_no_change``, ``ask_human``), two answers in a row
    without a tool call (the first is answered with ``NOT_FINISHED``), or ``max_turns``."""
    conversation.add_user_text(user_text)
    tools.finished = False
    tools.no_change_reason = None
    tools.human_question = None
    definitions = tools.definitions()
    try:
        return await _tool_turns(conversation, tools, definitions, max_turns)
    finally:
        await conversation.save_changes()  # the last turn's tool results


async def _tool_turns(
    conversation: AgentConversation,
    tools: TaskTools,
    definitions: list[ToolDefinition],
    max_turns: int,
) -> AgentRound:
    refused: list[str] = []
    reminded = cut = False
    for turn in range(1, max_turns + 1):
        response = await conversation.complete(tools=definitions)
        await conversation.add_assistant(response)
        was_cut, cut = cut, _cut_in_a_call(response)
        if was_cut and cut:  # told once to write less, it did not: more turns pay for nothing
            raise PermanentProviderError(
                f"{response.provider}: two answers in a row were cut off at the max_tokens "
                f"limit{f' ({conversation.max_tokens})' if conversation.max_tokens else ''} "
                f"inside a tool call's arguments. Raise [providers.{response.provider}] "
                "max_tokens, or split the task.",
                provider=response.provider,
            )
        if not response.tool_calls:
            if not reminded:
                reminded = True
                conversation.add_user_text(NOT_FINISHED)
                continue
            # Twice in a row: whatever it is, it is not the agent saying the work is done.
            return AgentRound(
                stop="no_finish",
                summary=response.text.strip(),
                turns=turn,
                proposed_subtasks=tools.proposed_subtasks,
                refused_writes=refused,
            )
        reminded = False
        results = []
        for call in response.tool_calls:
            conversation.log.write(
                "tool_call", id=call.id, name=call.name, arguments=_clip_data(call.arguments)
            )
            result = await tools.call(call) if not _was_cut(response, call) else _cut_off(call)
            conversation.log.write(
                "tool_result",
                id=call.id,
                name=call.name,
                is_error=result.is_error,
                content=_clip(result.content),
            )
            results.append(result)
            # A call the output limit cut short was not refused: it never reached aca.
            if result.is_error and call.name in WRITE_TOOLS and not _was_cut(response, call):
                refused.append(f"{call.name} {call.arguments.get('path', '?')}: {result.content}")
        conversation.add_tool_results(results)
        if tools.finished:
            return AgentRound(
                stop="finish",
                summary=tools.summary or response.text.strip(),
                turns=turn,
                proposed_subtasks=tools.proposed_subtasks,
                no_change_reason=tools.no_change_reason,
                human_question=tools.human_question,
                refused_writes=refused,
            )
    return AgentRound(stop="max_turns", turns=max_turns, proposed_subtasks=tools.proposed_subtasks)


def _was_cut(response: ProviderResponse, call: ToolCall) -> bool:
    return response.stop_reason == "max_tokens" and UNPARSED_ARGUMENTS in call.arguments


def _cut_in_a_call(response: ProviderResponse) -> bool:
    return any(_was_cut(response, call) for call in response.tool_calls)


def _cut_off(call: ToolCall) -> ToolResult:
    """What the model is told of a call its answer's output limit cut short: the truth, so it
    writes less at a time (it was told its arguments were "not a JSON object", and tried the
    same again until its turns ran out)."""
    return ToolResult(
        tool_call_id=call.id,
        is_error=True,
        content=(
            f"your answer reached its output token limit (max_tokens) inside the arguments of "
            f"{call.name}, so the call was cut off and not run. Do the work in smaller pieces: "
            "write a large file in parts (write_file its first part, then edit_file to add each "
            "next part after the last lines written), one change per call."
        ),
    )


async def run_claude_code(
    conversation: AgentConversation,
    user_text: str,
    *,
    worktree: Path,
    options: dict[str, Any] | None = None,
) -> AgentRound:
    """One delegated Claude Code run in ``worktree``; resumes its session on a fix attempt."""
    conversation.add_user_text(user_text)
    call_options = {**(options or {}), "cwd": str(worktree)}
    if conversation.session_id:
        call_options["resume"] = conversation.session_id
    # Claude Code's sandbox leaves empty placeholder files behind (in the worktree, the folders
    # above it up to the repository, the home, the git directory): not to be committed or kept.
    # Not the other tasks' worktrees (write-denied here): their placeholders are their runs',
    # whose commands mount them while they run.
    own = Path(worktree).resolve()
    others = [Path.home(), *(Path(p) for p in call_options.get("protected_paths", ()))]
    others = [folder for folder in others if folder.parent != own.parent]
    for parent in own.parents:
        others.append(parent)
        if (parent / ".git").is_dir():
            break
    others = [folder for folder in others if folder.is_dir()]
    removed: list[str] = []
    try:
        with placeholders_removed(Path(worktree), others) as removed:
            response = await conversation.complete(tools=[], options=call_options)
    finally:
        if removed:
            conversation.log.write("sandbox_placeholders_removed", files=removed)
    await conversation.add_assistant(response)
    proposals: list[ProposedSubtask] = []
    problem = None
    try:
        proposals = parse_subtask_block(response.text)
    except SubtaskProposalError as exc:
        problem = str(exc)  # the rounds tell the agent (``rounds._claude_code_proposals``)
    answer = _without_subtask_block(response.text)
    no_change_reason = parse_no_change(answer)
    question = parse_needs_human(answer)
    return AgentRound(
        stop="final_answer",
        summary=(no_change_reason or answer).strip(),
        turns=1,
        proposed_subtasks=proposals,
        subtask_problem=problem,
        no_change_reason=no_change_reason,
        human_question=question,
    )


def _without_subtask_block(text: str) -> str:
    start = text.find("```aca-subtasks")
    return text if start < 0 else text[:start]


def _clip(text: str) -> str:
    if len(text) <= LOGGED_TEXT_LIMIT:
        return text
    text = redact_text(text)  # before the cut, which would leave a secret's part unfound
    return text[:LOGGED_TEXT_LIMIT] + f"... [{len(text) - LOGGED_TEXT_LIMIT} more characters]"


def _clip_data(data: Any) -> Any:
    if isinstance(data, str):
        return _clip(data)
    if isinstance(data, dict):
        return {k: _clip_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_clip_data(v) for v in data]
    return data
