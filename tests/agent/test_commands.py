"""The deny list: a fast refusal that matches commands by their words, not by substrings."""

from __future__ import annotations

import pytest

from aca_flows.agent.commands import command_words, denied_by
from aca_flows.settings import AgentSection

DENY = AgentSection().deny_commands


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
        "echo `nc -l 80`",
        "ssh host",
        "rm -rf /",
        "X=1 curl y",
        "env FOO=1 ssh host",
        "timeout 5 curl x",
        "(cd src && 'curl' x)",
        "ls|xargs sudo rm",
    ],
)
def test_denied_commands(command):
    assert denied_by(command, DENY) is not None


@pytest.mark.parametrize(
    "command",
    [
        "pytest -q",
        "git status",
        "python curling.py",
        "rm -rf /tmp/build",
        "grep sudoers README",
        "grep -r ssh docs",
        "echo 'curl is denied'",
        "git log --grep push",
    ],
)
def test_allowed_commands(command):
    assert denied_by(command, DENY) is None


def test_commands_are_split_like_a_shell_splits_them():
    assert command_words("a 'b c' && d|e; $(f g)") == [["a", "b c"], ["d"], ["e"], ["f", "g"]]
    assert command_words("echo 'unbalanced") == [["echo", "'unbalanced"]]
