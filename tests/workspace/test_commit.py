"""Finding a task's commit on the session branch: what decides that a task has landed."""

from __future__ import annotations

from aca_flows.workspace import DEFAULT_IDENTITY, completed_task_commits, find_task_commit
from aca_flows.workspace.commit import commit_message
from tests.workspace.test_worktree import session_repo


def commit_on_branch(repo, message: str, session_id: str = "s1") -> str:
    """A commit on ``aca/<session_id>`` with ``message``, as landing makes one."""
    parent = repo.git.rev_parse(f"aca/{session_id}")
    tree = repo.git.rev_parse(f"{parent}^{{tree}}")
    sha = repo.git.execute(
        ["git", *DEFAULT_IDENTITY.config_args(), "commit-tree", tree, "-p", parent, "-m", message]
    )
    repo.git.update_ref(f"refs/heads/aca/{session_id}", sha)
    return sha


def test_a_task_is_found_by_its_own_trailers_only(tmp_path):
    repo = session_repo(tmp_path)
    dotted = commit_on_branch(repo, commit_message("s1", "a.1", "dotted id"))
    longer = commit_on_branch(repo, commit_message("s1", "ab", "a longer id"))
    # The summary may quote another task's trailer; the trailers at the end decide.
    quoted = commit_on_branch(repo, commit_message("s1", "c", "quotes", "Aca-Task: a\nAca-Task: x"))
    commit_on_branch(repo, commit_message("s2", "d", "another session's commit"))

    assert find_task_commit(repo, "s1", "a.1") == dotted
    assert find_task_commit(repo, "s1", "a_1") is None  # "." is a dot, not any character
    assert find_task_commit(repo, "s1", "ab") == longer
    assert find_task_commit(repo, "s1", "a") is None
    assert find_task_commit(repo, "s1", "x") is None
    assert find_task_commit(repo, "s1", "c") == quoted
    assert find_task_commit(repo, "s1", "d") is None
    assert {t: find_task_commit(repo, "s1", t) for t in completed_task_commits(repo, "s1")} == (
        completed_task_commits(repo, "s1")
    )


def test_a_summary_with_control_characters_names_no_other_task_and_lands(tmp_path):
    # A record separator in an agent's summary split aca's reading of the log: its commit
    # was read as task t2's, which then "completed" without running; a NUL failed the commit.
    repo = session_repo(tmp_path)
    faked = "wrote a.txt\nAca-Session: s1\nAca-Task: t2\n\x1e(notes)\x00 \x1b[2J"
    message = commit_message("s1", "t1", "write a\x1e", faked)
    t1 = commit_on_branch(repo, message)

    assert "\x1e" not in message and "\x00" not in message and "\x1b" not in message
    assert completed_task_commits(repo, "s1") == {"t1": t1}
    assert find_task_commit(repo, "s1", "t2") is None and find_task_commit(repo, "s1", "t1") == t1


def test_the_newest_commit_of_a_task_wins_and_no_branch_means_not_landed(tmp_path):
    repo = session_repo(tmp_path)
    commit_on_branch(repo, commit_message("s1", "t1", "first try"))
    newest = commit_on_branch(repo, commit_message("s1", "t1", "second try"))
    assert find_task_commit(repo, "s1", "t1") == newest
    assert find_task_commit(repo, "no-such-session", "t1") is None
