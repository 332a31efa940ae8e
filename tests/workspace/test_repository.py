"""The repository: opening it, --init-git, the session branch, .aca excluded, the identity."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import git
import pytest

from aca_flows.errors import AcaError
from aca_flows.workspace import (
    DEFAULT_IDENTITY,
    GitIdentity,
    WorkspaceError,
    commit_identity,
    ensure_session_branch,
    open_repository,
    session_branch_head,
)
from aca_flows.workspace.repository import (
    git_meanwhile,
    read_commit,
    require_repository,
    secrets_left_out,
)


def make_user_repo(path: Path) -> git.Repo:
    """A user's checkout: one commit on main, committed with an explicit identity."""
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, initial_branch="main")
    (path / "app.py").write_text("print('hello')\n")
    repo.git.add("-A")
    repo.git.execute(
        ["git", "-c", "user.name=User", "-c", "user.email=u@example.com", "commit", "-qm", "init"]
    )
    return repo


def test_a_folder_that_is_not_a_repository_is_an_error_naming_the_fix(tmp_path):
    with pytest.raises(WorkspaceError) as caught:
        open_repository(tmp_path)
    assert isinstance(caught.value, AcaError)
    assert "--init-git" in str(caught.value)
    assert not (tmp_path / ".git").exists()


def test_init_git_creates_the_repository_with_a_first_commit(tmp_path):
    (tmp_path / "notes.txt").write_text("x\n")
    repo = open_repository(tmp_path, init_git=True)
    assert repo.head.is_valid()
    assert repo.git.ls_files().splitlines() == ["notes.txt"]
    assert repo.head.commit.author.name == DEFAULT_IDENTITY.name
    assert ".aca/" in (tmp_path / ".git" / "info" / "exclude").read_text()


def test_init_git_leaves_secrets_out_of_the_first_commit(tmp_path):
    # They were committed: in the history and in every task's worktree, so the agents read the
    # `.env` the sandbox hides when it is untracked.
    for name in (".env", ".env.local", ".env.example", "id_rsa", "keys/tls.pem", "app.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    repo = open_repository(tmp_path, init_git=True)
    assert repo.git.ls_files().splitlines() == [".env.example", "app.py"]
    assert secrets_left_out(repo) == [".env", ".env.local", "id_rsa", "keys/tls.pem"]
    assert not repo.is_dirty(untracked_files=True)


def test_init_git_leaves_secrets_out_of_the_first_commit_of_a_repository_made_before(tmp_path):
    # `git init` run by the user, nothing committed: --init-git committed `.env` and the key.
    git.Repo.init(tmp_path)
    for name in (".env", "id_rsa", "app.py"):
        (tmp_path / name).write_text("x\n")
    repo = open_repository(tmp_path, init_git=True)
    assert repo.git.ls_files().splitlines() == ["app.py"]
    assert secrets_left_out(repo) == [".env", "id_rsa"]


def test_an_existing_repository_keeps_its_own_choices(tmp_path):
    repo = git.Repo.init(tmp_path)
    (tmp_path / ".env").write_text("x\n")
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "i"])
    opened = open_repository(tmp_path, init_git=True)
    assert opened.git.ls_files().splitlines() == [".env"] and secrets_left_out(opened) == []


def test_a_repository_without_commits_is_an_error_naming_the_fix(tmp_path):
    git.Repo.init(tmp_path)
    with pytest.raises(WorkspaceError, match="no commits yet.*--init-git"):
        open_repository(tmp_path)


def test_a_subfolder_of_a_repository_is_refused_with_the_top_level_named(tmp_path):
    make_user_repo(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(WorkspaceError, match="--workdir"):
        open_repository(tmp_path / "sub")


def test_session_branch_starts_at_head_and_leaves_the_checkout_alone(tmp_path):
    repo = make_user_repo(tmp_path)
    (tmp_path / "app.py").write_text("print('local edit')\n")  # uncommitted user work
    head = repo.head.commit.hexsha
    repo = open_repository(tmp_path)
    assert ensure_session_branch(repo, "s1") == "aca/s1"
    assert session_branch_head(repo, "s1") == head
    assert repo.active_branch.name == "main"
    assert (tmp_path / "app.py").read_text() == "print('local edit')\n"
    assert repo.git.status("--porcelain") == " M app.py"


def test_session_branch_and_exclude_are_safe_to_repeat(tmp_path):
    repo = make_user_repo(tmp_path)
    open_repository(tmp_path)
    ensure_session_branch(repo, "s1")
    tree_commit = repo.git.execute(
        [
            "git",
            "-c",
            "user.name=U",
            "-c",
            "user.email=u@x",
            "commit-tree",
            "HEAD^{tree}",
            "-m",
            "x",
        ]
    )
    repo.git.update_ref("refs/heads/aca/s1", tree_commit)
    moved = session_branch_head(repo, "s1")
    open_repository(tmp_path)
    ensure_session_branch(repo, "s1")
    assert session_branch_head(repo, "s1") == moved  # an existing branch is kept
    exclude = (tmp_path / ".git" / "info" / "exclude").read_text()
    assert exclude.count(".aca/") == 1


def test_the_session_head_is_the_branch_head_whether_git_keeps_the_ref_loose_or_packed(tmp_path):
    repo = make_user_repo(tmp_path / "user")
    open_repository(repo.working_tree_dir)
    ensure_session_branch(repo, "s1")
    first = repo.head.commit.hexsha
    (tmp_path / "user" / "b.py").write_text("b\n")
    repo.git.add("-A")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "b"])
    second = repo.head.commit.hexsha
    repo.git.update_ref("refs/heads/aca/s1", second, first)
    assert session_branch_head(repo, "s1") == second  # loose, as git just wrote it
    repo.git.pack_refs("--all")  # as `git gc` does: no ref file is left
    assert not (tmp_path / "user" / ".git" / "refs" / "heads" / "aca" / "s1").exists()
    assert session_branch_head(repo, "s1") == second
    repo.git.update_ref("refs/heads/aca/s1", first, second)  # loose again, over the packed one
    assert session_branch_head(repo, "s1") == first
    # Opened from a linked worktree of the user's, the branch is the repository's all the same.
    repo.git.worktree("add", "--detach", str(tmp_path / "linked"), "main")
    assert session_branch_head(git.Repo(tmp_path / "linked"), "s1") == first


def test_a_commit_reads_as_git_prints_it_whether_its_object_is_loose_or_packed(tmp_path):
    repo = make_user_repo(tmp_path / "user")
    (tmp_path / "user" / "b.py").write_text("b\n")
    repo.git.add("-A")
    message = "aca(t1): add b\n\n# a heading, kept\n\nAca-Session: s1\nAca-Task: t1"
    repo.git.execute(["git", "-c", "user.name=Ü", "-c", "user.email=u@x", "commit", "-qm", message])
    sha = repo.head.commit.hexsha
    printed = repo.git.cat_file("commit", sha, strip_newline_in_stdout=False)
    loose = tmp_path / "user" / ".git" / "objects" / sha[:2] / sha[2:]
    assert loose.exists() and read_commit(repo, sha) == printed
    repo.git.gc("--quiet")  # packed: no loose file is left
    assert not loose.exists() and read_commit(repo, sha) == printed


def test_aca_folder_never_shows_as_a_change(tmp_path):
    make_user_repo(tmp_path)
    open_repository(tmp_path)
    (tmp_path / ".aca" / "sessions").mkdir(parents=True)
    (tmp_path / ".aca" / "sessions" / "x.json").write_text("{}")
    out = subprocess.run(
        ["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.stdout == ""


def test_a_session_id_that_is_no_branch_name_is_refused(tmp_path):
    repo = make_user_repo(tmp_path)
    with pytest.raises(WorkspaceError, match="branch name"):
        ensure_session_branch(repo, "bad..id")


def test_identity_is_aca_without_git_configuration(tmp_path):
    repo = make_user_repo(tmp_path)
    assert commit_identity(repo) == GitIdentity("aca", "aca@localhost")


def test_identity_is_the_users_when_configured(tmp_path):
    repo = make_user_repo(tmp_path)
    with repo.config_writer() as config:
        config.set_value("user", "name", "Ada")
        config.set_value("user", "email", "ada@example.com")
    assert commit_identity(repo) == GitIdentity("Ada", "ada@example.com")


def test_a_git_command_run_meanwhile_gives_its_output_or_its_error(tmp_path):
    repo = make_user_repo(tmp_path)
    (tmp_path / "big.txt").write_text("a line of the file\n" * 20000)  # more than a pipe holds
    repo.git.add("big.txt")
    repo.git.execute(["git", "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-qm", "big"])
    with git_meanwhile(repo.git, "show", "HEAD:big.txt") as shown:
        assert repo.git.rev_parse("HEAD")  # another git command while it runs
        assert shown() == "a line of the file\n" * 20000
    missing = git_meanwhile(repo.git, "show", "HEAD:does-not-exist")
    with pytest.raises(git.GitCommandError, match="does-not-exist"), missing as shown:
        shown()


def test_a_repository_of_another_user_is_named_as_git_refuses_it(tmp_path):
    # git refuses it ("dubious ownership"): aca called it one with no commits yet and
    # suggested --init-git, which ended in a traceback.
    make_user_repo(tmp_path / "repo")
    for path in [tmp_path / "repo", *(tmp_path / "repo").rglob("*")]:
        os.chown(path, 65534, 65534, follow_symlinks=False)

    for init_git in (False, True):
        with pytest.raises(WorkspaceError) as refused:
            require_repository(tmp_path / "repo", init_git=init_git)
        assert "belongs to another user" in str(refused.value)
        assert "git config --global --add safe.directory" in str(refused.value)
        with pytest.raises(WorkspaceError, match="belongs to another user"):
            open_repository(tmp_path / "repo", init_git=init_git)
