"""What the docs list is what the code has, and each documented setting has a test of its effect.

The settings and task-file fields are read from the docs themselves (the example
configuration, the TOML task-file example, the attribute table, the flow's parameters), so a
field added to the code without docs, or documented without existing, fails here. ``EFFECTS``
names, for every documented setting and field, the tests that show it doing what the docs say;
a documented key without one fails too.
"""

from __future__ import annotations

import ast
import inspect
import re
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from aca_flows.config_loader import load_config
from aca_flows.errors import ConfigError
from aca_flows.plan.markdown_attributes import ATTRIBUTE_KEYS
from aca_flows.plan.models import SetupCommand
from aca_flows.plan.toml_loader import PlanSpec, TaskFileSpec, TaskSpec
from aca_flows.providers import get_provider
from aca_flows.settings import AcaConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

Key = tuple[str, ...]


def toml_block(doc: str, marker: str) -> str:
    """The ```toml block of ``docs/<doc>`` that contains ``marker``."""
    text = (DOCS / doc).read_text()
    blocks = re.findall(r"```toml\n(.*?)```", text, re.DOTALL)
    (block,) = [b for b in blocks if marker in b]
    return block


def flatten(data: dict, prefix: Key = ()) -> set[Key]:
    keys: set[Key] = set()
    for name, value in data.items():
        if isinstance(value, dict):
            keys |= flatten(value, (*prefix, name))
        else:
            keys.add((*prefix, name))
    return keys


def config_key(key: Key) -> Key:
    """``providers.anthropic.prices.<model>.input`` -> ``providers.*.prices.*.input``; a
    provider's own ``rate_limiting`` table is one setting (the same keys as [rate_limiting])."""
    if key[0] != "providers":
        return key
    key = ("providers", "*", *key[2:])
    if key[2:3] == ("prices",):
        key = (*key[:3], "*", *key[4:])
    if key[2:3] == ("rate_limiting",):
        key = key[:3]
    return key


def model_keys(model: type[BaseModel], prefix: Key = ()) -> set[Key]:
    keys: set[Key] = set()
    for name, field in model.model_fields.items():
        annotation, key = field.annotation, (*prefix, name)
        args = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= model_keys(annotation, key)
        elif typing.get_origin(annotation) is dict and issubclass(args[1], BaseModel):
            keys |= model_keys(args[1], (*key, "*"))
        else:
            keys.add(key)
    return keys


def documented_config_keys() -> set[Key]:
    return {
        config_key(k) for k in flatten(tomllib.loads(toml_block("configuration.md", "[session]")))
    }


def task_file_example() -> dict:
    return tomllib.loads(toml_block("task-files.md", "[[setup_commands]]"))


def documented_task_file_keys() -> set[Key]:
    data = task_file_example()
    return (
        {("plan", k) for k in data["plan"]}
        | {("setup_commands", k) for k in data["setup_commands"][0]}
        | {("tasks", k) for k in data["tasks"][0]}
    )


def documented_attributes() -> set[str]:
    text = (DOCS / "task-files.md").read_text()
    table = text.split("| attribute | meaning | example |", 1)[1].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def documented_flow_parameters() -> set[str]:
    text = (DOCS / "engine.md").read_text()
    sentence = text.split("Its parameters are validated:", 1)[1].split(".\n", 1)[0]
    return set(re.findall(r"`([a-z_]+)`", sentence))


# -- docs and code list the same things ------------------------------------------------------


def test_the_documented_configuration_loads(tmp_path):
    config_file = tmp_path / "aca.toml"
    config_file.write_text(toml_block("configuration.md", "[session]"))

    config = load_config(tmp_path, config_file, environ={}).config

    assert config.session.max_concurrent_tasks == 3
    assert config.provider("anthropic").prices["claude-sonnet-4-6"].cache_write == 3.75


def config_blocks() -> list[tuple[str, str]]:
    """Every TOML example of a configuration file in docs/ (not the task-file examples)."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.DOTALL):
            if "[[tasks]]" not in block and "[plan]" not in block:
                found.append((doc.name, block))
    return found


@pytest.mark.parametrize(("doc", "block"), config_blocks(), ids=lambda v: v[:20])
def test_every_configuration_example_in_the_docs_loads(tmp_path, doc, block):
    config_file = tmp_path / "aca.toml"
    config_file.write_text(block)

    load_config(tmp_path, config_file, environ={})


def test_every_setting_is_documented_and_every_documented_setting_exists():
    in_code = model_keys(AcaConfig)
    documented = documented_config_keys()
    assert sorted(documented - in_code) == [], "documented in docs/configuration.md, not in code"
    assert sorted(in_code - documented) == [], "in aca_flows/settings.py, not documented"


def test_the_documented_task_file_loads_and_lists_every_field():
    TaskFileSpec.model_validate(task_file_example())
    in_code = (
        {("plan", f) for f in PlanSpec.model_fields}
        | {("setup_commands", f) for f in SetupCommand.model_fields}
        | {("tasks", f) for f in TaskSpec.model_fields}
    )
    assert documented_task_file_keys() == in_code


def test_the_attribute_table_lists_exactly_the_attributes_the_loader_reads():
    assert documented_attributes() == {"#id", *ATTRIBUTE_KEYS}


def test_the_flow_parameters_are_the_documented_ones():
    from aca_flows.flows.aca_run import aca_run

    assert documented_flow_parameters() == set(inspect.signature(aca_run.fn).parameters)


# -- every documented setting has a test of its effect ----------------------------------------

FLOWS = "tests/flows/test_run_setup.py"
SANDBOX = "tests/sandbox/test_sandbox.py"
HOSTILE = (
    "tests/security/test_hostile_commands.py::test_each_hostile_command_is_refused_or_contained"
)
LOGS = "tests/flows/test_session_log.py"
SETUP = "tests/agent/test_setup.py"
HERE = "tests/test_documented_settings.py"
RATES = "tests/providers/test_ratelimit.py"
SHARED = "tests/flows/test_provider_limits.py"

EFFECTS: dict[str, list[str]] = {
    # configuration (docs/configuration.md)
    "session.provider": [f"{FLOWS}::test_a_tasks_provider_and_model_override_the_runs"],
    "session.model": [f"{FLOWS}::test_a_tasks_provider_and_model_override_the_runs"],
    "session.max_concurrent_tasks": [
        "tests/flows/test_aca_run.py::test_concurrency_is_bounded",
        f"{FLOWS}::test_a_plans_max_concurrent_beats_the_config_file_and_yields_to_the_command_line",
    ],
    "session.budget_usd": [
        "tests/flows/test_aca_run.py::test_budget_stops_the_run_and_resume_finishes_without_repeating"
    ],
    "session.max_attempts": [
        "tests/flows/test_task_run.py::test_max_attempts_and_retry_backoff_set_the_task_runs_retries",
        "tests/flows/test_task_run.py::test_a_task_that_fails_after_three_paid_calls_then_succeeds_has_every_call_on_the_bill",
    ],
    "session.retry_backoff_seconds": [
        "tests/flows/test_task_run.py::test_max_attempts_and_retry_backoff_set_the_task_runs_retries"
    ],
    "sandbox.mode": [
        f"{SANDBOX}::test_mode_off_runs_unsandboxed_with_a_warning_and_a_scrubbed_environment",
        "tests/cli/test_run.py::test_a_machine_without_bubblewrap_is_refused_naming_the_package",
    ],
    "sandbox.network": [f"{SANDBOX}::test_the_network_is_off_unless_the_task_or_config_allows_it"],
    "tasks.network": [f"{SANDBOX}::test_the_network_is_off_unless_the_task_or_config_allows_it"],
    "sandbox.env": [f"{SANDBOX}::test_the_environment_is_built_from_the_allow_list"],
    "sandbox.read_only_paths": [
        f"{SANDBOX}::test_paths_shown_on_request_are_read_only_and_never_reveal_aca"
    ],
    "sandbox.cpu_seconds": [HOSTILE],
    "sandbox.memory_mb": [HOSTILE],
    "sandbox.file_size_mb": [HOSTILE],
    "sandbox.tmp_size_mb": [
        f"{SANDBOX}::test_what_a_command_writes_to_its_private_folders_is_held_to_their_size"
    ],
    "sandbox.max_processes": [HOSTILE],
    "session.call_retries": [
        "tests/providers/test_retry.py::test_retries_are_bounded_and_the_last_error_propagates",
        "tests/flows/test_task_run.py::test_a_529_at_turn_5_of_6_costs_exactly_one_extra_call",
    ],
    "session.call_retry_backoff_seconds": [
        "tests/providers/test_retry.py::test_waits_are_capped",
    ],
    "session.call_retry_max_wait_seconds": [
        "tests/providers/test_retry.py::test_waits_are_capped",
        "tests/providers/test_ratelimit.py::test_a_long_pause_written_by_an_older_aca_is_capped_when_read",
    ],
    "approval.timeout_seconds": [
        "tests/flows/test_approval.py::test_nobody_answering_in_time_takes_the_configured_default",
        "tests/flows/test_approval.py::test_by_default_nobody_answering_rejects",
    ],
    "approval.on_timeout": [
        "tests/flows/test_approval.py::test_nobody_answering_in_time_takes_the_configured_default",
        "tests/flows/test_approval.py::test_by_default_nobody_answering_rejects",
    ],
    "approval.on_failure": [
        "tests/flows/test_approval.py::test_a_stuck_task_retried_with_a_hint_succeeds",
        "tests/flows/test_approval.py::test_a_stuck_task_can_be_skipped_and_its_dependents_run",
    ],
    "deployments.allowed_workdirs": [
        "tests/flows/test_deployment_guard.py::test_a_workdir_outside_the_allow_list_starts_nothing",
        "tests/flows/test_deployment_guard.py::test_a_workdir_inside_the_allow_list_runs",
    ],
    "deployments.allowed_repos": [
        "tests/flows/test_deployment_guard.py::test_a_repo_run_needs_the_repository_allowed_and_works_in_acas_own_area",
    ],
    "github.token_secret": [
        "tests/flows/test_pull_requests.py::test_the_token_comes_from_the_secret_block_named_in_config",
    ],
    "github.base_branch": [
        "tests/flows/test_pull_requests.py::test_the_token_comes_from_the_secret_block_named_in_config",
    ],
    "providers.*.api_key_secret": [
        "tests/flows/test_secret_keys.py::test_the_key_comes_from_the_secret_block_and_is_redacted",
    ],
    "session.checkpoint_interval_minutes": [
        "tests/session/test_checkpoints.py::test_policy_reads_the_session_configuration"
    ],
    "session.checkpoint_every_tasks": [
        "tests/session/test_checkpoints.py::test_policy_reads_the_session_configuration"
    ],
    "session.interrupt_grace_seconds": [
        "tests/crash/test_interrupt.py::test_sigterm_lets_the_running_task_finish_and_resume_does_the_rest"
    ],
    "agent.max_turns": ["tests/agent/test_execute.py::test_running_out_of_turns_fails_the_task"],
    "agent.max_fix_attempts": [
        "tests/agent/test_execute.py::test_the_plan_default_verify_command_applies_and_fix_attempts_are_configurable"
    ],
    "agent.command_timeout_seconds": [
        "tests/agent/test_tools.py::test_run_command_reports_failure_timeout_and_caps_output"
    ],
    "agent.command_output_limit_bytes": [
        "tests/agent/test_tools.py::test_run_command_reports_failure_timeout_and_caps_output"
    ],
    "agent.deny_commands": [
        "tests/agent/test_commands.py::test_denied_commands",
        "tests/test_settings.py::test_env_overrides_file_and_flags_override_env",
    ],
    "claude_code.cli_path": [
        "tests/providers/test_claude_code.py::test_the_binary_is_found_in_the_documented_order",
        f"{HERE}::test_the_claude_code_section_reaches_claude_codes_options",
    ],
    "claude_code.permission_mode": [
        f"{HERE}::test_the_claude_code_section_reaches_claude_codes_options"
    ],
    "claude_code.allowed_tools": [
        f"{HERE}::test_the_claude_code_section_reaches_claude_codes_options",
        "tests/providers/test_claude_code.py::test_the_users_mcp_servers_start_only_when_an_mcp_tool_is_allowed",
    ],
    "claude_code.max_turns": [
        f"{HERE}::test_the_claude_code_section_reaches_claude_codes_options",
        "tests/providers/test_claude_code.py::test_a_run_out_of_turns_is_a_permanent_error_that_keeps_its_cost",
    ],
    "claude_code.max_budget_usd_per_task": [
        f"{HERE}::test_the_claude_code_section_reaches_claude_codes_options",
        "tests/providers/test_claude_code.py::test_a_run_over_its_budget_is_stopped_permanently",
    ],
    "rate_limiting.max_requests_per_minute": [
        f"{RATES}::test_no_more_calls_run_at_once_than_the_concurrency_cap"
    ],
    "rate_limiting.max_tokens_per_minute": [
        f"{RATES}::test_the_tokens_per_minute_bucket_paces_large_requests"
    ],
    "rate_limiting.burst_allowance": [
        f"{RATES}::test_the_burst_allowance_lets_extra_requests_through_at_once"
    ],
    "rate_limiting.max_concurrent_requests": [
        f"{RATES}::test_no_more_calls_run_at_once_than_the_concurrency_cap"
    ],
    "rate_limiting.max_tokens_per_session": [
        f"{RATES}::test_a_spent_block_budget_waits_for_the_block_to_end"
    ],
    "rate_limiting.on_session_limit": [
        f"{RATES}::test_a_spent_block_budget_stops_with_exit_3_when_configured_to"
    ],
    "rate_limiting.prefect_limits": [
        f"{SHARED}::test_a_run_on_a_server_with_the_limits_holds_every_call_to_them",
        f"{SHARED}::test_two_runs_in_two_processes_never_exceed_the_calls_in_flight_limit_together",
        f"{SHARED}::test_require_fails_a_run_whose_server_lacks_the_limits",
    ],
    "logging.level": [
        f"{LOGS}::test_level_warning_drops_info_lines_from_the_session_log_and_prefect"
    ],
    "logging.log_tool_calls": [
        f"{LOGS}::test_log_tool_calls_false_keeps_tool_calls_out_of_the_logs"
    ],
    "providers.*.model": [
        "tests/providers/test_registry.py::test_config_sets_model_limits_and_claude_options"
    ],
    "providers.*.base_url": [
        "tests/providers/test_anthropic_api.py::test_base_url_from_config_wins_over_the_environment"
    ],
    "providers.*.timeout_seconds": [
        "tests/providers/test_contract.py::test_a_server_slower_than_the_timeout_is_transient"
    ],
    "providers.*.max_tokens": [
        "tests/providers/test_registry.py::test_config_sets_model_limits_and_claude_options",
        "tests/plan/test_intelligent.py::test_an_answer_cut_off_at_the_output_limit_says_so",
    ],
    "providers.*.concurrency_limit": [
        f"{FLOWS}::test_a_configured_prefect_concurrency_limit_is_held_around_every_call"
    ],
    "providers.*.prices.*.input": [
        "tests/providers/test_pricing.py::test_all_four_token_kinds_are_billed"
    ],
    "providers.*.prices.*.output": [
        "tests/providers/test_pricing.py::test_all_four_token_kinds_are_billed"
    ],
    "providers.*.prices.*.cache_read": [
        "tests/providers/test_pricing.py::test_all_four_token_kinds_are_billed"
    ],
    "providers.*.prices.*.cache_write": [
        "tests/providers/test_pricing.py::test_all_four_token_kinds_are_billed"
    ],
    "providers.*.rate_limiting": [
        f"{RATES}::test_the_per_provider_limits_override_the_global_ones"
    ],
    "providers.*.cassette": [
        "tests/providers/test_replay.py::test_replay_is_configured_by_its_cassette"
    ],
    # TOML task files (docs/task-files.md)
    "plan.name": ["tests/plan/test_toml_loader.py::test_shipped_example_loads_with_every_feature"],
    "plan.description": [
        "tests/plan/test_toml_loader.py::test_shipped_example_loads_with_every_feature"
    ],
    "plan.strategy": [
        "tests/plan/test_dag.py::test_sequential_strategy_runs_one_leaf_at_a_time_in_order"
    ],
    "plan.max_concurrent": [
        f"{FLOWS}::test_a_plans_max_concurrent_beats_the_config_file_and_yields_to_the_command_line",
        f"{FLOWS}::test_plan_concurrency_and_setup_commands_apply_to_a_real_run",
    ],
    "plan.context": ["tests/agent/test_prompt.py::test_the_task_prompt_has_every_part_in_order"],
    "plan.append_system_prompt": [
        "tests/agent/test_prompt.py::test_the_appended_system_prompt_comes_last"
    ],
    "plan.verify": [
        "tests/agent/test_execute.py::test_the_plan_default_verify_command_applies_and_fix_attempts_are_configurable"
    ],
    "setup_commands.name": [
        f"{SETUP}::test_a_required_command_that_fails_fails_the_task_before_any_provider_call"
    ],
    "setup_commands.command": [
        f"{SETUP}::test_setup_runs_in_order_in_the_task_worktree_before_the_agent"
    ],
    "setup_commands.working_dir": [
        f"{SETUP}::test_setup_runs_in_order_in_the_task_worktree_before_the_agent",
        f"{SETUP}::test_a_working_dir_outside_the_worktree_is_refused",
    ],
    "setup_commands.timeout_seconds": [
        f"{SETUP}::test_a_command_past_its_timeout_is_killed_and_fails_the_task"
    ],
    "setup_commands.required": [
        f"{SETUP}::test_a_required_command_that_fails_fails_the_task_before_any_provider_call",
        f"{SETUP}::test_an_optional_command_that_fails_is_logged_and_the_task_goes_on",
    ],
    "setup_commands.network": [
        f"{SETUP}::test_setup_has_the_network_only_when_the_task_has_it",
        f"{SETUP}::test_a_setup_commands_own_network_holds_only_until_agents_work_landed",
        f"{SETUP}::test_network_false_keeps_a_setup_command_offline_even_when_the_task_has_it",
    ],
    "tasks.id": ["tests/plan/test_toml_loader.py::test_ids_default_to_slugs_of_titles"],
    "tasks.title": ["tests/plan/test_toml_loader.py::test_ids_default_to_slugs_of_titles"],
    "tasks.description": [
        "tests/agent/test_prompt.py::test_the_task_prompt_has_every_part_in_order"
    ],
    "tasks.priority": [
        "tests/plan/test_dag.py::test_dependencies_gate_and_priority_orders_ready_tasks"
    ],
    "tasks.complexity": [f"{HERE}::test_labels_and_references_are_kept_in_the_plan"],
    "tasks.depends_on": [
        "tests/flows/test_aca_run.py::test_dag_runs_in_dependency_order_and_lands_one_commit_per_task"
    ],
    "tasks.files": ["tests/agent/test_prompt.py::test_the_task_prompt_has_every_part_in_order"],
    "tasks.repositories": [f"{HERE}::test_labels_and_references_are_kept_in_the_plan"],
    "tasks.tags": [f"{HERE}::test_labels_and_references_are_kept_in_the_plan"],
    "tasks.verify": [
        "tests/flows/test_aca_run.py::test_failure_skips_dependents_and_independent_work_continues"
    ],
    "tasks.provider": [f"{FLOWS}::test_a_tasks_provider_and_model_override_the_runs"],
    "tasks.model": [f"{FLOWS}::test_a_tasks_provider_and_model_override_the_runs"],
    "tasks.max_attempts": [
        "tests/flows/test_task_run.py::test_max_attempts_and_retry_backoff_set_the_task_runs_retries"
    ],
    "tasks.done": ["tests/plan/test_toml_loader.py::test_done_tasks_load_completed"],
    "tasks.subtasks": [
        "tests/plan/test_toml_loader.py::test_shipped_example_loads_with_every_feature"
    ],
    # Markdown attributes (docs/task-files.md); they set the same fields as the TOML keys
    "attribute #id": [
        "tests/plan/test_markdown_loader.py::test_attribute_block_sets_id_dependencies_verify_and_more"
    ],
    **{
        f"attribute {name}": [
            "tests/plan/test_markdown_loader.py::test_attribute_block_sets_id_dependencies_verify_and_more"
        ]
        for name in ATTRIBUTE_KEYS
    },
}


def documented_keys() -> set[str]:
    return (
        {".".join(k) for k in documented_config_keys()}
        | {".".join(k) for k in documented_task_file_keys()}
        | {f"attribute {name}" for name in documented_attributes()}
    )


def test_every_documented_setting_and_field_has_a_test_of_its_effect():
    missing = sorted(documented_keys() - set(EFFECTS))
    stale = sorted(set(EFFECTS) - documented_keys())
    assert missing == [], "documented, but no test shows what it does: add one to EFFECTS"
    assert stale == [], "in EFFECTS, but no longer documented"


@pytest.mark.parametrize("test_id", sorted({t for tests in EFFECTS.values() for t in tests}))
def test_the_named_tests_exist(test_id):
    path, name = test_id.split("::")
    tree = ast.parse((ROOT / path).read_text())
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert name in names


# -- effects no other module shows -------------------------------------------------------------


def test_the_claude_code_section_reaches_claude_codes_options(tmp_path):
    from aca_flows.providers.base import Message, ProviderRequest

    claude = tmp_path / "claude"
    claude.write_text("#!/bin/sh\n")
    claude.chmod(0o755)
    config = AcaConfig.model_validate(
        {
            "claude_code": {
                "cli_path": str(claude),
                "permission_mode": "bypassPermissions",
                "allowed_tools": ["Read", "Grep"],
                "max_turns": 9,
                "max_budget_usd_per_task": 0.5,
            },
            "sandbox": {"mode": "off"},  # the mode applies outside the sandbox only
        }
    )

    provider = get_provider("claude-code", config, environ={"PATH": "/nonexistent"})
    options = provider.build_options(ProviderRequest(messages=[Message(role="user", text="hi")]))

    # Started under setpriv, to die with aca (claude_code_sandbox.dying_with_aca).
    assert str(claude) in Path(options.cli_path).read_text()
    assert options.permission_mode == "bypassPermissions"
    assert options.allowed_tools == ["Read", "Grep"]
    assert options.max_turns == 9
    assert options.max_budget_usd == 0.5


def test_labels_and_references_are_kept_in_the_plan(tmp_path):
    """complexity, tags and repositories are recorded with the task (and shown in dumps and
    the UI's plan table); the docs promise nothing more of them."""
    from aca_flows.plan import load_task_file, plan_to_text

    path = tmp_path / "tasks.toml"
    path.write_text(
        '[[tasks]]\ntitle = "t"\ncomplexity = "epic"\ntags = ["api"]\n'
        'repositories = ["github.com/acme/api"]\n'
    )

    plan = load_task_file(path)

    metadata = plan.tasks[0].metadata
    assert (metadata.estimated_complexity, metadata.tags) == ("epic", ["api"])
    assert metadata.repository_refs == ["github.com/acme/api"]
    assert '"github.com/acme/api"' in plan_to_text(plan, ".json")


def test_a_docker_section_is_refused_with_a_hint_to_delete_it(tmp_path):
    (tmp_path / "aca.toml").write_text("[docker]\nenabled = false\n")

    with pytest.raises(ConfigError, match=r"unknown key 'docker'.*delete the \[docker\] section"):
        load_config(tmp_path, environ={})
