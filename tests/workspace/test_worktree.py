"""Task worktrees: created from the session head, removed, and stale ones from a crash cleared."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import git

from aca_flows.workspace import (
    TaskWorktree,
    ensure_session_branch,
    open_repository,
    session_branch_head,
)
from tests.workspace.test_repository import make_user_repo


def session_repo(tmp_path):
    make_user_repo(tmp_path)
    repo = open_repository(tmp_path)
    ensure_session_branch(repo, "s1")
    return repo


def test_worktree_is_created_from_the_session_head_under_aca(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    assert wt.path == tmp_path / ".aca" / "worktrees" / "s1" / "t1"
    assert (wt.path / "app.py").read_text() == "print('hello')\n"
    assert wt.base_sha == session_branch_head(repo, "s1") == wt.head()
    assert repo.active_branch.name == "main"
    assert repo.git.status("--porcelain") == ""


def test_remove_is_safe_to_repeat(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    wt.remove()
    wt.remove()
    assert not wt.path.exists()
    assert str(wt.path) not in repo.git.worktree("list")


def test_a_retried_task_starts_from_a_clean_worktree(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "half_done.py").write_text("partial\n")
    (wt.path / "app.py").write_text("broken\n")
    again = TaskWorktree.create(repo, "s1", "t1")
    assert not (again.path / "half_done.py").exists()
    assert (again.path / "app.py").read_text() == "print('hello')\n"


def test_a_locked_worktree_left_by_an_interrupted_add_is_replaced(tmp_path):
    repo = session_repo(tmp_path)
    path = tmp_path / ".aca" / "worktrees" / "s1" / "t1"
    repo.git.worktree("add", "--lock", "--detach", str(path), "HEAD")
    wt = TaskWorktree.create(repo, "s1", "t1")
    assert (wt.path / "app.py").exists()
    lines = repo.git.worktree("list", "--porcelain").splitlines()
    assert not any(line.startswith("locked") for line in lines)


def test_a_locked_worktree_whose_folder_is_gone_is_replaced(tmp_path):
    repo = session_repo(tmp_path)
    path = tmp_path / ".aca" / "worktrees" / "s1" / "t1"
    repo.git.worktree("add", "--lock", "--detach", str(path), "HEAD")
    git.rmtree(path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    assert (wt.path / "app.py").exists()


def test_a_leftover_folder_that_is_no_worktree_is_replaced(tmp_path):
    repo = session_repo(tmp_path)
    path = tmp_path / ".aca" / "worktrees" / "s1" / "t1"
    path.mkdir(parents=True)
    (path / "junk").write_text("x")
    wt = TaskWorktree.create(repo, "s1", "t1")
    assert not (wt.path / "junk").exists()
    assert (wt.path / "app.py").exists()


def test_many_tasks_add_and_remove_their_worktrees_at_once(tmp_path):
    # Adds and removals share the admin lock; git keeps concurrent ones of different
    # worktrees apart. Each task gets a clean checkout and nothing is left behind.
    repo = session_repo(tmp_path)

    def cycle(task_id: str) -> str:
        wt = TaskWorktree.create(git.Repo(tmp_path), "s1", task_id)
        content = (wt.path / "app.py").read_text()
        wt.remove()
        return content

    with ThreadPoolExecutor(max_workers=8) as pool:
        contents = list(pool.map(cycle, [f"t{i}" for i in range(16)]))
    assert contents == ["print('hello')\n"] * 16
    assert repo.git.worktree("list", "--porcelain").count("worktree ") == 1  # the checkout
    assert not any((tmp_path / ".aca" / "worktrees" / "s1").glob("t*"))


def test_changed_files_lists_every_kind_of_change_before_and_after_a_commit_in_the_worktree(
    tmp_path,
):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    assert wt.git_dir == Path(wt.git.rev_parse("--absolute-git-dir"))
    (wt.path / ".gitignore").write_text("*.log\n")
    (wt.path / "app.py").write_text("print('changed')\n")  # modified
    (wt.path / "deep" / "er").mkdir(parents=True)
    (wt.path / "deep" / "er" / "new file ü.py").write_text("x = 1\n")  # untracked, nested
    (wt.path / "staged.py").write_text("y = 2\n")
    wt.git.add("staged.py")
    (wt.path / "debug.log").write_text("ignored\n")
    expected = [".gitignore", "app.py", "deep/er/new file ü.py", "staged.py"]
    assert wt.changed_files() == expected
    # An agent that commits its own work moves HEAD: the commit's files still count.
    wt.git.execute(["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qam", "x"])
    (wt.path / "later.py").write_text("z = 3\n")
    assert wt.changed_files() == sorted([*expected, "later.py"])


def test_a_worktree_add_killed_while_it_wrote_commondir_does_not_stop_the_next_one(tmp_path):
    """A SIGKILL inside `git worktree add` leaves an admin folder git itself then chokes on
    ("failed to read .git/worktrees/t1/commondir"); the task's next worktree is made anyway."""
    repo = session_repo(tmp_path)
    killed = TaskWorktree.create(repo, "s1", "t1")
    admin = tmp_path / ".git" / "worktrees" / "t1"
    (admin / "commondir").write_text("")  # killed as git wrote it, after gitdir and .git
    (admin / "locked").write_text("initializing")

    wt = TaskWorktree.create(repo, "s1", "t1")

    assert (killed.path / "app.py").exists()
    assert str(wt.path) in repo.git.worktree("list", "--porcelain")
