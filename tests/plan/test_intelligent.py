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

COMPAT = Path(__file__).resolve().parents[3] / "shared" / "compat" / "aca-original"
TEST6 = COMPAT / "test6-nested-complex-tasks" / "dependencies-test.md"

_PHASES = [
    ("database-setup", "Database Setup", [], "1 week", "None (starting point)",
     ["Set up PostgreSQL database", "Create schema and tables",
      "Configure connection pooling", "Set up backups"]),
    ("api-server", "API Server Implementation", ["database-setup"], "2 weeks",
     "Requires Database Setup (task #1) to be complete",
     ["Build REST API endpoints", "Implement authentication middleware",
      "Add request validation", "Set up error handling"]),
    ("frontend", "Frontend Application", ["api-server"], "3 weeks",
     "Requires API Server (task #2) to be operational",
     ["Create React application structure", "Implement UI components",
      "Add state management (Redux)", "Connect to API endpoints"]),
    ("integration-testing", "Integration Testing", ["api-server", "frontend"], "1 week",
     "Requires both API Server (task #2) and Frontend (task #3)",
     ["Write integration tests for API", "Add end-to-end tests", "Set up CI/CD pipeline",
      "Configure test database"]),
    ("deployment", "Deployment",
     ["database-setup", "api-server", "frontend", "integration-testing"], "1 week",
     "All previous tasks must be complete (tasks #1, #2, #3, #4)",
     ["Configure production environment", "Set up monitoring and alerts",
      "Deploy database migrations", "Deploy application"]),
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
        "name": "Project Setup with Dependencies",
        "description": "Core Tasks of the project setup.",
        "strategy": "sequential",
        "context": [
            "Execution Notes: This is a sequential waterfall-style project where each phase "
            "depends on the previous one completing successfully. The total timeline is "
            "approximately 8 weeks with proper dependency management."
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
    database = plan.task("database-setup")
    assert [plan.task(c).title for c in database.children] == _PHASES[0][5]
    assert plan.task("database-setup-4").parent_id == "database-setup"
    assert "Estimated duration: 1 week" in database.description
    assert database.metadata.priority.value == "high"
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
        ("unknown dependency", "depends on unknown task 'databse-setup'"),
    ],
)
def test_an_unusable_answer_is_repaired_in_a_second_round(
    llm_server,  # noqa: F811
    first_answer,
    error,
):
    if first_answer == "unknown dependency":
        wrong = dependencies_proposal()
        wrong["tasks"][1]["depends_on"] = ["databse-setup"]
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
    cyclic["tasks"][0]["depends_on"] = ["deployment"]
    for _ in range(3):
        llm_server.anthropic.enqueue(**respond(cyclic))

    with pytest.raises(TaskFileError) as caught:
        parse(TEST6, max_repairs=2)

    message = str(caught.value)
    assert "no usable plan after 3 attempt(s)" in message
    assert "dependency cycle: database-setup -> deployment -> database-setup" in message
    assert "--force-naive-parser" in message
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
    del lossy["tasks"][0]["subtasks"][3]  # "Set up backups"
    lossy["context"] = []  # the execution notes
    llm_server.anthropic.enqueue(**respond(lossy))

    result = parse(TEST6, cache_dir=tmp_path)

    lost = [(item.line, item.kind) for item in result.lost]
    assert lost == [(9, "list item"), (50, "heading"), (52, "paragraph")]
    warning = result.lost_warning()
    assert "3 item(s) of the task file appear nowhere in the plan" in warning
    assert "line 9 (list item): Set up backups" in warning
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
