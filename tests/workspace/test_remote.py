"""The working repository's remote: clone, fetch, the session's record, pushes (real git)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import git
import pytest

from aca_flows.workspace import ensure_session_branch
from aca_flows.workspace.remote import (
    RemoteError,
    RemoteRepository,
    public_url,
    restore_session_record,
    save_session_record,
    url_secrets,
    working_area,
)
from tests.fakes.git_repo import make_repo


def commit(repo: Path, name: str, ref: str = "HEAD") -> str:
    """Commit a file ``name`` in the checkout ``repo``; returns the commit."""
    (repo / name).write_text(name)
    g = ["git", "-C", str(repo), "-c", "user.name=u", "-c", "user.email=u@example.com"]
    subprocess.run([*g, "add", "-A"], check=True)
    subprocess.run([*g, "commit", "-q", "-m", name], check=True)
    return git.Repo(repo).git.rev_parse(ref)


@pytest.fixture
def source(tmp_path) -> Path:
    return make_repo(tmp_path / "source")


@pytest.fixture
def bare(tmp_path, source) -> Path:
    path = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(source), str(path)], check=True)
    return path


def test_credentials_are_kept_out_of_what_is_shown_and_written():
    url = "https://me:s3cret-token@git.example.com/team/app.git"
    assert public_url(url) == "https://git.example.com/team/app.git"
    assert url_secrets(url) == ["s3cret-token"]
    # Over https a user name alone is a token; over ssh it is just a user.
    assert public_url("https://ghp_abc@github.com/o/n") == "https://github.com/o/n"
    assert url_secrets("https://ghp_abc@github.com/o/n") == ["ghp_abc"]
    assert public_url("ssh://git@host/o/n.git") == "ssh://git@host/o/n.git"
    assert url_secrets("git@github.com:o/n.git") == []
    # The working area is named after the URL without credentials: the same for both.
    area = working_area(url)
    assert area == working_area("https://git.example.com/team/app.git")
    assert area.parent == Path.home() / ".aca" / "repos" and area.name.startswith("app-")
    assert working_area(url, Path("/somewhere/else")) == Path("/somewhere/else")


def test_checkout_clones_then_fetches_the_newest_default_branch(tmp_path, source, bare):
    remote = RemoteRepository(str(bare), tmp_path / "area")
    repo = remote.checkout()
    assert repo.active_branch.name == "main"
    assert repo.git.config("--get", "remote.origin.url") == str(bare)
    # Someone pushes to main; the next checkout starts from it.
    newer = commit(source, "later.txt")
    subprocess.run(["git", "-C", str(source), "push", "-q", str(bare), "main"], check=True)
    assert remote.checkout().head.commit.hexsha == newer


def test_a_working_area_holding_another_clone_is_refused(tmp_path, bare):
    other = make_repo(tmp_path / "other")
    with pytest.raises(RemoteError, match="is a checkout of no remote"):
        RemoteRepository(str(bare), other).checkout()


def test_credentials_never_reach_the_checkouts_config(tmp_path, bare):
    url = f"file://{bare}"
    area = tmp_path / "area"
    repo = RemoteRepository(url, area).checkout()
    config = (area / ".git" / "config").read_text()
    assert f"url = file://{bare}" in config and "@" not in config
    assert repo.head.is_valid()


def test_the_session_record_round_trips_without_the_lock(tmp_path, bare):
    repo = RemoteRepository(str(bare), tmp_path / "area").checkout()
    session = tmp_path / "area" / ".aca" / "sessions" / "s1"
    (session / "meta").mkdir(parents=True)
    (session / "meta" / "events.jsonl").write_text('{"seq": 1}\n')
    (session / "meta" / "session.lock").write_text("pid 1")
    (session / "execution_logs").mkdir()
    (session / "execution_logs" / "a.log").write_text("log\n")
    first = save_session_record(repo, "s1", session)
    assert save_session_record(repo, "s1", session) == first  # unchanged: no new commit
    (session / "meta" / "events.jsonl").write_text('{"seq": 1}\n{"seq": 2}\n')
    second = save_session_record(repo, "s1", session)
    assert repo.git.rev_parse(f"{second}^") == first

    elsewhere = tmp_path / "elsewhere" / "s1"
    assert restore_session_record(repo, "s1", elsewhere)
    assert (elsewhere / "meta" / "events.jsonl").read_text().count("seq") == 2
    assert (elsewhere / "execution_logs" / "a.log").read_text() == "log\n"
    assert not (elsewhere / "meta" / "session.lock").exists()
    assert not restore_session_record(repo, "unknown", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_fetching_a_session_never_drops_local_work_not_pushed_yet(tmp_path, bare):
    first = RemoteRepository(str(bare), tmp_path / "a")
    repo_a = first.checkout()
    ensure_session_branch(repo_a, "s1")
    session = tmp_path / "a" / ".aca" / "sessions" / "s1"
    (session / "meta").mkdir(parents=True)
    save_session_record(repo_a, "s1", session)
    assert first.push_session(repo_a, "s1").pushed

    # Another worker fetches it, then lands a commit it has not pushed yet.
    second = RemoteRepository(str(bare), tmp_path / "b")
    repo_b = second.checkout()
    assert second.fetch_session(repo_b, "s1")
    assert repo_b.git.rev_parse("aca/s1") == repo_a.git.rev_parse("aca/s1")
    worktree = tmp_path / "wt"
    repo_b.git.worktree("add", str(worktree), "aca/s1")
    ahead = commit(worktree, "task.txt")
    assert second.fetch_session(repo_b, "s1")
    assert repo_b.git.rev_parse("aca/s1") == ahead  # kept, not reset to the remote's
    assert not second.fetch_session(repo_b, "never-pushed")


def test_a_refused_push_is_tried_again_then_reported_and_changes_nothing(tmp_path, bare):
    remote = RemoteRepository(str(bare), tmp_path / "area")
    repo = remote.checkout()
    ensure_session_branch(repo, "s1")
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no pushes today' >&2\nexit 1\n")
    hook.chmod(0o755)
    retries, waits = [], []
    result = remote.push_session(
        repo,
        "s1",
        attempts=3,
        backoff_seconds=1.5,
        on_retry=lambda attempt, wait, error: retries.append((attempt, wait, error)),
        sleep=waits.append,
    )
    assert not result.pushed and result.attempts == 3
    assert result.error.startswith("remote: no pushes today")
    assert waits == [1.5, 3.0] and [r[0] for r in retries] == [1, 2]
    assert result.head == repo.git.rev_parse("aca/s1")
    assert "aca/s1" not in git.Repo(bare).git.branch()

    hook.unlink()
    again = remote.push_session(repo, "s1", sleep=waits.append)
    assert again.pushed and again.attempts == 1
    assert git.Repo(bare).git.rev_parse("aca/s1") == result.head


def test_a_branch_that_diverged_on_the_remote_is_named_with_the_way_out_not_retried(tmp_path, bare):
    remote = RemoteRepository(str(bare), tmp_path / "area")
    repo = remote.checkout()
    ensure_session_branch(repo, "s1")
    (tmp_path / "area" / ".aca" / "sessions" / "s1" / "meta").mkdir(parents=True)
    save_session_record(repo, "s1", tmp_path / "area" / ".aca" / "sessions" / "s1")
    assert remote.push_session(repo, "s1").pushed
    # Someone else pushes to aca/s1; this session lands work of its own meanwhile.
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", "-b", "aca/s1", str(bare), str(other)], check=True)
    commit(other, "theirs.txt")
    subprocess.run(["git", "-C", str(other), "push", "-q", "origin", "aca/s1"], check=True)
    worktree = tmp_path / "wt"
    repo.git.worktree("add", str(worktree), "aca/s1")
    commit(worktree, "ours.txt")

    waits: list[float] = []
    result = remote.push_session(repo, "s1", attempts=3, sleep=waits.append)

    assert not result.pushed and result.attempts == 1 and waits == []
    assert "the remote's aca/s1 has commits this session does not have" in result.error
    # The way out it names works, run anywhere: their commits are kept, the next push
    # delivers the session's work.
    way_out = result.error.split("free the branch: `", 1)[1].split("`", 1)[0]
    subprocess.run(way_out, shell=True, check=True, cwd=tmp_path, capture_output=True)
    theirs = git.Repo(bare).git.show("aca/s1-theirs:theirs.txt")
    assert theirs == "theirs.txt"
    assert remote.fetch_session(repo, "s1")  # a resume's fetch, the branch gone there
    assert repo.git.rev_parse("aca/s1") == result.head
    assert remote.push_session(repo, "s1").pushed
    assert git.Repo(bare).git.rev_parse("aca/s1") == result.head


def test_a_remote_that_takes_branches_only_gets_the_branch_without_the_record(tmp_path, bare):
    remote = RemoteRepository(str(bare), tmp_path / "area")
    repo = remote.checkout()
    ensure_session_branch(repo, "s1")
    (tmp_path / "area" / ".aca" / "sessions" / "s1" / "meta").mkdir(parents=True)
    save_session_record(repo, "s1", tmp_path / "area" / ".aca" / "sessions" / "s1")
    hook = bare / "hooks" / "pre-receive"
    only_branches = (
        "#!/bin/sh\nwhile read old new ref; do case $ref in refs/heads/*) ;; *)\n"
        'echo "only branches: $ref" >&2; exit 1;; esac; done\n'
    )
    hook.write_text(only_branches)
    hook.chmod(0o755)

    result = remote.push_session(repo, "s1", sleep=lambda _: None)

    assert result.pushed and result.attempts == 3  # the refusal was no blip
    assert git.Repo(bare).git.rev_parse("aca/s1") == result.head  # the work is delivered
    assert "the remote refused the session's record (refs/aca/sessions/s1: " in result.error
    assert "only branches: refs/aca/sessions/s1" in result.error
    assert "a resume on another machine cannot find the session" in result.error
    # From then on the branch goes alone at once, and the push says so each time.
    again = remote.push_session(repo, "s1", sleep=lambda _: None)
    assert again.pushed and again.attempts == 1 and again.error == result.error

    # A remote that holds the session's record (pushed by a run of the session) and now
    # refuses ours: no policy, so the branch is not pushed without it, nor said unfindable.
    hook.unlink()
    remote = RemoteRepository(str(bare), tmp_path / "area")  # a new run's
    save_session_record(repo, "s1", tmp_path / "area" / ".aca" / "sessions" / "s1")
    assert remote.push_session(repo, "s1").pushed and not remote.push_session(repo, "s1").error
    hook.write_text(only_branches)
    hook.chmod(0o755)
    worktree = tmp_path / "wt"
    repo.git.worktree("add", str(worktree), "aca/s1")
    commit(worktree, "later.txt")
    meta = tmp_path / "area" / ".aca" / "sessions" / "s1" / "meta"
    (meta / "session.json").write_text("{}")  # the record moves on with the work
    save_session_record(repo, "s1", meta.parent)

    refused = remote.push_session(repo, "s1", attempts=1)

    assert not refused.pushed and "only branches: refs/aca/sessions/s1" in refused.error
    pushed_before = git.Repo(bare).git.rev_parse("aca/s1")
    assert pushed_before != repo.git.rev_parse("aca/s1")  # not pushed without its record


def test_a_working_area_is_removed_only_by_the_process_that_made_it_before_any_other_used_it(
    tmp_path, bare
):
    area = tmp_path / "area"
    assert RemoteRepository(str(bare), area).checkout()
    assert RemoteRepository(str(bare), area).remove_unclaimed() and not area.exists()

    assert RemoteRepository(str(bare), area).checkout()
    RemoteRepository(str(bare), area).checkout()  # another run's checkout: it uses the area
    assert not RemoteRepository(str(bare), area).remove_unclaimed() and (area / ".git").is_dir()

    mine = tmp_path / "mine"  # a folder that was there before: never removed
    mine.mkdir()
    assert RemoteRepository(str(bare), mine).checkout()
    assert not RemoteRepository(str(bare), mine).remove_unclaimed() and (mine / ".git").is_dir()


def test_the_users_own_clone_as_workdir_is_fetched_into_but_never_checked_out(
    tmp_path, source, bare
):
    mine = tmp_path / "mine"
    subprocess.run(["git", "clone", "-q", str(bare), str(mine)], check=True)
    (mine / "README.md").write_text("my edit, not committed\n")
    head = git.Repo(mine).head.commit.hexsha
    newer = commit(source, "later.txt")
    subprocess.run(["git", "-C", str(source), "push", "-q", str(bare), "main"], check=True)

    repo = RemoteRepository(str(bare), mine).checkout()
    assert repo.head.commit.hexsha == head  # HEAD and the edit stay as the user left them
    assert (mine / "README.md").read_text() == "my edit, not committed\n"
    assert repo.git.rev_parse("refs/remotes/origin/main") == newer
