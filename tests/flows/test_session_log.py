"""``[logging] level`` and ``log_tool_calls`` on a real run: the session log and Prefect's logs."""

from __future__ import annotations

from pathlib import Path

from aca_flows.flows import run_flow
from aca_flows.session.layout import AcaDir
from tests.fakes.coding_agent import coding_agent
from tests.flows.conftest import flow_run_lines, flow_run_logs


def run_two_tasks(tmp_path: Path, repo: Path, server, name: str) -> tuple[dict, str]:
    for _ in range(10):
        server.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text(f'# {name}\n\n- write a.txt {{#a}}\n- write b.txt {{#b verify="false"}}\n')
    summary = run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test").summary
    log = AcaDir(repo).session(summary["session_id"]).system_log.read_text()
    return summary, log


def test_the_session_log_holds_the_runs_log_lines_at_info(tmp_path, repo, anthropic_fake):
    name = f"info-{tmp_path.name}"
    summary, log = run_two_tasks(tmp_path, repo, anthropic_fake, name)

    assert summary["failed_ids"] == ["b"]
    assert " INFO prefect.task_runs: write_file a.txt (6 chars)" in log
    assert " ERROR prefect.flow_runs: b failed: verify command `false`" in log
    # Credentials never reach it: the fake's key is an environment secret.
    assert "test-key" not in log
    assert (20, "write_file a.txt (6 chars)") in flow_run_lines(name)


def test_level_warning_drops_info_lines_from_the_session_log_and_prefect(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    monkeypatch.setenv("ACA_LOGGING__LEVEL", "WARNING")
    name = f"warning-{tmp_path.name}"

    _, log = run_two_tasks(tmp_path, repo, anthropic_fake, name)

    assert "b failed: verify command `false`" in log
    assert " INFO " not in log and "write_file" not in log
    prefect_logs = flow_run_logs(name)
    assert any(level == 40 and "b failed" in text for level, text in prefect_logs)
    # Below WARNING, only what Prefect's engine says before the flow's code starts.
    assert {text.split(" ")[0] for level, text in prefect_logs if level < 30} <= {
        "Beginning",
        "View",
    }


def test_log_tool_calls_false_keeps_tool_calls_out_of_the_logs(
    tmp_path, repo, anthropic_fake, monkeypatch
):
    monkeypatch.setenv("ACA_LOGGING__LOG_TOOL_CALLS", "false")

    _, log = run_two_tasks(tmp_path, repo, anthropic_fake, f"quiet-{tmp_path.name}")

    assert "write_file" not in log and "b failed" in log
