"""The intelligent parser against the fake LLM server: the plan, the request, repairs, the cache."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest

from aca_flows.errors import PermanentProviderError, TaskFileError
from aca_flows.plan import load_execution_plan, plan_to_text
from aca_flows.plan.intelligent import parse_with_llm
from aca_flows.plan.intelligent_prompt import proposal_schema
from aca_flows.plan.validate import plan_problems
from aca_flows.providers import get_provider
from tests.fakes.llm_server import FakeLLMServer, llm_server  # noqa: F401  (fixture)
from tests.fixtures import COMPAT

TEST6 = COMPAT / "nested-complex-tasks" / "dependencies-test.md"

_PHASES = [
    ("storage-layer", "Storage Layer", [], "3 days", "None (first step)",
     ["Provision a SQLite database", "Write the table definitions",
      "Add a migration runner", "Schedule nightly exports"]),
    ("service-endpoints", "Service Endpoints", ["storage-layer"], "1 week",
     "Requires Storage Layer (task #1) to be finished",
     ["Expose JSON endpoints", "Check request tokens",
      "Validate request bodies", "Return structured errors"]),
    ("web-dashboard", "Web Dashboard", ["service-endpoints"], "2 weeks",
     "Requires Service Endpoints (task #2) to be deployed",
     ["Scaffold the dashboard pages", "Build chart widgets",
      "Keep filters in the URL", "Call the service endpoints"]),
    ("e2e-checks", "End-to-End Checks", ["service-endpoints", "web-dashboard"], "4 days",
     "Requires both Service Endpoints (task #2) and Web Dashboard (task #3)",
     ["Script the browser scenarios", "Add contract tests", "Wire the checks into CI",
      "Seed a fixture database"]),
    ("launch", "Launch",
     ["storage-layer", "service-endpoints", "web-dashboard", "e2e-checks"], "2 days",
     "All previous tasks must be done (tasks #1, #2, #3, #4)",
     ["Prepare the hosting environment", "Configure alerting",
      "Apply the migrations in production", "Ship the release"]),
]  # fmt: skip

DEPENDENCIES = {task_id: deps for task_id, _, deps, *_ in _PHASES}


def dependencies_proposal() -> dict:
    """What a good model answers for test6: five phases, their bullets as subtasks."""
    tasks = []
    for number, (task_id, title, deps, duration, dep_text, bullets) in enumerate(_PHASES, 1):
        tasks.append(
            {
                "id": task_id,
                "title": f"{number}. {title}",
                "description": f"Dependencies: {dep_text}",
                "depends_on": deps,
                "priority": "high" if number == 1 else "normal",
                "complexity": "moderate",
                "estimated_duration": duration,
                "subtasks": [
                    {"id": f"{task_id}-{n}", "title": bullet} for n, bullet in enumerate(bullets, 1)
                ],
            }
        )
    return {
        "name": "Release Pipeline with Dependencies",
        "description": "Core Tasks of the release pipeline.",
        "strategy": "sequential",
        "context": [
            "Execution Notes: This is a strictly ordered project: each phase starts only after "
            "the one before it has been completed and reviewed. Expect about five weeks end to "
            "end when every dependency is respected."
        ],
        "tasks": tasks,
    }


def respond(proposal: dict) -> dict:
    """An Anthropic reply: the forced ``respond`` tool called with ``proposal``."""
    return {"tool_calls": [{"name": "respond", "arguments": proposal}]}


def parse(path: Path, provider_name: str = "anthropic", **kwargs):
    return asyncio.run(parse_with_llm(path, get_provider(provider_name), **kwargs))


def test_test6_parses_to_five_phases_with_their_dependencies(llm_server, tmp_path):  # noqa: F811
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))

    result = parse(
        TEST6,
        context=["project context"],
        append_system_prompt="additional instructions",
        cache_dir=tmp_path / "cache",
    )

    plan = result.plan
    assert [t.id for t in plan.roots()] == list(DEPENDENCIES)
    assert {t.id: t.dependencies for t in plan.roots()} == DEPENDENCIES
    storage = plan.task("storage-layer")
    assert [plan.task(c).title for c in storage.children] == _PHASES[0][5]
    assert plan.task("storage-layer-4").parent_id == "storage-layer"
    assert "Estimated duration: 3 days" in storage.description
    assert storage.metadata.priority.value == "high"
    assert plan.strategy.value == "sequential"
    assert plan.context_hints[-1] == "project context"
    assert plan.append_system_prompt == "additional instructions"
    assert result.lost == [] and result.provider_calls == 1 and not result.from_cache
    # An ordinary plan: valid, and it round-trips through --dump-plan / --execution-plan.
    assert plan_problems(plan) == []
    dumped = tmp_path / "plan.json"
    dumped.write_text(plan_to_text(plan, ".json"))
    assert load_execution_plan(dumped) == plan

    (request,) = llm_server.anthropic.requests
    body = request.json
    respond_tool = body["tools"][-1]
    assert respond_tool["name"] == "respond"
    assert respond_tool["input_schema"] == proposal_schema()
    assert body["tool_choice"] == {"type": "tool", "name": "respond"}
    sent = body["messages"][0]["content"]
    sent = sent if isinstance(sent, str) else "".join(block["text"] for block in sent)
    assert TEST6.read_text().strip() in sent
    assert "- project context" in sent and "additional instructions" in sent


def test_referenced_files_are_inlined_and_attached(llm_server, tmp_path):  # noqa: F811
    (tmp_path / "spec.md").write_text("The greeting must be polite.\n")
    task_file = tmp_path / "tasks.md"
    task_file.write_text("# Greeter\n\n- Write greet.py -> spec.md\n")
    proposal = {
        "name": "Greeter",
        "tasks": [{"id": "greet", "title": "Write greet.py", "files": ["spec.md"]}],
    }
    llm_server.anthropic.enqueue(**respond(proposal))

    plan = parse(task_file).plan

    assert plan.task("greet").metadata.file_refs[0].content == "The greeting must be polite.\n"
    assert "The greeting must be polite." in json.dumps(llm_server.anthropic.requests[0].json)


@pytest.mark.parametrize(
    ("first_answer", "error"),
    [
        ({"text": 'Here is the plan: {"name": "Project"'}, "the answer is not valid JSON"),
        ("unknown dependency", "depends on unknown task 'storge-layer'"),
        ("a title of spaces", "the title is only spaces"),  # not a traceback making its Task
    ],
)
def test_an_unusable_answer_is_repaired_in_a_second_round(
    llm_server,  # noqa: F811
    first_answer,
    error,
):
    if first_answer == "unknown dependency":
        wrong = dependencies_proposal()
        wrong["tasks"][1]["depends_on"] = ["storge-layer"]
        first_answer = respond(wrong)
    if first_answer == "a title of spaces":
        wrong = dependencies_proposal()
        wrong["tasks"][1]["title"] = "   "
        first_answer = respond(wrong)
    llm_server.anthropic.enqueue(**first_answer)
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))

    result = parse(TEST6)

    assert result.provider_calls == 2
    assert {t.id: t.dependencies for t in result.plan.roots()} == DEPENDENCIES
    first, second = llm_server.anthropic.requests
    messages = second.json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert error in json.dumps(messages[2])
    assert second.json["tools"][-1]["input_schema"] == proposal_schema()


def test_an_answer_that_stays_cyclic_fails_naming_the_cycle(llm_server):  # noqa: F811
    cyclic = dependencies_proposal()
    cyclic["tasks"][0]["depends_on"] = ["launch"]
    for _ in range(3):
        llm_server.anthropic.enqueue(**respond(cyclic))

    with pytest.raises(TaskFileError) as caught:
        parse(TEST6, max_repairs=2)

    message = str(caught.value)
    assert "no usable plan after 3 attempt(s)" in message
    assert "dependency cycle: storage-layer -> launch -> storage-layer" in message
    # The deterministic parser is the default: --force-naive-parser beside the flag is refused.
    assert "leave out --use-intelligent-parser" in message and "--force-naive" not in message
    assert f"`aca plan show {TEST6}` shows its plan" in message
    assert len(llm_server.anthropic.requests) == 3


def test_a_second_parse_of_the_same_input_makes_no_call(llm_server, tmp_path):  # noqa: F811
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    cache = tmp_path / ".aca" / "parse_cache"

    first = parse(TEST6, cache_dir=cache)
    second = parse(TEST6, cache_dir=cache)

    assert len(llm_server.anthropic.requests) == 1
    assert second.from_cache and second.provider_calls == 0
    assert second.plan.model_dump(exclude={"tasks"}) == first.plan.model_dump(exclude={"tasks"})
    assert [t.id for t in second.plan.tasks] == [t.id for t in first.plan.tasks]
    assert len(list(cache.glob("*.json"))) == 1
    # Other context, or another model, is another question: it is asked.
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    parse(TEST6, cache_dir=cache, context=["uses Django"])
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    parse(TEST6, cache_dir=cache, model="claude-haiku-4-5")
    assert len(llm_server.anthropic.requests) == 3


def test_a_corrupt_cache_entry_is_asked_again(llm_server, tmp_path):  # noqa: F811
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))
    parse(TEST6, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text("{not json")
    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))

    assert parse(TEST6, cache_dir=tmp_path).provider_calls == 1


def test_lost_items_are_warned_about_and_refused_with_strict(llm_server, tmp_path):  # noqa: F811
    lossy = copy.deepcopy(dependencies_proposal())
    del lossy["tasks"][0]["subtasks"][3]  # "Schedule nightly exports"
    lossy["context"] = []  # the execution notes
    llm_server.anthropic.enqueue(**respond(lossy))

    result = parse(TEST6, cache_dir=tmp_path)

    lost = [(item.line, item.kind) for item in result.lost]
    assert lost == [(9, "list item"), (50, "heading"), (52, "paragraph")]
    warning = result.lost_warning()
    assert "3 item(s) of the task file appear nowhere in the plan" in warning
    assert "line 9 (list item): Schedule nightly exports" in warning
    with pytest.raises(TaskFileError, match="--strict: 3 item"):
        parse(TEST6, cache_dir=tmp_path, strict=True)  # from the cache: still refused
    assert len(llm_server.anthropic.requests) == 1


@pytest.mark.parametrize("provider_name", ["openai", "ollama"])
def test_structured_output_for_openai_and_ollama(llm_server, provider_name):  # noqa: F811
    queue = getattr(llm_server, provider_name)
    queue.enqueue(text=json.dumps(dependencies_proposal()))

    result = parse(TEST6, provider_name)

    assert {t.id: t.dependencies for t in result.plan.roots()} == DEPENDENCIES
    body = queue.requests[0].json
    if provider_name == "openai":
        assert body["response_format"]["type"] == "json_schema"
        assert body["response_format"]["json_schema"]["schema"] == proposal_schema()
    else:
        assert body["format"] == proposal_schema()


def test_claude_code_is_given_the_schema_as_its_json_schema_option():
    from aca_flows.plan.intelligent_prompt import SYSTEM_PROMPT
    from aca_flows.providers.base import Message, ProviderRequest
    from aca_flows.providers.claude_code import ClaudeCodeProvider

    request = ProviderRequest(
        system=SYSTEM_PROMPT,
        messages=[Message(role="user", text="plan this")],
        response_schema=proposal_schema(),
    )
    options = ClaudeCodeProvider().build_options(request)

    assert options.output_format == {"type": "json_schema", "schema": proposal_schema()}
    assert (
        ClaudeCodeProvider()
        .build_options(request.model_copy(update={"response_schema": None}))
        .output_format
        is None
    )


def test_a_missing_referenced_file_is_a_task_file_error_before_any_call(
    llm_server,  # noqa: F811
    tmp_path,
):
    task_file = tmp_path / "tasks.md"
    task_file.write_text("- Write the README -> missing.md\n")

    with pytest.raises(TaskFileError, match="referenced file 'missing.md' does not exist"):
        parse(task_file)
    assert llm_server.anthropic.requests == []


def test_a_rename_arrow_is_sent_as_text_not_read_as_a_file(tmp_path):
    # The parser read every `-> X` as a file: `Rename getUser -> fetchUser` (which the
    # deterministic loader keeps as a title) stopped the parse, "'fetchUser' does not exist".
    from aca_flows.plan.intelligent_source import read_parse_source

    task_file = tmp_path / "tasks.md"
    task_file.write_text("- Rename getUser -> fetchUser\n- Rename utils.py -> helpers.py\n")
    assert read_parse_source(task_file).references == {}


def test_the_sync_form_works_inside_a_running_event_loop(llm_server, tmp_path):  # noqa: F811
    """The flow is async and parses from synchronous setup code."""
    from aca_flows.plan.intelligent import parse_with_llm_sync

    llm_server.anthropic.enqueue(**respond(dependencies_proposal()))

    async def inside_a_flow():
        return parse_with_llm_sync(TEST6, get_provider("anthropic"), cache_dir=tmp_path)

    result = asyncio.run(inside_a_flow())
    assert {t.id: t.dependencies for t in result.plan.roots()} == DEPENDENCIES


def test_an_answer_cut_off_at_the_output_limit_says_so(llm_server):  # noqa: F811
    for _ in range(2):
        llm_server.anthropic.enqueue(
            text='{"name": "Project Setup", "tasks": [', stop_reason="max_tokens"
        )

    # A cut-off answer is a provider error naming the fix; asking again cannot help.
    with pytest.raises(PermanentProviderError, match=r"Raise \[providers.anthropic\] max_tokens"):
        parse(TEST6, max_repairs=1)
    assert len(llm_server.anthropic.requests) == 1


def test_an_answer_holding_a_secret_is_used_but_never_cached(llm_server, tmp_path):  # noqa: F811
    from aca_flows.session.redact import redact

    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Deploy\n\nCall the service with SECRET=abcdefgh12 and check it.\n")
    proposal = {
        "name": "Deploy",
        "tasks": [{"id": "call", "title": "Call the service", "description": "SECRET=abcdefgh12"}],
    }
    cache = tmp_path / ".aca" / "parse_cache"
    for _ in range(2):
        llm_server.anthropic.enqueue(**respond(proposal))

    first = parse(tasks, cache_dir=cache, scrub=redact)
    second = parse(tasks, cache_dir=cache, scrub=redact)

    # The plan that runs keeps the text; .aca keeps nothing of it, so the answer is asked again.
    assert first.plan.task("call").description.startswith("SECRET=abcdefgh12")
    assert not second.from_cache and len(llm_server.anthropic.requests) == 2
    assert not cache.exists() or list(cache.iterdir()) == []
    # Without a secret the answer is cached as before.
    tasks.write_text("# Deploy\n\nCall the service and check it.\n")
    proposal["tasks"][0]["description"] = "check it"
    llm_server.anthropic.enqueue(**respond(proposal))
    parse(tasks, cache_dir=cache, scrub=redact)
    assert parse(tasks, cache_dir=cache, scrub=redact).from_cache


def test_the_parse_spend_stays_unbilled_in_the_cache_until_a_session_bills_it(
    llm_server,  # noqa: F811
    tmp_path,
):
    from aca_flows.plan.intelligent import mark_parse_billed

    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Files\n\n- write a.txt\n")
    proposal = {
        "name": "Files",
        "tasks": [{"id": "a", "title": "write a.txt", "depends_on": ["nope"]}],  # unknown
    }
    llm_server.anthropic.enqueue(
        **respond(copy.deepcopy(proposal)), usage={"input_tokens": 70, "output_tokens": 9}
    )
    proposal["tasks"][0]["depends_on"] = []
    llm_server.anthropic.enqueue(
        **respond(proposal), usage={"input_tokens": 90, "output_tokens": 11}
    )
    cache = tmp_path / "cache"

    first = parse(tasks, cache_dir=cache, model="claude-sonnet-4-6")
    # Both calls, the repaired one too, are the parse's spend.
    assert first.unbilled.calls == 2
    assert (first.unbilled.usage.input_tokens, first.unbilled.usage.output_tokens) == (160, 20)
    assert first.unbilled.cost_usd == pytest.approx(first.cost_usd) and first.cost_usd > 0
    # A hit before any session billed it hands the same spend over (the CLI's dry run, then
    # the flow's parse) ...
    hit = parse(tasks, cache_dir=cache, model="claude-sonnet-4-6")
    assert hit.from_cache and hit.unbilled == first.unbilled
    # ... and once a session has billed it, a hit costs nothing.
    mark_parse_billed(hit)
    again = parse(tasks, cache_dir=cache, model="claude-sonnet-4-6")
    assert again.from_cache and again.unbilled is None
    assert len(llm_server.anthropic.requests) == 2


def test_a_claude_code_parse_leaves_no_transcript_in_the_home(tmp_path, monkeypatch):
    # The real claude, which keeps every conversation in ~/.claude/projects/<its cwd>/.
    from aca_flows.settings import AcaConfig

    config = AcaConfig.model_validate({"providers": {"claude-code": {"model": "claude-test"}}})
    tasks = tmp_path / "project" / "tasks.md"
    tasks.parent.mkdir()
    tasks.write_text(TEST6.read_text())
    (tasks.parent / ".env").write_text("DOTENV_SECRET=MARK_env_52\n")
    with FakeLLMServer() as server:
        server.serve_claude_code(monkeypatch)
        server.anthropic.enqueue(
            tool_calls=[{"name": "StructuredOutput", "arguments": dependencies_proposal()}]
        )
        server.anthropic.enqueue(text="Done.")
        result = asyncio.run(
            parse_with_llm(tasks, get_provider("claude-code", config), context=["MARK_ctx_41"])
        )

    assert {t.id: t.dependencies for t in result.plan.roots()} == DEPENDENCIES
    # It plans from the request: no file tool, so nothing of the folder (a .env, .git) that
    # the rules of a reference keep from the model. With Read, a line of the task file had it
    # read the .env and carry the secret into the plan.
    (asked,) = [r for r in server.anthropic.requests if r.json.get("tools")]
    offered = {tool["name"] for tool in asked.json["tools"]}
    assert "StructuredOutput" in offered and not offered & {"Read", "Glob", "Grep", "Bash"}
    assert not any(b"MARK_env_52" in r.body for r in server.requests)
    home = Path.home()
    kept = [str(p) for p in home.rglob("*") if p.is_file() and b"MARK_ctx_41" in p.read_bytes()]
    assert kept == []
    # Nor does its sandbox leave empty placeholders (an empty package.json breaks npm there).
    assert sorted(p.name for p in tasks.parent.iterdir()) == [".env", "tasks.md"]
