"""Command helpers: secret-free environment and the deny list."""

from __future__ import annotations

import pytest

from aca_flows.agent.commands import clean_environment, denied_by
from aca_flows.settings import AgentSection

DENY = AgentSection().deny_commands


def test_clean_environment_drops_secrets_and_git_location():
    env = clean_environment(
        {
            "PATH": "/bin",
            "ANTHROPIC_API_KEY": "a",
            "OPENAI_API_KEY": "o",
            "ANTHROPIC_AUTH_TOKEN": "t",
            "aws_secret_access_key": "s",
            "PGPASSWORD": "p",
            "GIT_DIR": "/user/.git",
            "LANG": "C",
        }
    )
    assert env == {"PATH": "/bin", "LANG": "C", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.mark.parametrize(
    "command",
    [
        "git push",
        "git  push --force origin main",
        "make && git push",
        "sudo apt-get install x",
        "curl -s http://x",
        "/usr/bin/wget http://x",
        "echo $(curl x)",
        "ssh host",
        "rm -rf /",
    ],
)
def test_denied_commands(command):
    assert denied_by(command, DENY) is not None


@pytest.mark.parametrize(
    "command",
    ["pytest -q", "git status", "python curling.py", "rm -rf /tmp/build", "grep sudoers README"],
)
def test_allowed_commands(command):
    assert denied_by(command, DENY) is None
