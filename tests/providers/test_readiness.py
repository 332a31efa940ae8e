"""Whether a provider can work, checked for free: against the fake server and the real claude."""

from __future__ import annotations

import json

import pytest

from aca_flows.errors import PermanentProviderError
from aca_flows.providers import check_provider, require_providers
from aca_flows.settings import AcaConfig, ClaudeCodeSection, ProviderSection, SandboxSection


def check(name: str, config: AcaConfig | None = None):
    return check_provider(name, config, use_cache=False)


def test_an_accepted_key_is_ready_and_only_the_models_page_was_asked(llm_server):
    result = check("anthropic")

    assert result.ready and "ANTHROPIC_API_KEY accepted" in result.detail
    (request,) = llm_server.requests
    assert (request.method, request.path) == ("GET", f"/v1/models/{result.model}")
    assert request.headers["x-api-key"] == "test-key"
    assert "anthropic-version" in request.headers


def test_a_rejected_key_is_not_ready_and_the_key_is_never_shown(llm_server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-secret")

    result = check("anthropic")

    assert not result.ready
    assert "rejected ANTHROPIC_API_KEY (401: invalid x-api-key)" in result.detail
    assert result.fix == "set a valid ANTHROPIC_API_KEY"
    assert "sk-ant-wrong-secret" not in result.detail + result.fix


def test_a_missing_key_is_not_ready_without_any_request(llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")

    result = check("openai")

    assert not result.ready and result.detail == "OPENAI_API_KEY is not set"
    assert llm_server.requests == []


def test_an_unreachable_server_is_not_ready(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")

    result = check("openai")

    assert not result.ready and "cannot reach http://127.0.0.1:9" in result.detail
    assert "OPENAI_BASE_URL" in result.fix


def test_a_server_without_a_model_list_is_reachable_but_unverified(llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", f"{llm_server.url}/nowhere")

    result = check("openai")

    assert result.ready and "404" in result.detail and "not verified" in result.detail


def test_ollama_needs_its_server_and_the_model(llm_server):
    llm_server.ollama_models = ["qwen3:8b", "llama3.1:latest"]
    assert check("ollama").ready  # llama3.1 is llama3.1:latest

    config = AcaConfig(providers={"ollama": ProviderSection(model="mistral")})
    missing = check("ollama", config)
    assert not missing.ready and "does not have the model 'mistral'" in missing.detail
    assert "ollama pull mistral" in missing.fix and "qwen3:8b" in missing.fix


def test_ollama_not_running_is_not_ready(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")

    result = check("ollama")

    assert not result.ready and "ollama serve" in result.fix


def test_claude_code_without_login_or_key_is_not_ready():
    # The real bundled claude, asked `claude auth status` in an empty HOME.
    result = check("claude-code")

    assert not result.ready and "not logged in" in result.detail
    # The bundled claude is on no PATH: the fix names the binary a user can run.
    from aca_flows.providers.claude_code import find_claude_cli

    cli, _ = find_claude_cli(None, {})
    assert f"`{cli} auth login`" in result.fix and "ANTHROPIC_API_KEY" in result.fix


def test_claude_code_with_a_login_is_ready(monkeypatch, _isolated_home):
    login = {
        "claudeAiOauth": {
            "accessToken": "sk-ant-oat01-fake",
            "refreshToken": "sk-ant-ort01-fake",
            "expiresAt": 4_102_444_800_000,
            "scopes": ["user:inference"],
            "subscriptionType": "pro",
        }
    }
    folder = _isolated_home / ".claude"
    folder.mkdir()
    (folder / ".credentials.json").write_text(json.dumps(login))

    result = check("claude-code")

    assert result.ready and "logged in" in result.detail
    assert "sk-ant-oat01-fake" not in result.detail


def test_claude_code_with_a_key_checks_it_like_anthropic(llm_server, monkeypatch):
    assert check("claude-code").ready
    monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong")

    result = check("claude-code")

    assert not result.ready and "rejected ANTHROPIC_API_KEY" in result.detail
    assert "/v1/models" in {r.path for r in llm_server.requests}


def test_claude_code_with_an_auth_token_sends_it_as_a_bearer(llm_server, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "test-key")

    result = check("claude-code")

    assert result.ready and "ANTHROPIC_AUTH_TOKEN accepted" in result.detail
    assert llm_server.requests[-1].headers["authorization"] == "Bearer test-key"


def test_claude_code_told_to_bypass_permissions_inside_the_sandbox_is_refused_with_the_fix(
    llm_server,
):
    # Claude Code keeps its default mode while it scrubs its commands' environment (as the
    # sandbox has it do): the mode would silently not apply, and tools refused mid-task.
    bypass = ClaudeCodeSection(permission_mode="bypassPermissions")

    result = check("claude-code", AcaConfig(claude_code=bypass))

    assert not result.ready and "bypassPermissions" in result.detail
    assert "allowed_tools" in result.fix and '[sandbox] mode = "off"' in result.fix
    assert not llm_server.requests  # refused before any call
    unsandboxed = AcaConfig(claude_code=bypass, sandbox=SandboxSection(mode="off"))
    assert check("claude-code", unsandboxed).ready


def test_claude_code_with_a_missing_binary_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(tmp_path / "no-claude"))

    result = check("claude-code")

    assert not result.ready and "does not exist" in result.detail
    assert "ACA_CLAUDE_CLI" in result.fix


def test_claude_code_with_a_binary_that_cannot_run_names_why(monkeypatch, tmp_path):
    unrunnable = tmp_path / "claude"
    unrunnable.write_text("#!/bin/sh\n")  # not executable
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(unrunnable))
    result = check("claude-code")
    assert not result.ready and "is not executable" in result.detail
    assert f"chmod +x {unrunnable}" in result.fix
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(tmp_path))  # its folder
    result = check("claude-code")
    assert not result.ready and "is a folder" in result.detail
    assert str(unrunnable) in result.fix


def test_an_older_claude_without_auth_status_is_trusted_with_a_credentials_file(
    monkeypatch, tmp_path, _isolated_home
):
    old = tmp_path / "claude"
    old.write_text("#!/bin/sh\necho \"error: unknown command 'auth'\" >&2\nexit 1\n")
    old.chmod(0o755)
    monkeypatch.setenv("ACA_CLAUDE_CLI", str(old))
    assert not check("claude-code").ready

    (_isolated_home / ".claude").mkdir()
    (_isolated_home / ".claude" / ".credentials.json").write_text("{}")

    result = check("claude-code")
    assert result.ready and "not verified" in result.detail


def test_a_replay_cassette_must_exist_and_read_as_one(tmp_path):
    config = AcaConfig(providers={"replay": ProviderSection(cassette=str(tmp_path / "c.json"))})
    assert "does not exist" in check("replay", config).detail
    (tmp_path / "c.json").write_text("{}")
    assert "is not a version-1 cassette" in check("replay", config).detail
    (tmp_path / "c.json").write_text('{"version": 1, "interactions": []}')
    assert check("replay", config).ready


def test_a_ready_result_is_cached_and_a_failure_is_checked_again(llm_server, monkeypatch):
    config = AcaConfig(providers={"anthropic": ProviderSection(max_tokens=123)})
    assert check_provider("anthropic", config).ready
    assert check_provider("anthropic", config).ready
    assert len(llm_server.requests) == 1

    monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong")  # another key: checked anew
    assert not check_provider("anthropic", config).ready
    assert not check_provider("anthropic", config).ready
    assert len(llm_server.requests) == 3


def test_require_names_every_provider_that_cannot_work(llm_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")

    with pytest.raises(PermanentProviderError) as caught:
        require_providers(["anthropic", "openai", "ollama"], AcaConfig())

    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "the ollama provider cannot work" in message
    assert "the openai provider cannot work: OPENAI_API_KEY is not set" in message
    assert "the anthropic provider" not in message and "No task was started" in message
    # A resume (its flow checks the session's providers) has no --provider to offer.
    assert "--provider" not in message
    require_providers(["anthropic"], AcaConfig())  # a provider that can work passes


def test_a_dropped_connection_is_tried_again_before_a_run_is_refused(monkeypatch):
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen = []

    def serve():
        # The first connection is dropped unanswered (a restarting proxy, a reset); the next
        # is answered with an empty model list.
        for attempt in range(2):
            conn, _ = listener.accept()
            seen.append(conn.recv(65536).split(b"\r\n")[0])
            if attempt == 1:
                body = b'{"data": []}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
                )
            conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")

    result = check("anthropic")

    server.join(10)
    listener.close()
    assert [line.split(b"/v1/models")[0] for line in seen] == [b"GET "] * 2
    assert result.ready, result.detail


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_model_the_server_does_not_know_is_named_before_the_run(llm_server, provider):
    llm_server.unknown_models = {"claude-sonet-typo"}
    config = AcaConfig(providers={provider: ProviderSection(model="claude-sonet-typo")})

    result = check(provider, config)

    assert not result.ready
    assert "does not know the model 'claude-sonet-typo' (404" in result.detail
    assert result.fix.startswith("name a model it has (--model")
    with pytest.raises(PermanentProviderError, match="No task was started"):
        require_providers([provider], config, models={provider: [None]})


def test_each_model_a_run_uses_is_checked(llm_server):
    llm_server.unknown_models = {"claude-typo"}
    config = AcaConfig()

    assert check_provider("anthropic", config, use_cache=False, models=[None]).ready
    result = check_provider("anthropic", config, use_cache=False, models=[None, "claude-typo"])

    assert not result.ready and "'claude-typo'" in result.detail


def test_a_server_without_model_pages_is_asked_for_its_list(llm_server, monkeypatch):
    # A gateway or OpenAI-compatible server without GET /models/{id}: its 404 names a route,
    # not the model, and the key is checked against the list instead.
    import tests.fakes.llm_server as fake

    monkeypatch.setattr(fake, "_MODEL_PAGES", ("/nowhere/",))

    result = check("openai")

    assert result.ready and "OPENAI_API_KEY accepted" in result.detail
    assert [r.path for r in llm_server.requests] == [f"/v1/models/{result.model}", "/v1/models"]
