"""The intelligent parser: an LLM turns a free-form Markdown task file into an execution plan.

    parse = await parse_with_llm(Path("tasks.md"), provider, cache_dir=parse_cache_dir())
    parse.plan        # an ordinary, validated ExecutionPlan: dump it, review it, run it
    parse.lost        # source items the plan does not carry (a warning; strict=True refuses)

What a caller may rely on:
- the model gets the Markdown, every file it references, the context hints and the appended
  instructions, and is asked for a ``ProposedPlan`` through the provider's structured output
  (``response_schema``, generated from the models in ``intelligent_prompt``);
- an answer that is not JSON, does not fit the models, names unknown tasks or files, or has
  cycles goes back to the model with every problem, at most ``max_repairs`` times; after that a
  ``TaskFileError`` lists what was still wrong and what the calls cost (no session bills a
  failed parse);
- a usable answer is cached in ``cache_dir`` under a hash of the prompt version, provider,
  model and the whole request text: parsing the same input again makes no provider call. An
  answer that ``scrub`` (the session's redactor) would change holds a secret and is not cached:
  cached redacted, it would run altered; cached as it is, the secret would sit in ``.aca``;
- what the parse's calls cost is kept with the cache entry as ``unbilled`` until a session
  bills it (``mark_parse_billed``): the parse made before a session exists (the command line
  parses, then the flow reads the cache) is billed once, to the session made from it, and a
  later cache hit costs nothing;
- only ``TaskFileError`` (bad file, unusable plan, items lost under ``strict``) and the
  providers' ``ProviderError`` are raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aca_flows._files import write_json_atomic
from aca_flows._words import counted, format_cost
from aca_flows.errors import ProviderError, TaskFileError
from aca_flows.plan.intelligent_prompt import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    ProposedPlan,
    ProposedTask,
    proposal_schema,
    repair_prompt,
    user_prompt,
)
from aca_flows.plan.intelligent_source import (
    ParseSource,
    SourceItem,
    lost_items,
    read_parse_source,
    source_items,
)
from aca_flows.plan.models import ExecutionPlan, FileRef, Task, TaskMetadata
from aca_flows.plan.toml_loader import pydantic_problems
from aca_flows.plan.validate import plan_problems
from aca_flows.prices import unpriced_call
from aca_flows.providers.base import Message, Provider, ProviderRequest, ProviderResponse, Usage

if TYPE_CHECKING:
    from aca_flows.providers.retry import RetryingProvider, RetryWaitCallback
    from aca_flows.settings import AcaConfig

__all__ = [
    "CACHE_SCHEMA_VERSION",
    "IntelligentParse",
    "ParseSpend",
    "mark_parse_billed",
    "parse_cache_dir",
    "parse_cache_key",
    "parse_provider",
    "parse_request_key",
    "parse_task_file",
    "parse_with_llm",
    "parse_with_llm_sync",
    "proposal_to_plan",
]

CACHE_SCHEMA_VERSION = 1


def parse_cache_dir() -> Path:
    """Where parses are cached: ``~/.aca/parse_cache``, the user's own, never a repository's
    ``.aca``. A repository can commit files there, and an entry is read as the plan to run (a
    Prefect result record as what its own metadata names: a pickle runs code as it loads)."""
    return Path.home() / ".aca" / "parse_cache"


# Claude Code runs an agent: it plans from the request alone, as the other providers do (the
# task file and the files it references, read by the rules of ``plan.source``), with no tool,
# in an empty folder. Given the task file's folder to read, it read what no agent may: the
# checkout's .env, a CI token in .git/config, .aca, and its plan carried them into prompts.
_CLAUDE_CODE_OPTIONS = {
    "permission_mode": "default",
    "allowed_tools": [],
    "resumable": False,  # its transcript (the task file, the context) is not kept in ~/.claude
}


def _empty_folder() -> Path:
    empty = Path.home() / ".aca" / "parse-empty"
    empty.mkdir(parents=True, exist_ok=True)
    return empty


class ParseSpend(BaseModel):
    """What the provider calls of one parse cost (tokens and USD), all of them together."""

    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str = ""
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    calls: int = 0
    unpriced: bool = False
    """Its calls were paid, but aca has no price for the model: their $0 is not their cost."""


@dataclass(frozen=True)
class IntelligentParse:
    """The outcome of one parse: the plan, what it lost, and what it cost."""

    plan: ExecutionPlan
    lost: list[SourceItem]
    provider_calls: int
    from_cache: bool
    cost_usd: float
    cache_file: Path | None
    unbilled: ParseSpend | None = None
    """Spend of this plan's parse that no session has billed yet (this parse's own calls, or
    those of the parse that filled the cache). Bill it, then call ``mark_parse_billed``."""
    unpriced_calls: int = 0
    """This parse's calls that ``cost_usd`` leaves out: aca has no price for their model."""

    @property
    def spent(self) -> str:
        """What this parse's own calls cost, as a reader is told it (``$0.0000`` from a
        cache)."""
        return format_cost(self.cost_usd, self.unpriced_calls)

    def lost_warning(self) -> str:
        """A warning listing the lost items (empty when nothing was lost)."""
        if not self.lost:
            return ""
        listed = "\n".join(f"  - {item}" for item in self.lost)
        return (
            f"{len(self.lost)} item(s) of the task file appear nowhere in the plan:\n{listed}\n"
            "Review the plan (--dump-plan) and add them, or add --context to guide the parser."
        )


class _UnusableAnswer(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


async def parse_with_llm(
    path: Path,
    provider: Provider,
    *,
    model: str | None = None,
    context: Sequence[str] = (),
    append_system_prompt: str | None = None,
    cache_dir: Path | None = None,
    strict: bool = False,
    max_repairs: int = 2,
    scrub: Callable[[Any], Any] | None = None,
    free: bool = False,
) -> IntelligentParse:
    """Parse the Markdown task file ``path`` into a plan with ``provider`` (see module doc);
    ``free``: its calls cost nothing (a local Ollama), so a $0 call is not unpriced."""
    source = read_parse_source(path)
    context = list(context)
    prompt = user_prompt(source, context, append_system_prompt)
    cache_model = _cache_model(provider, model)
    key = parse_cache_key(provider.name, cache_model, SYSTEM_PROMPT, prompt)
    cache_file = cache_dir / f"{key}.json" if cache_dir is not None else None
    proposal, unbilled = _read_cache(cache_file, source)
    calls, cost, unpriced = 0, 0.0, 0
    if proposal is None:
        unbilled = ParseSpend(provider=provider.name, model=cache_model or "")
        messages = [Message(role="user", text=prompt)]
        schema = proposal_schema()
        options = _CLAUDE_CODE_OPTIONS | {"cwd": str(_empty_folder())}
        problems: list[str] = []
        for _ in range(max_repairs + 1):
            request = ProviderRequest(
                system=SYSTEM_PROMPT,
                messages=messages,
                model=model,
                response_schema=schema,
                options=options if provider.name == "claude-code" else {},
            )
            try:
                response = await provider.complete(request)
            except ProviderError as exc:
                _name_spend_in(exc, provider.name, free, calls, cost, unpriced)
                raise
            calls, cost = calls + 1, cost + response.cost_usd
            unpriced += _unpriced(provider.name, response, free)
            unbilled = unbilled.model_copy(
                update={
                    "model": unbilled.model or response.model,
                    "usage": unbilled.usage + response.usage,
                    "cost_usd": cost,
                    "calls": calls,
                    "unpriced": unpriced > 0,
                }
            )
            try:
                proposal = _read_answer(response.text, source)
                break
            except _UnusableAnswer as unusable:
                problems = unusable.problems
                if response.stop_reason == "max_tokens":
                    problems.append(
                        "the answer was cut off at the output limit; raise "
                        f"[providers.{provider.name}] max_tokens"
                    )
            messages = [
                *messages,
                Message(role="assistant", text=response.text or "(an empty answer)"),
                Message(role="user", text=repair_prompt(problems)),
            ]
        else:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise TaskFileError(
                f"{path}: the intelligent parser ({provider.name}) gave no usable plan after "
                f"{calls} attempt(s) ({_spent(calls, cost, unpriced)} spent); the last answer "
                f"had these problems:\n{listed}\n"
                "Run again, guide it with --context, or leave out --use-intelligent-parser "
                f"for the deterministic parser (`aca plan show {path}` shows its plan)."
            )
        _write_cache(cache_file, proposal, provider.name, cache_model, path, scrub, unbilled)
    plan = proposal_to_plan(proposal, source, context, append_system_prompt)
    lost = lost_items(plan, source_items(source.text))
    parse = IntelligentParse(plan, lost, calls, calls == 0, cost, cache_file, unbilled, unpriced)
    if lost and strict:
        spent = f"\nSpent on this parse: {_spent(calls, cost, unpriced)}." if calls else ""
        raise TaskFileError(f"{path}: --strict: {parse.lost_warning()}{spent}")
    return parse


def _name_spend_in(
    error: ProviderError, provider: str, free: bool, calls: int, cost: float, unpriced: int
) -> None:
    """The message of ``error``, a parse's failed call, names what the parse had spent by then:
    the calls before it, and this one if it was paid for."""
    if isinstance(error.billed, ProviderResponse):
        calls, cost = calls + 1, cost + error.billed.cost_usd
        unpriced += _unpriced(provider, error.billed, free)
    if calls and error.args:
        error.args = (f"{error.args[0]} (the parse had spent {_spent(calls, cost, unpriced)})",)


def _unpriced(provider: str, response: ProviderResponse, free: bool) -> int:
    return unpriced_call(provider, response.cost_usd, response.usage.total_tokens, free=free)


def _spent(calls: int, cost: float, unpriced: int) -> str:
    """A failed parse's spend, for its message: no session exists to bill it to, so the
    message is where the user learns what the failure cost."""
    return f"{counted(calls, 'call')}, {format_cost(cost, unpriced)}"


def parse_with_llm_sync(path: Path, provider: Provider, **kwargs) -> IntelligentParse:
    """``parse_with_llm`` from synchronous code, also when an event loop is already running
    (inside a flow): then the parse runs on its own loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(parse_with_llm(path, provider, **kwargs))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, parse_with_llm(path, provider, **kwargs)).result()


def parse_task_file(
    task_file: Path,
    config: AcaConfig,
    *,
    cache_dir: Path,
    environ: Mapping[str, str] | None = None,
    scrub: Callable[[Any], Any] | None = None,
    on_retry: RetryWaitCallback | None = None,
    context: Sequence[str] = (),
    append_system_prompt: str | None = None,
    strict: bool = False,
) -> IntelligentParse:
    """``task_file`` parsed with the configured provider and model (``parse_provider``): the
    command line's parse, which leaves its answer in the cache for the flow's."""
    from aca_flows.flows.unpriced import free_provider

    return parse_with_llm_sync(
        task_file,
        parse_provider(config, environ=environ, scrub=scrub, on_retry=on_retry),
        model=config.session.model,
        context=context,
        append_system_prompt=append_system_prompt,
        cache_dir=cache_dir,
        scrub=scrub,
        strict=strict,
        free=free_provider(config.session.provider, config),
    )


def parse_provider(
    config: AcaConfig,
    *,
    environ: Mapping[str, str] | None = None,
    scrub: Callable[[Any], Any] | None = None,
    on_retry: RetryWaitCallback | None = None,
) -> RetryingProvider:
    """The provider every parse calls: the configured one, each call retried as ``[session]``
    says (``on_retry`` hears of each wait). The model is ``config.session.model``."""
    from aca_flows.providers import get_provider
    from aca_flows.providers.retry import with_call_retries

    provider = get_provider(config.session.provider, config, environ=environ, scrub=scrub)
    return with_call_retries(provider, config.session, on_retry)


def parse_request_key(
    path: Path,
    provider: Provider,
    *,
    model: str | None = None,
    context: Sequence[str] = (),
    append_system_prompt: str | None = None,
) -> str:
    """The cache key ``parse_with_llm`` gives this parse: the task file's text, the files it
    references, the context, the instructions, the provider and its model, hashed."""
    prompt = user_prompt(read_parse_source(path), list(context), append_system_prompt)
    return parse_cache_key(provider.name, _cache_model(provider, model), SYSTEM_PROMPT, prompt)


def _cache_model(provider: Provider, model: str | None) -> str | None:
    # The model the provider will really use, so a changed default is a different entry.
    return model or getattr(provider, "model", None)


def parse_cache_key(provider: str, model: str | None, system: str, prompt: str) -> str:
    """The cache key: prompt version, provider, model and the whole request text, hashed."""
    material = json.dumps(
        {
            "prompt_version": PROMPT_VERSION,
            "provider": provider,
            "model": model or "(provider default)",
            "system": system,
            "prompt": prompt,
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def proposal_to_plan(
    proposal: ProposedPlan,
    source: ParseSource,
    context: Sequence[str] = (),
    append_system_prompt: str | None = None,
) -> ExecutionPlan:
    """The proposal as an ordinary execution plan: a flat task list with parent/child links.

    The user's ``context`` follows the context the model kept; the estimated duration ends
    the task's description (the plan models have no field for it).
    """
    tasks: list[Task] = []

    def add(proposed: ProposedTask, parent_id: str | None) -> None:
        description = proposed.description.strip()
        if proposed.estimated_duration:
            duration = f"Estimated duration: {proposed.estimated_duration}"
            description = f"{description}\n\n{duration}" if description else duration
        refs = [
            FileRef(path=name, content=source.references.get(name))
            for name in dict.fromkeys(proposed.files)
        ]
        tasks.append(
            Task(
                id=proposed.id,
                title=proposed.title.strip(),
                description=description,
                parent_id=parent_id,
                children=[s.id for s in proposed.subtasks],
                dependencies=list(dict.fromkeys(proposed.depends_on)),
                metadata=TaskMetadata(
                    priority=proposed.priority,
                    estimated_complexity=proposed.complexity,
                    file_refs=refs,
                ),
            )
        )
        for subtask in proposed.subtasks:
            add(subtask, proposed.id)

    for proposed in proposal.tasks:
        add(proposed, None)
    return ExecutionPlan(
        name=proposal.name.strip(),
        description=proposal.description.strip(),
        strategy=proposal.strategy,
        context_hints=[*proposal.context, *context],
        append_system_prompt=append_system_prompt,
        tasks=tasks,
    )


def _read_answer(text: str, source: ParseSource) -> ProposedPlan:
    """The model's answer as a proposal whose plan is valid, or ``_UnusableAnswer``."""
    try:
        data = json.loads(_without_code_fence(text))
    except json.JSONDecodeError as exc:
        raise _UnusableAnswer(
            [
                f"the answer is not valid JSON ({exc.msg} at line {exc.lineno}, "
                f"column {exc.colno}); answer with the JSON object only"
            ]
        ) from None
    try:
        proposal = ProposedPlan.model_validate(data)
    except ValidationError as exc:
        raise _UnusableAnswer(pydantic_problems(exc).split("; ")) from None
    problems = [
        f"task '{task.id}' names file '{name}', which the task file does not reference"
        for task in _walk(proposal.tasks)
        for name in task.files
        if name not in source.references
    ]
    plan = proposal_to_plan(proposal, source)
    problems += plan_problems(plan)
    if problems:
        raise _UnusableAnswer(problems)
    return proposal


def _walk(tasks: list[ProposedTask]):
    for task in tasks:
        yield task
        yield from _walk(task.subtasks)


def _without_code_fence(text: str) -> str:
    """Models sometimes wrap JSON in a Markdown code fence despite being told not to."""
    match = re.fullmatch(r"\s*```(?:json)?\s*\n(.*)\n\s*```\s*", text, flags=re.DOTALL)
    return match.group(1) if match else text


def _read_cache(
    cache_file: Path | None, source: ParseSource
) -> tuple[ProposedPlan | None, ParseSpend | None]:
    """The cached proposal and its unbilled spend; ``(None, None)`` for a missing, unreadable
    or outdated entry (a miss)."""
    if cache_file is None or not cache_file.is_file():
        return None, None
    try:
        entry = json.loads(cache_file.read_text(encoding="utf-8"))
        if entry.get("schema_version") != CACHE_SCHEMA_VERSION:
            return None, None
        proposal = _read_answer(json.dumps(entry["proposal"]), source)
        unbilled = entry.get("unbilled")
        return proposal, ParseSpend.model_validate(unbilled) if unbilled else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, _UnusableAnswer):
        return None, None


def mark_parse_billed(parse: IntelligentParse) -> None:
    """Record in the cache entry that a session billed the parse's spend: later sessions made
    from the same entry are billed nothing (a cache hit costs nothing)."""
    if parse.cache_file is None or parse.unbilled is None:
        return
    try:
        entry = json.loads(parse.cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no entry (it could not be written): nothing else can bill this parse
    if isinstance(entry, dict) and entry.pop("unbilled", None) is not None:
        with contextlib.suppress(OSError):
            write_json_atomic(parse.cache_file, entry)


def _write_cache(
    cache_file: Path | None,
    proposal: ProposedPlan,
    provider: str,
    model: str | None,
    path: Path,
    scrub: Callable[[Any], Any] | None,
    unbilled: ParseSpend | None,
) -> None:
    if cache_file is None:
        return
    answer = proposal.model_dump(mode="json")
    if scrub is not None and scrub(answer) != answer:
        return  # holds a secret: see the module docstring
    entry = {
        "schema_version": CACHE_SCHEMA_VERSION,
        "prompt_version": PROMPT_VERSION,
        "provider": provider,
        "model": model,
        "task_file": str(path),
        "proposal": answer,
        "unbilled": unbilled.model_dump(mode="json") if unbilled else None,
    }
    # A cache that cannot be written costs a provider call next time, nothing more.
    with contextlib.suppress(OSError):
        write_json_atomic(cache_file, entry)
