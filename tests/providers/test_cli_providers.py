"""``aca providers list`` and ``aca providers check NAME`` on the typer sub-app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aca_flows.cli.providers import app
from aca_flows.errors import ConfigError, PermanentProviderError

runner = CliRunner()


def test_list_says_which_providers_can_work_and_why_without_spending(
    llm_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    llm_server.api_key = None  # any key is accepted...
    (tmp_path / "aca.toml").write_text('[providers.openai]\nmodel = "gpt-4.1-mini"\n')

    result = runner.invoke(app, ["list", "--workdir", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == {"claude-code", "anthropic", "openai", "ollama", "replay"}
    assert rows["openai"]["ready"] and rows["openai"]["model"] == "gpt-4.1-mini"
    assert "OPENAI_API_KEY accepted" in rows["openai"]["detail"]
    assert rows["anthropic"]["ready"] and rows["claude-code"]["default"]
    # claude-code has a key here (the fake's), checked like anthropic's.
    assert (
        rows["claude-code"]["ready"]
        and "ANTHROPIC_API_KEY accepted" in rows["claude-code"]["detail"]
    )
    assert not rows["ollama"]["ready"] and "ollama pull llama3.1" in rows["ollama"]["fix"]
    assert not rows["replay"]["ready"]
    assert "sk-secret-value" not in result.output
    # The checks were free: model pages and lists only, no message was sent.
    assert {r.path for r in llm_server.requests} == {
        "/v1/models",  # claude-code's key check: its model names are its own
        "/v1/models/claude-sonnet-4-6",
        "/v1/models/gpt-4.1-mini",
        "/api/tags",
    }
    assert llm_server.anthropic.requests == llm_server.openai.requests == []


def test_list_shows_a_rejected_key_and_a_missing_login_with_their_fixes(
    llm_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    monkeypatch.delenv("ANTHROPIC_API_KEY")

    result = runner.invoke(app, ["list", "--workdir", str(tmp_path), "--json"])

    rows = {row["name"]: row for row in json.loads(result.output)}
    assert (
        not rows["openai"]["ready"] and "rejected OPENAI_API_KEY (401" in rows["openai"]["detail"]
    )
    assert not rows["anthropic"]["ready"] and "ANTHROPIC_API_KEY" in rows["anthropic"]["fix"]
    # The real claude binary, with an empty HOME: not logged in, whatever its binary says.
    claude = rows["claude-code"]
    assert not claude["ready"] and "not logged in" in claude["detail"]
    assert "claude auth login" in claude["fix"]


def test_list_prints_a_table_for_people(tmp_path):
    result = runner.invoke(app, ["list", "--workdir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "claude-code (default)" in result.output
    assert "ollama" in result.output
    assert "[providers.replay]" in " ".join(result.output.split())  # not eaten as markup


def test_check_makes_one_small_real_call(llm_server, tmp_path):
    llm_server.anthropic.enqueue(text="ok", usage={"input_tokens": 12, "output_tokens": 1})

    result = runner.invoke(app, ["check", "anthropic", "--workdir", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["answer"] == "ok" and summary["input_tokens"] == 12
    sent = llm_server.anthropic.requests[0].json
    assert sent["max_tokens"] == 16


def test_check_refuses_a_rejected_key_before_any_call(llm_server, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")

    result = runner.invoke(app, ["check", "openai", "--workdir", str(tmp_path)])

    assert isinstance(result.exception, PermanentProviderError)
    assert result.exception.exit_code == 2
    assert "set a valid OPENAI_API_KEY" in str(result.exception)
    assert llm_server.openai.requests == []


def test_check_reports_an_error_of_the_real_call_as_the_provider_error(llm_server, tmp_path):
    llm_server.openai.enqueue(status=401, error="Incorrect API key provided")

    result = runner.invoke(app, ["check", "openai", "--workdir", str(tmp_path)])

    assert isinstance(result.exception, PermanentProviderError)
    assert "OPENAI_API_KEY" in str(result.exception)


def test_check_of_an_unknown_provider_names_the_valid_ones(tmp_path):
    result = runner.invoke(app, ["check", "gemini", "--workdir", str(tmp_path)])

    assert isinstance(result.exception, ConfigError)
    assert "claude-code, anthropic, openai, ollama, replay" in str(result.exception)


def test_check_works_for_a_keyless_local_server(llm_server, tmp_path):
    llm_server.ollama.enqueue(text="ok")
    llm_server.ollama_models = ["llama3.1:latest"]

    result = runner.invoke(app, ["check", "ollama", "--workdir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("ollama: ok")


def test_check_runs_claude_code_for_one_turn(claude_env, llm_server, tmp_path):
    llm_server.anthropic.enqueue(text="ok", usage={"input_tokens": 30, "output_tokens": 1})

    result = runner.invoke(app, ["check", "claude-code", "--workdir", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["answer"] == "ok"
    # The real claude keeps no transcript of it in the home (~/.claude/projects/...).
    home = Path(claude_env["HOME"])
    assert [p for p in home.rglob("*.jsonl") if b"single word" in p.read_bytes()] == []
