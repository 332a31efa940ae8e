"""The intelligent parse as a task run of the flow: ``parse-task-file``.

With ``use_intelligent_parser`` the flow parses its Markdown task file in a task run named
``parse <file name>`` (task ``parse-task-file``), before the session exists: it shows in the
run graph with its logs (the call, the plan it made, items the plan lost, each retry of a
transient provider error), and its result is cached by Prefect under the same key the parser's
own cache uses: the task file's text, the files it references, the context, the appended
instructions, the provider and the model (``plan.intelligent.parse_request_key``). Results are
kept in ``~/.aca/parse_cache/prefect/`` (``parse_cache_dir``: never a repository's ``.aca``,
where a committed record would be loaded, as a pickle if it says so), so a later run of the
same file, in this process or another, is a ``Cached`` task run that calls no provider.

The parse's calls are billed to the session made from it (a ``call`` event with purpose
``parse`` on its ledger); a cached parse costs nothing and is billed to nobody. A result
holding a secret (one the redactor would change) is never stored: cached redacted it would
run altered, cached as it is the secret would sit in ``.aca``; such a file is parsed again
each time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.states import Failed, State
from prefect.transactions import get_transaction
from pydantic import BaseModel

from aca_flows.errors import AcaError
from aca_flows.plan.intelligent import (
    IntelligentParse,
    ParseSpend,
    parse_cache_dir,
    parse_request_key,
    parse_with_llm_sync,
)
from aca_flows.plan.intelligent_source import SourceItem
from aca_flows.plan.models import ExecutionPlan
from aca_flows.plan.render import plan_size
from aca_flows.providers.retry import RetryingProvider, describe_retry
from aca_flows.session.redact import redact, redact_text

__all__ = ["PARSE_TASK_NAME", "ParsedTaskFile", "parse_in_flow"]

PARSE_TASK_NAME = "parse-task-file"
# Prefect's result records, beside the parser's own cache entries.
RESULTS_FOLDER = "prefect"


class ParsedTaskFile(BaseModel):
    """What the parse task returns (and Prefect stores): the plan, the source items it lost,
    and the spend of the parse that no session has billed yet."""

    plan: ExecutionPlan
    lost: list[SourceItem]
    provider_calls: int
    cost_usd: float
    unbilled: ParseSpend | None
    cache_file: str | None
    unpriced_calls: int = 0

    def to_parse(self, from_prefect_cache: bool) -> IntelligentParse:
        return IntelligentParse(
            plan=self.plan,
            lost=self.lost,
            provider_calls=0 if from_prefect_cache else self.provider_calls,
            from_cache=from_prefect_cache or self.provider_calls == 0,
            cost_usd=0.0 if from_prefect_cache else self.cost_usd,
            cache_file=Path(self.cache_file) if self.cache_file else None,
            # A cached result's spend was billed by the run that made it.
            unbilled=None if from_prefect_cache else self.unbilled,
            unpriced_calls=0 if from_prefect_cache else self.unpriced_calls,
        )


def _by_parse_key(context, parameters: dict[str, Any]) -> str:
    return parameters["cache_key"]


@task(
    name=PARSE_TASK_NAME,
    cache_key_fn=_by_parse_key,
    persist_result=True,
    result_serializer="json",
    # Transient provider errors are retried on the call ([session] call_retries), like every
    # call of a task; a bad file or an unusable answer is not worth a second try.
    retries=0,
)
def parse_task_file_run(
    task_file: str,
    cache_key: str,
    provider: RetryingProvider,
    model: str | None,
    context: list[str],
    append_system_prompt: str | None,
    cache_dir: str,
    free: bool = False,
) -> ParsedTaskFile | State:
    """Parse ``task_file`` with ``provider`` into a plan (``cache_key``: the parse's key;
    ``free``: the provider's calls cost nothing)."""
    logger = get_run_logger()
    provider.on_wait = lambda seconds, error, number, retries: logger.warning(
        describe_retry(error, seconds, number, retries, "the parse's call")
    )
    logger.info(f"parsing {Path(task_file).name} with {provider.name} {model or ''}".rstrip())
    try:
        parse = parse_with_llm_sync(
            Path(task_file),
            provider,
            model=model,
            context=context,
            append_system_prompt=append_system_prompt,
            cache_dir=Path(cache_dir),
            scrub=redact,
            free=free,
        )
    except AcaError as exc:
        # Returned, not raised: Prefect would store a raised error under a key of its own,
        # and a failed parse has nothing worth keeping (its message may quote the answer).
        get_transaction().write_on_commit = False
        logger.error(redact_text(str(exc)))
        return Failed(message=redact_text(str(exc)), data=exc)
    how = "from the parser's cache" if parse.from_cache else f"{parse.provider_calls} call(s)"
    logger.info(f"plan {parse.plan.name!r}: {plan_size(parse.plan)}; {how}, {parse.spent}")
    if parse.lost:
        logger.warning(parse.lost_warning())
    parsed = ParsedTaskFile(
        plan=parse.plan,
        lost=parse.lost,
        provider_calls=parse.provider_calls,
        cost_usd=parse.cost_usd,
        unbilled=parse.unbilled,
        cache_file=str(parse.cache_file) if parse.cache_file else None,
        unpriced_calls=parse.unpriced_calls,
    )
    data = parsed.model_dump(mode="json")
    if redact(data) != data:
        # The result is written when the task run's transaction commits: not this one.
        get_transaction().write_on_commit = False
        logger.warning("the plan holds a secret: its parse is not cached")
    return parsed


def parse_in_flow(
    task_file: Path,
    provider: RetryingProvider,
    *,
    model: str | None,
    context: list[str],
    append_system_prompt: str | None,
    free: bool = False,
) -> IntelligentParse:
    """The parse, run as the flow's ``parse-task-file`` task run (``from_cache`` when Prefect
    served an earlier run's result). Raises what the parse raised."""
    key = parse_request_key(
        task_file,
        provider,
        model=model,
        context=context,
        append_system_prompt=append_system_prompt,
    )
    cache_dir = parse_cache_dir()
    runner = parse_task_file_run.with_options(
        # A callable: Prefect formats a string name with the parameters; a file name may hold
        # braces.
        task_run_name=lambda: f"parse {task_file.name}",
        result_storage=cache_dir / RESULTS_FOLDER,
        tags=["aca", f"provider:{provider.name}"],
    )
    state = runner(
        task_file=str(task_file),
        cache_key=key,
        provider=provider,
        model=model,
        context=list(context),
        append_system_prompt=append_system_prompt,
        cache_dir=str(cache_dir),
        free=free,
        return_state=True,
    )
    # _sync: called from synchronous code inside the flow's event loop.
    parsed = state.result(_sync=True)  # raises the parse's error if it failed
    return parsed.to_parse(from_prefect_cache=state.name == "Cached")
