"""The README's main job, as written there: the offline demo lands verified commits."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import git

from aca_flows.cli import main

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup)


def test_readme_has_exactly_two_setup_commands():
    install_and_run, tests = readme_commands()
    assert install_and_run.startswith("python3 -m venv .venv && ")
    assert tests.endswith(".venv/bin/pytest")


def test_the_readme_main_job_runs_the_demo_end_to_end(tmp_path, monkeypatch, capsys):
    install_and_run, _ = readme_commands()
    aca_part = install_and_run.split(".venv/bin/aca ", 1)[1]
    args = shlex.split(aca_part)
    demo = tmp_path / "aca-demo"
    args[args.index("--workdir") + 1] = str(demo)
    monkeypatch.chdir(ROOT)
    assert main(args) == 0
    repo = git.Repo(demo)
    (branch,) = [h for h in repo.heads if h.name.startswith("aca/")]
    subjects = [c.summary for c in repo.iter_commits(branch)]
    assert len(subjects) == 4 and subjects[-1].startswith("Initial commit")
    assert {s.split(")")[0] for s in subjects[:3]} == {"aca(greet", "aca(tests", "aca(readme"}
    greet = (branch.commit.tree / "greet.py").data_stream.read().decode()
    assert 'return f"Hello, {name}!"' in greet
    # The user's branch is untouched: only the initial commit.
    assert [c.summary for c in repo.iter_commits(repo.active_branch)] == [subjects[-1]]
    assert "completed; work is on branch aca/" in capsys.readouterr().out
