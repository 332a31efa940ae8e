"""open_pr: a run delivers its session branch as one pull request on (a fake) GitHub."""

from __future__ import annotations

import time
from pathlib import Path

import git
import pytest

from aca_flows.flows import run_flow
from aca_flows.session.reading import load_session
from aca_flows.workspace.remote import working_area
from tests.fakes.coding_agent import coding_agent, task_of
from tests.fakes.github_server import FakeGitHub
from tests.flows.test_run_ends import load_session_log

TOKEN = "ghp_faketoken0123456789abcdefABCDEF"


@pytest.fixture
def github(monkeypatch, repo):
    """The fake GitHub as the API; the repository's origin names octo/service on github.com
    (never fetched: aca only reads the URL)."""
    with FakeGitHub(token=TOKEN) as fake:
        fake.add_repo("octo/service")
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        git.Repo(repo).create_remote("origin", "git@github.com:octo/service.git")
        yield fake


def run(tmp_path: Path, repo: Path, text: str, **params):
    tasks = tmp_path / "tasks.md"
    tasks.write_text(text)
    return run_flow(task_file=str(tasks), workdir=str(repo), model="claude-test", **params)


def every_text(repo: Path) -> str:
    """Everything aca wrote under .aca (session, logs, results)."""
    aca = repo / ".aca"
    return "\n".join(p.read_text(errors="replace") for p in aca.rglob("*") if p.is_file())


def test_a_run_opens_one_pull_request_listing_tasks_verify_and_cost(
    tmp_path, repo, anthropic_fake, github
):
    for _ in range(20):
        anthropic_fake.anthropic.enqueue(coding_agent)
    text = (
        "# Add the letters\n\n- write a.txt {#a verify='test -s a.txt'}\n"
        "- write b.txt {#b depends_on=a verify=true}\n- write c.txt {#c verify='false'}\n"
    )
    outcome = run(tmp_path, repo, text, open_pr=True)
    summary = outcome.summary
    assert summary["status"] == "failed"  # c's verify never passes
    (pull,) = github.pulls("octo/service")
    assert summary["pull_request"] == pull["html_url"] and summary["pull_request_error"] is None
    assert pull["title"] == "aca: Add the letters"
    assert (pull["head"]["ref"], pull["base"]["ref"]) == (summary["branch"], "main")
    body = pull["body"]
    session = load_session(repo, summary["session_id"])
    for task_id, outcome_word in (("a", "changed"), ("b", "changed"), ("c", "failed")):
        row = next(line for line in body.splitlines() if line.startswith(f"| `{task_id}`"))
        assert f"| {outcome_word}" in row, row
        assert f"${session.tasks[task_id].cost_usd:.4f}" in row
    assert "passed: `test -s a.txt`" in body and "failed: `false`" in body
    # A pass that proves nothing is told as such, as in the log and the task's report.
    assert "passed: `true` (it checks nothing: it passes whatever the work holds)" in body
    assert f"**Total cost:** ${session.cost_usd:.4f}" in body
    assert "/runs/flow-run/" in body  # the link to the flow run
    # Updated as tasks landed, then once at the end: one pull request, opened once.
    creates = [r for r in github.requests if r.method == "POST"]
    updates = [r for r in github.requests if r.method == "PATCH"]
    assert len(creates) == 1 and len(updates) >= 1
    assert TOKEN not in every_text(repo)


def test_a_second_run_of_the_session_updates_the_same_pull_request(
    tmp_path, repo, anthropic_fake, github
):
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    first = run(tmp_path, repo, "# One\n\n- write a.txt {#a}\n", open_pr=True).summary
    again = run(
        tmp_path,
        repo,
        "# One\n\n- write a.txt {#a}\n",
        open_pr=True,
        session_id=first["session_id"],
    ).summary
    assert again["pull_request"] == first["pull_request"]
    assert len(github.pulls("octo/service")) == 1


def test_a_run_on_a_temporary_server_links_no_flow_run_page(
    tmp_path, repo, anthropic_fake, github, monkeypatch
):
    from aca_flows.flows import server

    # Without `aca server start` or PREFECT_API_URL, the server is gone once the run ends.
    monkeypatch.setattr(server, "runs_on_a_temporary_server", lambda: True)
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    run(tmp_path, repo, "# One\n\n- write a.txt {#a}\n", open_pr=True)
    (pull,) = github.pulls("octo/service")
    assert "| `a`" in pull["body"] and "Flow run:" not in pull["body"]


def test_a_refused_token_is_reported_and_the_work_stays_on_the_branch(
    tmp_path, repo, anthropic_fake, github, monkeypatch
):
    wrong = "ghp_wrongtoken0123456789abcdefABCDEF"
    monkeypatch.setenv("GITHUB_TOKEN", wrong)
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    outcome = run(tmp_path, repo, "# One\n\n- write a.txt {#a}\n", open_pr=True)
    summary = outcome.summary
    # The task is done, its product (the pull request) is not: the flow run is not green.
    assert summary["status"] == "completed" and outcome.state_name == "Not delivered"
    assert summary["not_delivered"].startswith("pull request NOT delivered: GitHub 401")
    assert summary["pull_request"] is None
    assert (
        "401" in summary["pull_request_error"]
        and "Bad credentials" in summary["pull_request_error"]
    )
    assert wrong not in summary["pull_request_error"]
    assert github.pulls("octo/service") == []
    assert wrong not in every_text(repo)


def test_without_a_token_the_run_fails_before_any_provider_call(
    tmp_path, repo, anthropic_fake, github, monkeypatch
):
    monkeypatch.delenv("GITHUB_TOKEN")
    outcome = run(tmp_path, repo, "# One\n\n- write a.txt {#a}\n", open_pr=True)
    assert outcome.state_name == "Failed"
    assert "GITHUB_TOKEN" in str(outcome.error)
    assert anthropic_fake.model_calls == []


def test_a_resume_to_deliver_a_pull_request_without_a_token_leaves_the_session_as_it_was(
    tmp_path, repo, anthropic_fake, github, monkeypatch, capsys
):
    from aca_flows.cli import main

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    summary = run(tmp_path, repo, "# One\n\n- write a.txt {#a}\n").summary
    session_id = summary["session_id"]
    journal = repo / ".aca" / "sessions" / session_id / "meta" / "events.jsonl"
    before = journal.read_text()
    monkeypatch.delenv("GITHUB_TOKEN")

    assert main(["resume", session_id, "--workdir", str(repo), "--open-pr"]) == 2

    assert "--open-pr needs a GitHub token" in capsys.readouterr().err
    assert journal.read_text() == before  # no resume, no "failed" end recorded
    assert load_session(repo, session_id).status == "completed"


def test_the_token_comes_from_the_secret_block_named_in_config(
    tmp_path, repo, anthropic_fake, github, monkeypatch
):
    from prefect.blocks.system import Secret

    monkeypatch.delenv("GITHUB_TOKEN")
    Secret(value=TOKEN).save("aca-test-github-token", overwrite=True)
    github.add_repo("octo/service", default_branch="trunk")
    (repo / "aca.toml").write_text(
        '[github]\ntoken_secret = "aca-test-github-token"\nbase_branch = "release"\n'
    )
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    summary = run(tmp_path, repo, "# One\n\n- write a.txt {#a}\n", open_pr=True).summary
    (pull,) = github.pulls("octo/service")
    assert summary["pull_request"] == pull["html_url"]
    # The configured base, not the repository's default branch (trunk).
    assert pull["base"]["ref"] == "release"
    assert github.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in every_text(repo)


def test_a_pull_request_github_refused_is_told_in_the_ending_and_in_sessions_show(
    tmp_path, repo, anthropic_fake, github, monkeypatch, capsys
):
    from aca_flows.cli import main

    wrong = "ghp_wrongtoken0123456789abcdefABCDEF"
    monkeypatch.setenv("GITHUB_TOKEN", wrong)
    remote = tmp_path / "remote.git"
    git.Repo(repo).clone(remote, bare=True)
    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# One\n\n- write a.txt {#a}\n")
    args = ["run", str(tasks), "--repo", str(remote), "--model", "m", "--open-pr"]
    # The work completed and was pushed, the pull request was not: exit 4, not delivered.
    assert main([*args, "--github-repo", "octo/service"]) == 4
    out = capsys.readouterr().out
    ending, pull_line = out.strip().splitlines()[-2:]
    assert ending.startswith("Session ") and f"pushed to {remote}." in ending
    assert pull_line.startswith("Pull request NOT delivered: GitHub 401 ")
    assert "Bad credentials" in pull_line and wrong not in out
    session_id = ending.split(" ", 2)[1]
    again = f"aca resume {session_id} --repo {remote} --open-pr --github-repo octo/service"
    assert pull_line.endswith(f"Once that is fixed, `{again}` delivers it.")

    area = working_area(str(remote))
    assert main(["sessions", "show", session_id, "--workdir", str(area)]) == 0
    shown = capsys.readouterr().out
    assert "pull request    NOT delivered: GitHub 401 " in shown and wrong not in shown
    assert github.pulls("octo/service") == []

    # A resume not asked to deliver it says so as it starts: its own end says nothing of it.
    assert main(["resume", session_id, "--repo", str(remote)]) == 0
    said = " ".join(load_session_log(area, session_id).split())
    assert "pull request was not delivered (GitHub 401 " in said
    assert f"`aca resume {session_id} --repo {remote} --open-pr` (with the --github-repo" in said

    # The token fixed, the command it named delivers the pull request, and no task runs again.
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    calls = len(anthropic_fake.model_calls)
    assert main(again.split()[1:]) == 0
    (pull,) = github.pulls("octo/service")
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"Pull request: {pull['html_url']}"
    assert len(anthropic_fake.model_calls) == calls
    assert main(["sessions", "show", session_id, "--workdir", str(area)]) == 0
    assert f"pull request    {pull['html_url']}" in capsys.readouterr().out


def test_a_delivered_pull_request_is_named_in_the_ending_and_in_sessions_show(
    tmp_path, repo, anthropic_fake, github, capsys
):
    from aca_flows.cli import main

    for _ in range(10):
        anthropic_fake.anthropic.enqueue(coding_agent)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# One\n\n- write a.txt {#a}\n")
    assert main(["run", str(tasks), "--workdir", str(repo), "--model", "m", "--open-pr"]) == 0
    (pull,) = github.pulls("octo/service")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"Pull request: {pull['html_url']}"
    session_id = load_session_ids(repo)[0]
    assert main(["sessions", "show", session_id, "--workdir", str(repo)]) == 0
    assert f"pull request    {pull['html_url']}" in capsys.readouterr().out


def load_session_ids(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / ".aca" / "sessions").iterdir())


def test_a_branch_the_remote_refused_after_its_first_push_is_not_delivered(
    tmp_path, repo, anthropic_fake, github, monkeypatch, capsys
):
    from aca_flows.cli import main
    from aca_flows.flows import remote_sync
    from tests.flows.test_remote_sync import task_commits

    monkeypatch.setattr(remote_sync, "PUSH_BACKOFF_SECONDS", 0.05)
    remote = tmp_path / "remote.git"
    git.Repo(repo).clone(remote, bare=True)

    def after_as_pull_request(request):
        # b starts its work once a's pull request is open: had b landed first, its refused
        # push would rightly have kept a's update from opening one.
        if task_of(request)[0] == "b":
            deadline = time.monotonic() + 30
            while not github.pulls("octo/service") and time.monotonic() < deadline:
                time.sleep(0.05)
        return coding_agent(request)

    for _ in range(20):
        anthropic_fake.anthropic.enqueue(after_as_pull_request)
    # The remote takes the first push (task a) and refuses every later one.
    first = tmp_path / "first-push-taken"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        f'#!/bin/sh\n[ -e "{first}" ] || {{ touch "{first}"; exit 0; }}\n'
        'echo "push refused by policy" >&2\nexit 1\n'
    )
    hook.chmod(0o755)
    tasks = tmp_path / "tasks.md"
    tasks.write_text("# Two\n\n- write a.txt {#a}\n- write b.txt {#b depends_on=a}\n")
    args = ["run", str(tasks), "--repo", str(remote), "--model", "m", "--open-pr"]
    assert main([*args, "--github-repo", "octo/service"]) == 4
    out = capsys.readouterr().out
    ending, pull_line = out.strip().splitlines()[-2:]
    session_id = ending.split(" ", 2)[1]
    branch = f"aca/{session_id}"
    assert task_commits(remote, f"refs/heads/{branch}") == ["a"]
    # The pull request was opened for a (on the remote), never updated to claim b.
    (pull,) = github.pulls("octo/service")
    assert "| `a`" in pull["body"] and "| `b`" in pull["body"]
    row = next(line for line in pull["body"].splitlines() if line.startswith("| `b`"))
    assert "| changed" not in row, row
    again = f"aca resume {session_id} --repo {remote} --open-pr --github-repo octo/service"
    assert pull_line.startswith(f"Pull request NOT delivered: {branch} is not on {remote}: ")
    assert "push refused by policy" in pull_line
    assert pull_line.endswith(f"Once that is fixed, `{again}` delivers it.")
    area = working_area(str(remote))
    assert main(["sessions", "show", session_id, "--workdir", str(area)]) == 0
    assert "pull request    NOT delivered: " in capsys.readouterr().out
