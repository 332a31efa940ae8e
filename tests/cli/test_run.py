"""``aca run`` preflight: a run whose agent commands could not be sandboxed never starts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from aca_flows.cli import main

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "tasks" / "examples" / "hello.md"
HELLO_CONFIG = ROOT / "tasks" / "examples" / "hello.aca.toml"


def test_a_machine_without_bubblewrap_is_refused_naming_the_package(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("git"), bin_dir / "git")  # git, but no bwrap
    monkeypatch.setenv("PATH", str(bin_dir))
    repo = tmp_path / "repo"

    code = main(["run", str(HELLO), "-w", str(repo), "--init-git", "--config", str(HELLO_CONFIG)])

    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "bubblewrap ('bwrap') is not installed" in err
    assert "apt-get install bubblewrap" in err and '[sandbox] mode = "off"' in err
    assert not (repo / ".aca" / "sessions").exists()
