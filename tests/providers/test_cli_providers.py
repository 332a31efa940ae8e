"""``aca providers list`` and ``aca providers check NAME`` on the typer sub-app."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from aca_flows.cli.providers import app
from aca_flows.errors import ConfigError, PermanentProviderError

runner = CliRunner()


def test_list_shows_which_providers_have_credentials_and_their_models(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    (tmp_path / "aca.toml").write_text('[providers.openai]\nmodel = "gpt-4.1-mini"\n')

    result = runner.invoke(app, ["list", "--workdir", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == {"claude-code", "anthropic", "openai", "ollama", "replay"}
    assert rows["openai"]["ready"] and rows["openai"]["model"] == "gpt-4.1-mini"
    assert not rows["anthropic"]["ready"]
    assert "ANTHROPIC_API_KEY missing" in rows["anthropic"]["detail"]
    assert rows["claude-code"]["ready"] and rows["claude-code"]["default"]
    assert "sk-secret-value" not in result.output


def test_list_prints_a_table_for_people(tmp_path):
    result = runner.invoke(app, ["list", "--workdir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "claude-code (default)" in result.output
    assert "ollama" in result.output


def test_check_makes_one_small_real_call(llm_server, tmp_path):
    llm_server.anthropic.enqueue(text="ok", usage={"input_tokens": 12, "output_tokens": 1})

    result = runner.invoke(app, ["check", "anthropic", "--workdir", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["answer"] == "ok" and summary["input_tokens"] == 12
    sent = llm_server.anthropic.requests[0].json
    assert sent["max_tokens"] == 16


def test_check_reports_a_rejected_key_as_the_provider_error(llm_server, tmp_path):
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

    result = runner.invoke(app, ["check", "ollama", "--workdir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("ollama: ok")


def test_check_runs_claude_code_for_one_turn(claude_env, llm_server, tmp_path):
    llm_server.anthropic.enqueue(text="ok", usage={"input_tokens": 30, "output_tokens": 1})

    result = runner.invoke(app, ["check", "claude-code", "--workdir", str(tmp_path), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["answer"] == "ok"
