"""Task worktrees: created from the session head, removed, and stale ones from a crash cleared."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import git
import pytest

from aca_flows.workspace import (
    TaskWorktree,
    discard_spare_worktrees,
    ensure_session_branch,
    open_repository,
    session_branch_head,
)
from aca_flows.workspace.hardened_git import HardenedGit
from aca_flows.workspace.worktree import list_worktrees
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


def test_a_worktree_holding_a_tree_deeper_than_a_path_can_name_is_replaced(tmp_path):
    # An agent's `mkdir d && cd d` loop, 2,100 deep (past PATH_MAX): the worktree stayed, and
    # every resume of the task failed at once (RecursionError) until the user removed it.
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    folder = os.open(wt.path, os.O_RDONLY)
    for _ in range(2100):
        os.mkdir("d", dir_fd=folder)
        inner = os.open("d", os.O_RDONLY, dir_fd=folder)
        os.close(folder)
        folder = inner
    os.close(folder)

    again = TaskWorktree.create(repo, "s1", "t1")

    assert not (again.path / "d").exists()
    assert (again.path / "app.py").read_text() == "print('hello')\n"
    again.remove()
    assert not again.path.exists()


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


def test_a_worktree_set_aside_and_taken_up_holds_nothing_its_last_task_left(tmp_path):
    """A task may take up the worktree of one that ended (a tree's files are written anew
    only where they differ): nothing of the task before may reach it, whatever it did to its
    files, its .git file or its git state."""
    repo = session_repo(tmp_path)
    (tmp_path / ".gitignore").write_text("build/\n")
    repo.git.add(".gitignore")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@e.x", "commit", "-qm", "ign"])
    repo.git.update_ref("refs/heads/aca/s1", "HEAD")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    first = TaskWorktree.create(repo, "s1", "t1")
    admin = first.git_dir
    (first.path / "app.py").write_text("changed\n")  # tracked, changed
    (first.path / "new.py").write_text("untracked\n")
    (first.path / "build").mkdir()
    (first.path / "build" / "out.bin").write_text("ignored\n")
    git.Repo.init(first.path / "nested")  # a repository of its own
    (first.path / "link").symlink_to(outside)
    first.git.add("new.py")  # staged
    (first.path / ".git").unlink()  # pointed elsewhere: aca never reads it
    (first.path / ".git").write_text(f"gitdir: {outside}\n")

    spare = first.set_aside()
    assert spare is not None and not first.path.exists()
    assert spare.path.parent == first.path.parent and spare.path.name.startswith(".spare-")
    head = session_branch_head(repo, "s1")
    taken = TaskWorktree.create(repo, "s1", "t2", spare)

    assert taken.path == tmp_path / ".aca" / "worktrees" / "s1" / "t2" and not spare.path.exists()
    assert taken.git_dir == admin  # the same worktree, taken up
    assert sorted(p.name for p in taken.path.iterdir()) == [".git", ".gitignore", "app.py"]
    assert (taken.path / "app.py").read_text() == "print('hello')\n"
    assert (taken.path / ".git").read_text() == f"gitdir: {admin}\n"
    assert taken.base_sha == head == taken.head()
    assert git.Repo(taken.path).git.status("--porcelain", "--ignored") == ""  # its own .git
    assert list(outside.iterdir()) == []
    entries = [e["worktree"] for e in list_worktrees(repo)]
    assert str(taken.path) in entries and not any(".spare-" in e for e in entries)
    taken.remove()
    assert [e["worktree"] for e in list_worktrees(repo)] == [str(tmp_path)]


def test_spare_worktrees_a_crash_left_are_removed(tmp_path):
    repo = session_repo(tmp_path)
    spare = TaskWorktree.create(repo, "s1", "t1").set_aside()
    assert spare is not None and spare.path.exists()

    discard_spare_worktrees(repo, "s1")

    assert not spare.path.exists()
    assert [e["worktree"] for e in list_worktrees(repo)] == [str(tmp_path)]


def _spare_with(repo, tmp_path, plant) -> tuple[TaskWorktree, TaskWorktree]:
    """A worktree of t1 after ``plant`` changed it, set aside; and t2's, made with it."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mod.py").write_text("x = 1\n")
    repo.git.add("src")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@e.x", "commit", "-qm", "src"])
    repo.git.update_ref("refs/heads/aca/s1", "HEAD")
    first = TaskWorktree.create(repo, "s1", "t1")
    plant(first.path)
    spare = first.set_aside()
    assert spare is not None
    return spare, TaskWorktree.create(repo, "s1", "t2", spare)


@pytest.mark.parametrize(
    "plant",
    [
        # git never lists a .git: a repository planted in a tracked folder outlives `clean`.
        lambda path: (path / "src" / ".git").mkdir(),
        # Nor a FIFO: a check reading it would block.
        lambda path: os.mkfifo(path / "src" / "conftest.py"),
        # Nor the mode of a file or folder made read-only: the next task could not edit them.
        lambda path: (path / "src" / "mod.py").chmod(0o444),
        lambda path: (path / "src").chmod(0o555),
    ],
    ids=["nested-git", "fifo", "read-only-file", "read-only-folder"],
)
def test_a_spare_holding_what_git_cannot_clean_is_not_taken_up(tmp_path, plant):
    repo = session_repo(tmp_path)
    spare, taken = _spare_with(repo, tmp_path, plant)

    assert taken.git_dir != spare.git_dir  # a new worktree, not the spare
    assert sorted(p.name for p in (taken.path / "src").iterdir()) == ["mod.py"]
    assert not spare.path.exists()
    assert len(list_worktrees(repo)) == 2  # the checkout and t2's


def test_a_spare_whose_head_is_on_a_branch_is_not_taken_up_and_the_branch_stays(tmp_path):
    repo = session_repo(tmp_path)
    repo.git.branch("feature")
    before = repo.git.rev_parse("feature")
    spare, taken = _spare_with(
        repo, tmp_path, lambda path: HardenedGit(str(path)).checkout("-q", "feature")
    )

    assert repo.git.rev_parse("feature") == before  # a reset there would have moved it
    assert taken.git_dir != spare.git_dir and taken.head() == session_branch_head(repo, "s1")


def test_a_spare_that_cannot_be_removed_is_set_apart_and_the_task_gets_a_new_worktree(
    tmp_path, monkeypatch
):
    # A folder the agent made unreadable (chmod 000, for a user without root's override).
    from aca_flows.workspace import worktree as module

    repo = session_repo(tmp_path)
    real_discard = module.discard_worktree

    def refused(repo_, path):
        raise PermissionError(13, "Permission denied", str(path))

    def plant(path):
        (path / "src" / ".git").mkdir()  # not taken up: it is removed
        monkeypatch.setattr(module, "discard_worktree", refused)

    spare, taken = _spare_with(repo, tmp_path, plant)
    monkeypatch.setattr(module, "discard_worktree", real_discard)

    assert (taken.path / "src" / "mod.py").exists() and taken.git_dir != spare.git_dir
    (apart,) = taken.path.parent.glob(".apart-*")
    discard_spare_worktrees(repo, "s1")  # the next run of the session removes it
    assert not apart.exists()


def test_a_spare_of_a_tree_with_submodules_is_not_taken_up(tmp_path):
    # git fills no submodule's folder in a worktree, and cleans none: what a task put there
    # would reach the next, unseen by git.
    repo = session_repo(tmp_path)

    def plant(path):
        (path / "lib").mkdir(exist_ok=True)  # empty: the submodule is not filled
        (path / "lib" / "planted.py").write_text("x\n")

    (tmp_path / ".gitmodules").write_text('[submodule "lib"]\n\tpath = lib\n\turl = ./lib\n')
    repo.git.add(".gitmodules")
    head = repo.git.rev_parse("HEAD")
    repo.git.update_index("--add", "--cacheinfo", f"160000,{head},lib")
    spare, taken = _spare_with(repo, tmp_path, plant)

    assert taken.git_dir != spare.git_dir
    assert not (taken.path / "lib" / "planted.py").exists()
