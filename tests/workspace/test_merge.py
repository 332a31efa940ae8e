"""Landing tasks: one commit per task on the session branch, repeatable, conflicts named."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import git
import pytest

from aca_flows.session.layout import AcaDir
from aca_flows.workspace import (
    DEFAULT_IDENTITY,
    BranchMovedError,
    GitIdentity,
    MergeConflictError,
    SessionBranchCheckedOut,
    TaskWorktree,
    WorkspaceError,
    completed_task_commits,
    land_task,
    read_change_log,
    record_landed_task,
    session_branch_head,
)
from aca_flows.workspace.commit import commit_task_work
from aca_flows.workspace.conflicts import kept_change_ref
from aca_flows.workspace.repository import session_branch_checkouts
from tests.workspace.test_worktree import session_repo


def branch_log(repo, session_id="s1"):
    return repo.git.log(f"aca/{session_id}", "--format=%s").splitlines()


def test_landing_a_task_puts_one_commit_with_trailers_on_the_branch(tmp_path):
    repo = session_repo(tmp_path)
    user_head = repo.head.commit.hexsha
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "app.py").write_text("print('hello')\nprint('bye')\n")
    (wt.path / "new.py").write_text("x = 1\n")
    landed = land_task(
        repo, wt, title="Add bye", summary="# Did it\nAdded.", identity=DEFAULT_IDENTITY
    )

    assert branch_log(repo) == ["aca(t1): Add bye", "init"]
    commit = repo.commit(landed.commit_sha)
    assert commit.author.name == "aca" and commit.author.email == "aca@localhost"
    assert "# Did it" in commit.message
    assert commit.message.rstrip().endswith("Aca-Session: s1\nAca-Task: t1")
    assert repo.git.show(f"{landed.commit_sha}:new.py") == "x = 1"
    # The user's checkout is untouched.
    assert repo.head.commit.hexsha == user_head and repo.active_branch.name == "main"
    assert repo.git.status("--porcelain") == "" and not (tmp_path / "new.py").exists()

    paths = AcaDir(tmp_path).session("s1")
    change = read_change_log(paths)["t1"]
    assert change.commit == landed.commit_sha
    assert sorted(change.files) == ["app.py", "new.py"]
    assert (change.insertions, change.deletions) == (2, 0)
    patch = paths.snapshot_patch("t1").read_text()
    assert "+print('bye')" in patch and "Aca-Task: t1" in patch
    assert completed_task_commits(repo, "s1") == {"t1": landed.commit_sha}


def test_landing_again_after_a_crash_changes_nothing(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "a.txt").write_text("a\n")
    first = land_task(repo, wt, title="A", summary="", identity=DEFAULT_IDENTITY)
    again = land_task(repo, wt, title="A", summary="", identity=DEFAULT_IDENTITY)
    assert again.commit_sha == first.commit_sha and again.already_landed
    assert branch_log(repo) == ["aca(t1): A", "init"]
    redo = record_landed_task(repo, "s1", "t1")
    assert redo is not None and redo.commit_sha == first.commit_sha
    log = json.loads(AcaDir(tmp_path).session("s1").change_log_json.read_text())
    assert list(log["tasks"]) == ["t1"]
    assert record_landed_task(repo, "s1", "never-ran") is None


def test_the_change_log_keeps_every_task_and_never_a_secret(tmp_path):
    repo = session_repo(tmp_path)
    secret = "sk-ant-" + "x7" * 12
    for task_id, name in (("t1", "café.txt"), ("t2", f"{secret}.txt")):
        wt = TaskWorktree.create(repo, "s1", task_id)
        (wt.path / name).write_text("x\n")
        land_task(repo, wt, title=task_id, summary="", identity=DEFAULT_IDENTITY)
        wt.remove()

    paths = AcaDir(tmp_path).session("s1")
    text = paths.change_log_json.read_text(encoding="utf-8")
    assert secret not in text
    log = read_change_log(paths)
    assert list(log) == ["t1", "t2"]
    assert log["t1"].files == ["café.txt"]
    assert log["t2"].files == ["[REDACTED].txt"]
    assert (log["t2"].insertions, log["t2"].deletions) == (1, 0)


def test_a_task_that_changed_nothing_gets_no_empty_commit(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    head = session_branch_head(repo, "s1")
    assert wt.changed_files() == []

    with pytest.raises(WorkspaceError, match="never makes an empty commit"):
        land_task(repo, wt, title="Check only", summary="", identity=DEFAULT_IDENTITY)

    assert session_branch_head(repo, "s1") == head
    assert "t1" not in completed_task_commits(repo, "s1")


def test_changed_files_sees_edits_new_files_and_the_agents_own_commits(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "README.md").write_text("edited\n")
    (wt.path / "new.txt").write_text("new\n")
    (wt.path / ".gitignore").write_text("build/\n")
    (wt.path / "build").mkdir()
    (wt.path / "build" / "out.o").write_text("ignored\n")
    assert wt.changed_files() == [".gitignore", "README.md", "new.txt"]
    wt.git.add("-A")
    wt.git.execute(["git", *DEFAULT_IDENTITY.config_args(), "commit", "-q", "-m", "agent"])
    assert wt.changed_files() == [".gitignore", "README.md", "new.txt"]


def test_the_users_identity_is_used_when_configured(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "a.txt").write_text("a\n")
    ada = GitIdentity("Ada", "ada@example.com")
    landed = land_task(repo, wt, title="A", summary="", identity=ada)
    assert repo.commit(landed.commit_sha).author.email == "ada@example.com"


def test_tasks_started_together_on_different_files_both_land(tmp_path):
    repo = session_repo(tmp_path)
    one = TaskWorktree.create(repo, "s1", "t1")
    two = TaskWorktree.create(repo, "s1", "t2")
    (one.path / "one.txt").write_text("1\n")
    (two.path / "two.txt").write_text("2\n")

    def land(wt):
        return land_task(repo, wt, title=wt.task_id, summary="", identity=DEFAULT_IDENTITY)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(land, [one, two]))
    head = session_branch_head(repo, "s1")
    assert repo.git.show(f"{head}:one.txt") == "1" and repo.git.show(f"{head}:two.txt") == "2"
    assert sorted(branch_log(repo)[:2]) == ["aca(t1): t1", "aca(t2): t2"]
    assert len(repo.commit(head).parents) == 1  # linear: one commit per task
    assert set(completed_task_commits(repo, "s1")) == {"t1", "t2"}


def test_tasks_landing_at_once_each_keep_their_change_log_entry(tmp_path):
    # The change log is written after the merge lock, under a lock of its own.
    import git

    repo = session_repo(tmp_path)
    worktrees = [TaskWorktree.create(repo, "s1", f"t{i}") for i in range(6)]
    for i, wt in enumerate(worktrees):
        (wt.path / f"f{i}.txt").write_text(f"{i}\n")

    def land(wt):
        # A repository object per thread, as the engine's worker threads have.
        mine = git.Repo(repo.working_tree_dir)
        return land_task(mine, wt, title=wt.task_id, summary="", identity=DEFAULT_IDENTITY)

    with ThreadPoolExecutor(6) as pool:
        landed = list(pool.map(land, worktrees))
    log = read_change_log(AcaDir(tmp_path).session("s1"))
    commits = completed_task_commits(repo, "s1")
    assert set(log) == set(commits) == {f"t{i}" for i in range(6)}
    assert {t: log[t].commit for t in log} == commits
    assert [entry.commit_sha for entry in landed] == [commits[f"t{i}"] for i in range(6)]
    assert all(log[f"t{i}"].files == [f"f{i}.txt"] for i in range(6))


def test_tasks_editing_the_same_lines_conflict_and_the_branch_is_unchanged(tmp_path):
    repo = session_repo(tmp_path)
    one = TaskWorktree.create(repo, "s1", "t1")
    two = TaskWorktree.create(repo, "s1", "t2")
    (one.path / "app.py").write_text("print('one')\n")
    (two.path / "app.py").write_text("print('two')\n")
    land_task(repo, one, title="one", summary="", identity=DEFAULT_IDENTITY)
    head = session_branch_head(repo, "s1")
    with pytest.raises(MergeConflictError) as caught:
        land_task(repo, two, title="two", summary="", identity=DEFAULT_IDENTITY)
    assert caught.value.files == ["app.py"]
    assert "app.py" in str(caught.value)
    assert "a resume runs the task again" in str(caught.value)
    # The commit that could not land, for the caller to keep should the task give up.
    assert repo.git.show(f"{caught.value.commit}:app.py") == "print('two')"
    assert session_branch_head(repo, "s1") == head
    assert "t2" not in completed_task_commits(repo, "s1")
    assert two.git.status("--porcelain") == ""  # the worktree is left clean, not mid-pick


def test_work_landing_in_the_same_file_while_a_task_waits_for_the_lock_stops_it(
    tmp_path, monkeypatch
):
    # A task whose branch moved lists the landed files before it waits for the merge lock.
    # Work that lands in its files meanwhile, in other lines (git would merge it cleanly), was
    # never checked together with it: it must be refused all the same.
    import aca_flows.workspace.merge as merge

    repo = session_repo(tmp_path)
    (tmp_path / "shared.txt").write_text("".join(f"line {i}\n" for i in range(20)))
    repo.git.add("shared.txt")
    repo.git.execute(["git", *DEFAULT_IDENTITY.config_args(), "commit", "-qm", "shared"])
    repo.git.update_ref("refs/heads/aca/s1", "HEAD")
    one, two, three = (TaskWorktree.create(repo, "s1", t) for t in ("t1", "t2", "t3"))
    (one.path / "other.txt").write_text("one\n")
    shared = (two.path / "shared.txt").read_text()
    (two.path / "shared.txt").write_text(shared.replace("line 1\n", "line 1, two\n"))
    (three.path / "shared.txt").write_text(shared.replace("line 18\n", "line 18, three\n"))

    def land(wt):
        return land_task(
            repo, wt, title=wt.task_id, summary="", identity=DEFAULT_IDENTITY,
            refuse_unchecked=True,
        )  # fmt: skip

    land(one)  # two's branch has moved: it lists what one changed before the lock
    real_lock, three_landed = merge.merge_lock, None

    def lock_after_three_landed(root, session_id):
        nonlocal three_landed
        if three_landed is None:  # two asks for the lock: three lands first
            three_landed = False  # (three's own ask goes straight to the lock)
            three_landed = land(three)
        return real_lock(root, session_id)

    monkeypatch.setattr(merge, "merge_lock", lock_after_three_landed)
    with pytest.raises(BranchMovedError) as caught:
        land(two)
    assert caught.value.files == ["shared.txt"]
    assert caught.value.head == session_branch_head(repo, "s1") == three_landed.commit_sha
    assert "t2" not in completed_task_commits(repo, "s1")


def test_work_holding_a_file_that_is_not_utf8_lands_and_its_patch_keeps_the_bytes(tmp_path):
    # A legacy file in Latin-1, and a file name that is not UTF-8 either: git hands aca their
    # bytes. The landing used to merge, then fail writing the patch (the task reported
    # failed, its work on the branch).
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    (wt.path / os.fsdecode(b"na\xefve.txt")).write_text("x\n")
    landed = land_task(repo, wt, title="legacy", summary="", identity=DEFAULT_IDENTITY)
    assert landed.commit_sha == session_branch_head(repo, "s1")
    paths = AcaDir(tmp_path).session("s1")
    patch = paths.snapshot_patch("t1").read_bytes()
    assert b"+caf\xe9\n" in patch
    assert sorted(read_change_log(paths)["t1"].files) == ["latin1.txt", "na\ufffdve.txt"]
    assert sorted(landed.change.files) == ["latin1.txt", "na\ufffdve.txt"]
    # The patch is the commit's: it applies in reverse onto the branch holding it.
    repo.git.checkout("-q", "--detach", landed.commit_sha)
    repo.git.apply("--check", "-R", str(paths.snapshot_patch("t1")))


def test_a_kept_change_has_a_ref_git_takes_for_any_task_id_and_its_own(tmp_path):
    repo = session_repo(tmp_path)
    ids = ["t2", "a..b", "a._.b", "a...b", "x.lock", "x.lock_", "v1.", "v1._", "a.b-c_d"]
    for task_id in ids:
        repo.git.update_ref(kept_change_ref("s1", task_id), "HEAD")  # git refuses a bad name
    refs = repo.git.for_each_ref("--format=%(refname)", "refs/aca/conflicts").splitlines()
    assert sorted(refs) == sorted(kept_change_ref("s1", task_id) for task_id in ids)
    assert len(set(refs)) == len(ids)  # no two tasks share one


def test_a_conflict_in_a_file_whose_name_is_not_utf8_names_it_readably(tmp_path):
    repo = session_repo(tmp_path)
    name = os.fsdecode(b"na\xefve.txt")
    one, two = TaskWorktree.create(repo, "s1", "t1"), TaskWorktree.create(repo, "s1", "t2")
    (one.path / name).write_text("one\n")
    (two.path / name).write_text("two\n")
    land_task(repo, one, title="one", summary="", identity=DEFAULT_IDENTITY)
    with pytest.raises(MergeConflictError) as caught:
        land_task(repo, two, title="two", summary="", identity=DEFAULT_IDENTITY)
    assert caught.value.files == ["na\ufffdve.txt"]  # the outcome and the journal are JSON
    assert "na\ufffdve.txt" in str(caught.value)


@pytest.mark.parametrize("old_git", [False, True], ids=["merge-tree", "cherry-pick"])
def test_a_task_landing_after_another_keeps_its_message_and_author_on_top(
    tmp_path, monkeypatch, old_git
):
    if old_git:  # a git before 2.38 has no `merge-tree --write-tree`: the worktree cherry-picks
        monkeypatch.setattr("aca_flows.workspace.merge._replay_onto", lambda *args: None)
    repo = session_repo(tmp_path)
    one = TaskWorktree.create(repo, "s1", "t1")
    two = TaskWorktree.create(repo, "s1", "t2")
    (one.path / "one.txt").write_text("1\n")
    (two.path / "two.txt").write_text("2\n")
    first = land_task(repo, one, title="one", summary="", identity=DEFAULT_IDENTITY)
    summary = "# Notes\n\nkept as written, with a '#' line"
    author = GitIdentity("A", "a@x")
    own = repo.commit(commit_task_work(two, title="two", summary=summary, identity=author))
    landed = land_task(repo, two, title="two", summary=summary, identity=GitIdentity("B", "b@x"))
    on_branch = repo.commit(landed.commit_sha)
    assert on_branch.hexsha == session_branch_head(repo, "s1") != own.hexsha
    assert [p.hexsha for p in on_branch.parents] == [first.commit_sha]
    assert on_branch.message == own.message and "# Notes" in on_branch.message
    assert (on_branch.author.name, on_branch.author.email) == ("A", "a@x")
    assert on_branch.authored_datetime == own.authored_datetime
    assert (on_branch.committer.name, on_branch.committer.email) == ("B", "b@x")
    assert repo.git.show(f"{on_branch.hexsha}:one.txt") == "1"
    assert repo.git.show(f"{on_branch.hexsha}:two.txt") == "2"
    assert completed_task_commits(repo, "s1")["t2"] == on_branch.hexsha


def test_a_session_branch_checked_out_in_a_worktree_of_the_user_is_not_moved(tmp_path):
    """Moving a branch a checkout has out leaves its files behind: `git status` there would
    show the task's new files as staged deletions. The task does not land, the branch stays,
    the error names the checkout and the fix; once fixed, the task lands."""
    repo = session_repo(tmp_path / "repo")
    before = session_branch_head(repo, "s1")
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "b.txt").write_text("b\n")
    other = tmp_path / "my view"
    repo.git.worktree("add", str(other), "aca/s1")  # the user, mid-run

    with pytest.raises(SessionBranchCheckedOut) as refused:
        land_task(repo, wt, title="B", summary="", identity=DEFAULT_IDENTITY)

    message = str(refused.value)
    assert f"the session branch aca/s1 is checked out in {other}" in message
    assert f"git -C '{other}' checkout -" in message and "aca resume s1" in message
    assert "task t1 did not land" in message
    assert session_branch_head(repo, "s1") == before
    assert git.Repo(other).git.status("--porcelain") == ""

    git.Repo(other).git.checkout("--detach")
    landed = land_task(repo, wt, title="B", summary="", identity=DEFAULT_IDENTITY)
    assert session_branch_head(repo, "s1") == landed.commit_sha != before


def test_a_session_branch_checked_out_in_the_users_checkout_is_not_moved(tmp_path):
    repo = session_repo(tmp_path)
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "b.txt").write_text("b\n")
    repo.git.checkout("aca/s1")
    before = session_branch_head(repo, "s1")
    with pytest.raises(SessionBranchCheckedOut, match=f"checked out in {tmp_path}:"):
        land_task(repo, wt, title="B", summary="", identity=DEFAULT_IDENTITY)
    assert session_branch_head(repo, "s1") == before
    assert repo.git.status("--porcelain") == ""


def test_other_branches_checked_out_elsewhere_do_not_stop_a_landing(tmp_path):
    repo = session_repo(tmp_path / "repo")
    repo.git.branch("aca/s1-other")  # a prefix of the session branch's name is another branch
    repo.git.worktree("add", str(tmp_path / "side"), "aca/s1-other")
    repo.git.worktree("add", "--detach", str(tmp_path / "detached"), "aca/s1")
    wt = TaskWorktree.create(repo, "s1", "t1")
    (wt.path / "b.txt").write_text("b\n")
    landed = land_task(repo, wt, title="B", summary="", identity=DEFAULT_IDENTITY)
    assert session_branch_head(repo, "s1") == landed.commit_sha


def test_the_checkouts_of_the_session_branch_are_found_from_any_worktree(tmp_path):
    """Seen from a linked worktree (aca run there), the main checkout counts too; a
    worktree under aca's own folder does not; a rebase of the branch counts as checked out."""
    user = session_repo(tmp_path / "repo")
    user.git.checkout("aca/s1")
    user.git.worktree("add", "-b", "work", str(tmp_path / "linked"))
    linked = git.Repo(tmp_path / "linked")
    assert session_branch_checkouts(linked, "s1") == [tmp_path / "repo"]

    user.git.checkout("main")
    ours = AcaDir(tmp_path / "repo").worktrees_dir("s1")
    user.git.worktree("add", str(ours / "t1"), "aca/s1")
    assert session_branch_checkouts(user, "s1", ignore_under=ours) == []
    assert session_branch_checkouts(user, "s1") == [ours / "t1"]

    admin = next(
        p for p in (tmp_path / "repo" / ".git" / "worktrees").iterdir() if "linked" in p.name
    )
    (admin / "rebase-merge").mkdir()
    (admin / "rebase-merge" / "head-name").write_text("refs/heads/aca/s1\n")
    assert session_branch_checkouts(user, "s1", ignore_under=ours) == [tmp_path / "linked"]
