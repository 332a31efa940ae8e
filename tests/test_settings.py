"""Configuration: file discovery, precedence, provenance, and errors naming key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from aca_flows.config_loader import load_config
from aca_flows.errors import ConfigError
from tests.fixtures import COMPAT

COMPAT_CONFIG = COMPAT / "default-config.toml"


def test_defaults_without_any_file(tmp_path):
    loaded = load_config(tmp_path, environ={})
    assert loaded.file is None
    assert loaded.config.session.max_concurrent_tasks == 3
    assert loaded.config.session.provider == "claude-code"


def test_first_found_file_wins(tmp_path, _isolated_home):
    (tmp_path / ".aca").mkdir()
    (tmp_path / ".aca" / "config.toml").write_text("[session]\nmax_concurrent_tasks = 5\n")
    (_isolated_home / ".aca").mkdir()
    (_isolated_home / ".aca" / "config.toml").write_text("[session]\nmax_concurrent_tasks = 9\n")
    assert load_config(tmp_path, environ={}).config.session.max_concurrent_tasks == 5
    (tmp_path / "aca.toml").write_text("[session]\nmax_concurrent_tasks = 7\n")
    loaded = load_config(tmp_path, environ={})
    assert loaded.config.session.max_concurrent_tasks == 7
    assert loaded.sources["session.max_concurrent_tasks"] == str(tmp_path / "aca.toml")


def test_env_overrides_file_and_flags_override_env(tmp_path):
    (tmp_path / "aca.toml").write_text('[session]\nmax_concurrent_tasks = 5\nprovider = "openai"\n')
    env = {"ACA_SESSION__MAX_CONCURRENT_TASKS": "8", "ACA_AGENT__DENY_COMMANDS": "sudo, curl"}
    loaded = load_config(tmp_path, environ=env, overrides={"session.provider": "ollama"})
    assert loaded.config.session.max_concurrent_tasks == 8
    assert loaded.sources["session.max_concurrent_tasks"] == "env ACA_SESSION__MAX_CONCURRENT_TASKS"
    assert loaded.config.agent.deny_commands == ["sudo", "curl"]
    assert loaded.config.session.provider == "ollama"
    assert loaded.sources["session.provider"] == "command line"


def test_provider_sections_and_prices(tmp_path):
    (tmp_path / "aca.toml").write_text(
        '[providers.anthropic]\nmodel = "claude-x"\n'
        '[providers.anthropic.prices."claude-x"]\ninput = 3.0\noutput = 15.0\n'
    )
    config = load_config(tmp_path, environ={}).config
    assert config.provider("anthropic").prices["claude-x"].output == 15.0
    assert config.provider("ollama").model is None


def test_the_run_s_model_beats_its_provider_s_and_stays_with_that_provider(tmp_path):
    """`aca run --model X` runs X, whatever `[providers.anthropic] model` says; a task on
    another provider gets that provider's model, not a model of the run's provider."""
    (tmp_path / "aca.toml").write_text(
        '[session]\nprovider = "anthropic"\n[providers.anthropic]\nmodel = "claude-x"\n'
        '[providers.openai]\nmodel = "gpt-y"\n'
    )
    flags = {"session.model": "claude-from-the-flag"}
    config = load_config(tmp_path, environ={}, overrides=flags).config
    assert config.model_for("anthropic") == "claude-from-the-flag"
    assert config.model_for("openai") == "gpt-y"
    assert config.model_for("ollama") is None  # its own default
    assert config.model_for("anthropic", "claude-task") == "claude-task"
    assert load_config(tmp_path, environ={}).config.model_for("anthropic") == "claude-x"


def test_unknown_key_and_wrong_type_name_key_and_file(tmp_path):
    (tmp_path / "aca.toml").write_text(
        "[session]\nmax_concurent_tasks = 5\n[rate_limiting]\nmax_requests_per_minute = 'lots'\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    text = str(info.value)
    assert (
        f"unknown key 'session.max_concurent_tasks' (from {tmp_path / 'aca.toml'}; "
        "did you mean 'session.max_concurrent_tasks'?)"
    ) in text
    assert "'rate_limiting.max_requests_per_minute'" in text


def test_a_file_value_of_another_type_is_refused_not_converted(tmp_path):
    # Read as true, as 1, as 5.0: a security setting turned on by a word that is no boolean.
    (tmp_path / "aca.toml").write_text(
        '[sandbox]\nnetwork = "yes"\n[agent]\nmax_turns = true\n[session]\nbudget_usd = "5"\n'
        "max_attempts = 2.0\nretry_backoff_seconds = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    text = str(info.value)
    file = tmp_path / "aca.toml"
    assert f"'sandbox.network' (from {file}): Input should be a valid boolean, not \"yes\"" in text
    assert "'agent.max_turns'" in text and "valid integer, not true" in text
    assert "'session.budget_usd'" in text and "'session.max_attempts'" in text
    assert "retry_backoff_seconds" not in text  # an integer is a number
    # The environment's values are text: they are converted, as always.
    file.write_text("")
    assert load_config(tmp_path, environ={"ACA_SANDBOX__NETWORK": "true"}).config.sandbox.network


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("[sesion]\nmodel = 'm'\n", "session"),
        ("[providers.anthropic]\nmodle = 'm'\n", "providers.anthropic.model"),
        ("[session]\nbogus = 1\n", None),  # nothing close: no guess
        # Its unit left off: that key, not the lookalike `approval.on_timeout`.
        ("[approval]\ntimeout = 10\n", "approval.timeout_seconds"),
    ],
)
def test_an_unknown_key_names_the_valid_key_it_is_closest_to(tmp_path, written, meant):
    (tmp_path / "aca.toml").write_text(written)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    if meant is None:
        assert "did you mean" not in str(info.value)
    else:
        assert f"did you mean '{meant}'?" in str(info.value)


def test_bad_env_variable_is_named(tmp_path):
    with pytest.raises(ConfigError, match="env ACA_SESSION__MAX_CONCURRENT_TASKS"):
        load_config(tmp_path, environ={"ACA_SESSION__MAX_CONCURRENT_TASKS": "many"})


@pytest.mark.parametrize("config_file", ["", "[session]\nmodel = 'm'\n"])
def test_a_misspelt_section_in_a_variable_names_the_variable(tmp_path, config_file):
    """Not "from defaults" (nor the config file, when there is one): the variable to fix."""
    if config_file:
        (tmp_path / "aca.toml").write_text(config_file)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={"ACA_SESION__MAX_PARALLEL": "3"})
    assert (
        "unknown key 'sesion' (from env ACA_SESION__MAX_PARALLEL; did you mean 'session'?)"
    ) in str(info.value)


def test_an_empty_allowed_tools_is_refused_not_read_as_claude_codes_defaults(tmp_path):
    (tmp_path / "aca.toml").write_text("[claude_code]\nallowed_tools = []\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert "'claude_code.allowed_tools'" in str(info.value)
    assert "at least 1 item" in str(info.value)


def test_original_aca_config_is_rejected_naming_its_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, COMPAT_CONFIG, environ={})
    text = str(info.value)
    for key in ("workspace_path", "session_config", "task_config", "claude_config"):
        assert f"unknown key '{key}'" in text
    # Each of the original's sections says where its settings went.
    assert "max_concurrent_tasks is now [session] max_concurrent_tasks" in text
    assert "auto_checkpoint_interval_minutes is now [session] checkpoint_interval_minutes" in text
    assert "rate_limits are now [rate_limiting]" in text


def _setting_names(table: dict) -> set[str]:
    """The names of a TOML table's settings at any depth; a duration's secs/nanos count as
    the duration."""
    names = set()
    for name, value in table.items():
        if isinstance(value, dict) and not {"secs", "nanos"} >= value.keys():
            names |= _setting_names(value)
        else:
            names.add(name)
    return names


def test_every_setting_of_the_original_config_is_mapped_or_named_as_having_none(tmp_path):
    import tomllib

    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, COMPAT_CONFIG, environ={})
    text = str(info.value)
    settings = _setting_names(tomllib.loads(COMPAT_CONFIG.read_text()))
    named = {s for s in settings if s in text}
    assert settings - named == set()
    assert "--workdir" in text  # workspace_path
    assert "retry_delay_minutes [session] retry_backoff_seconds" in text
    # Same name, another unit: the original's 5000 would lift aca's request limit.
    assert "not its burst_allowance" in text


def test_malformed_toml(tmp_path):
    (tmp_path / "aca.toml").write_text("[session\n")
    with pytest.raises(ConfigError, match="invalid TOML.*line 1"):
        load_config(tmp_path, environ={})


def test_missing_explicit_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path, tmp_path / "nope.toml", environ={})


def test_a_folder_given_as_the_config_is_called_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a file; give the path of the config"):
        load_config(tmp_path, tmp_path, environ={})


def test_a_device_given_as_the_config_is_not_said_to_be_missing():
    with pytest.raises(ConfigError, match="/dev/null is not a file; give --config the path"):
        load_config(Path("."), Path("/dev/null"), environ={})


def test_a_config_without_read_permission_is_named_not_a_traceback(tmp_path, monkeypatch):
    # chmod 000 does not stop root, who runs these tests in containers: the refusal is faked.
    (tmp_path / "aca.toml").write_text("[session]\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(ConfigError, match="aca.toml cannot be read \\(Permission denied\\)"):
        load_config(tmp_path, environ={})


def test_an_invalid_config_points_at_the_docs_not_at_a_command_that_refuses_it_too(tmp_path):
    (tmp_path / "aca.toml").write_text("[session]\nmax_concurrent_tasks = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert str(info.value).endswith("docs/configuration.md lists every valid key.")
    assert "aca config show" not in str(info.value)


def test_a_blocks_settings_take_the_files_place_below_variables_and_flags(tmp_path):
    (tmp_path / "aca.toml").write_text("[session]\nmax_concurrent_tasks = 7\nmodel = 'm'\n")
    settings = {
        "session": {"max_concurrent_tasks": 2, "budget_usd": 4},
        "providers": {"replay": {"cassette": "rec/c.json"}},
    }
    loaded = load_config(
        tmp_path,
        overrides={"session.budget_usd": 9},
        environ={"ACA_SESSION__PROVIDER": "replay"},
        block=("team", settings),
    )
    session = loaded.config.session
    # The workdir's aca.toml is not read at all; variables and flags still win over the block.
    assert (session.max_concurrent_tasks, session.model) == (2, None)
    assert (session.provider, session.budget_usd) == ("replay", 9)
    assert loaded.file is None and loaded.sources["session.max_concurrent_tasks"] == "block team"
    # A block is no file: its paths are left as written (relative to the run's folder).
    assert loaded.config.provider("replay").cassette == "rec/c.json"


def test_a_block_with_a_bad_key_is_named_as_the_blocks(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'session.bogus' \(from block team\)"):
        load_config(tmp_path, environ={}, block=("team", {"session": {"bogus": 1}}))


def test_each_provider_starts_from_its_published_limits_and_the_users_keys_win(tmp_path):
    config = load_config(tmp_path).config
    # Anthropic's Tier 1 for claude-code and anthropic; OpenAI's own Tier 1; a local ollama
    # is not held to a cloud provider's tokens a minute.
    assert config.rate_limits("anthropic").max_tokens_per_minute == 40_000
    assert config.rate_limits("claude-code").max_requests_per_minute == 50
    assert config.rate_limits("openai").max_requests_per_minute == 500
    assert config.rate_limits("openai").max_tokens_per_minute == 30_000
    assert config.rate_limits("ollama").max_tokens_per_minute >= 10_000_000
    assert config.rate_limits("ollama").max_concurrent_requests == 4

    (tmp_path / "aca.toml").write_text(
        "[rate_limiting]\nmax_tokens_per_minute = 90000\n"
        "[providers.ollama.rate_limiting]\nmax_concurrent_requests = 1\n"
    )
    config = load_config(tmp_path).config
    openai = config.rate_limits("openai")
    assert (openai.max_tokens_per_minute, openai.max_requests_per_minute) == (90_000, 500)
    ollama = config.rate_limits("ollama")  # its own section replaces [rate_limiting]
    assert ollama.max_concurrent_requests == 1
    assert ollama.max_tokens_per_minute >= 10_000_000


def test_a_clones_config_may_lower_the_tasks_run_at_once_not_raise_them(tmp_path, _isolated_home):
    clone = tmp_path / "clone"
    (clone / ".git").mkdir(parents=True)
    (clone / ".git" / "config").write_text("[aca]\n\tworkingarea = true\n")  # aca cloned it
    (_isolated_home / ".aca").mkdir()
    (_isolated_home / ".aca" / "config.toml").write_text("[session]\nmax_concurrent_tasks = 2\n")
    for asked, kept in ((64, 2), (1, 1)):
        (clone / "aca.toml").write_text(f"[session]\nmax_concurrent_tasks = {asked}\n")
        loaded = load_config(clone)
        assert loaded.config.session.max_concurrent_tasks == kept
    (clone / "aca.toml").write_text("[session]\nmax_concurrent_tasks = 64\n")
    (ignored,) = load_config(clone).ignored
    assert "ignored [session] max_concurrent_tasks = 64: a cloned repository's config may not" in (
        ignored
    )


def test_a_config_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors write one: it was "invalid TOML: Invalid statement (at line 1)"."""
    config = tmp_path / "cfg.toml"
    config.write_text("\ufeff[session]\nmax_concurrent_tasks = 3\n", encoding="utf-8")
    assert load_config(tmp_path, config, environ={}).config.session.max_concurrent_tasks == 3


@pytest.mark.parametrize(
    ("text", "environ", "key"),
    [
        ("[session]\nbudget_usd = inf\n", {}, "session.budget_usd"),
        ("", {"ACA_SESSION__BUDGET_USD": "inf"}, "session.budget_usd"),
        ("[session]\nmodel = ''\n", {}, "session.model"),
        # Passed the dry run, then ended the run in a traceback: a wait becomes a date.
        ("[session]\ncheckpoint_interval_minutes = inf\n", {}, "checkpoint_interval_minutes"),
        ("", {"ACA_SESSION__CHECKPOINT_INTERVAL_MINUTES": "1e300"}, "checkpoint_interval"),
        ("[approval]\ntimeout_seconds = inf\n", {}, "approval.timeout_seconds"),
        ("", {"ACA_APPROVAL__TIMEOUT_SECONDS": "1e12"}, "approval.timeout_seconds"),
    ],
)
def test_a_budget_of_infinity_or_an_empty_model_is_refused_wherever_set(
    tmp_path, text, environ, key
):
    """--budget-usd inf and --model '' were refused; the same in a file or a variable passed."""
    config = tmp_path / "cfg.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_config(tmp_path, config, environ=environ)


def test_a_workers_allow_lists_are_read_only_from_its_own_config(tmp_path, _isolated_home, capsys):
    """`[deployments]` in a project's aca.toml, a --config file or a block is said to be left
    out, not shown as in effect: the worker reads it only from its ~/.aca/config.toml."""
    import json

    from aca_flows.cli import main
    from aca_flows.flows.deployment_guard import allowed_workdirs

    (tmp_path / "aca.toml").write_text('[deployments]\nallowed_workdirs = ["/srv/x"]\n')
    assert main(["config", "show", "--workdir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["values"]["deployments.allowed_workdirs"] == {"value": [], "source": "default"}
    [line] = shown["ignored"]
    assert "allowed_workdirs" in line and "is not read from here" in line
    assert str(_isolated_home / ".aca" / "config.toml") in line
    block = load_config(tmp_path, block=("b", {"deployments": {"allowed_repos": ["https://x/"]}}))
    assert block.config.deployments.allowed_repos == [] and "block b" in block.ignored[0]
    (_isolated_home / "aca.toml").write_text('[deployments]\nallowed_workdirs = ["/srv/x"]\n')
    assert allowed_workdirs() == []  # ~/aca.toml is no worker's config
    (_isolated_home / ".aca").mkdir()
    (_isolated_home / ".aca" / "config.toml").write_text(
        '[deployments]\nallowed_workdirs = ["/srv/y"]\n'
    )
    assert allowed_workdirs() == [Path("/srv/y")]
    assert load_config(_isolated_home / ".aca", environ={}).ignored == []


def test_a_setting_variable_with_one_underscore_is_refused_naming_the_right_one(tmp_path):
    # ACA_SESSION_BUDGET_USD was read as no setting at all: the nightly run had no budget.
    with pytest.raises(ConfigError, match="ACA_SESSION__BUDGET_USD"):
        load_config(tmp_path, None, environ={"ACA_SESSION_BUDGET_USD": "5"})
    variable = "ACA_RATE_LIMITING_MAX_TOKENS_PER_SESSION"  # a section with "_" in its name
    with pytest.raises(ConfigError, match="ACA_RATE_LIMITING__MAX_TOKENS_PER_SESSION"):
        load_config(tmp_path, None, environ={variable: "1000"})
    # aca's own variables are no settings, and stay unread here.
    others = {"ACA_CLAUDE_CLI": "/bin/claude", "ACA_WARM_RUNNER": "off", "ACA_CLAUDE_TMP": "/t"}
    assert load_config(tmp_path, None, environ=others).config.session.budget_usd is None
