"""The bubblewrap command line: what is hidden, what is read-only, what is writable."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from aca_flows.sandbox import Limits, bwrap_argv, mount_plan, protected_paths
from aca_flows.sandbox.bwrap import bwrap_problem, read_rules
from tests.fakes.git_repo import make_repo

LIMITS = Limits(
    cpu_seconds=5, memory_bytes=2**30, file_size_bytes=2**20, max_processes=64, tmp_bytes=2**24
)


def task_worktree(tmp_path: Path) -> tuple[Path, Path]:
    repo = make_repo(tmp_path / "repo")
    worktree = repo / ".aca" / "worktrees" / "s1" / "t1"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(worktree)],
                   check=True)  # fmt: skip
    return repo, worktree


def pairs(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_the_plan_follows_the_worktree_to_its_repository(tmp_path):
    repo, worktree = task_worktree(tmp_path)
    plan = mount_plan(worktree, home=tmp_path / "home")

    assert plan.repository == repo
    assert plan.git_dirs == (repo / ".git" / "worktrees" / "t1", repo / ".git")
    assert {Path("/home"), Path("/root"), Path("/run"), repo / ".aca"} <= set(plan.hidden)
    assert protected_paths(plan)[:2] == list(plan.git_dirs)
    assert repo / "README.md" in protected_paths(plan)


def test_the_users_other_checkouts_of_the_repository_are_hidden_as_it_is(tmp_path):
    # git in the sandbox names them (.git/worktrees/*/gitdir); their untracked .env and
    # unstaged work were readable wherever they were outside a home.
    repo, worktree = task_worktree(tmp_path)
    hotfix = tmp_path / "app-hotfix"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(hotfix)], check=True)

    plan = mount_plan(worktree, home=tmp_path / "home")

    assert plan.checkouts == (hotfix,)  # not the task's worktree, nor the repository's
    argv = bwrap_argv(plan, ["/bin/true"], limits=LIMITS, network=False)
    assert str(hotfix) in pairs(argv, "--tmpfs")
    assert hotfix in read_rules(plan)[0] and hotfix in protected_paths(plan)
    # aca run in the user's linked worktree: the main checkout is the other one.
    task = hotfix / ".aca" / "worktrees" / "s1" / "t1"
    subprocess.run(["git", "-C", str(hotfix), "worktree", "add", "-q", "--detach", str(task)],
                   check=True)  # fmt: skip
    from_hotfix = mount_plan(task, repository=hotfix, home=tmp_path / "home")
    assert from_hotfix.repository == hotfix and from_hotfix.checkouts == (repo,)
    # git works there: the repository's common directory is shown, not only the checkout's.
    admin = Path((task / ".git").read_text().removeprefix("gitdir:").strip())
    assert from_hotfix.git_dirs == (admin, repo / ".git")


def test_a_checkout_that_holds_the_worktree_is_never_denied_whole(tmp_path):
    # A linked worktree inside the main checkout: Claude Code's sandbox denies a path with all
    # it holds, and denying the main checkout made the task's worktree read-only.
    repo = make_repo(tmp_path / "main")
    inner = repo / "wt"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(inner)], check=True)
    task = inner / ".aca" / "worktrees" / "s1" / "t1"
    subprocess.run(["git", "-C", str(inner), "worktree", "add", "-q", "--detach", str(task)],
                   check=True)  # fmt: skip

    plan = mount_plan(task, repository=inner, home=tmp_path / "home")

    assert plan.checkouts == (repo,)  # bwrap hides it, and shows the worktree in it again
    assert str(repo) in pairs(bwrap_argv(plan, ["/bin/true"], limits=LIMITS, network=False),
                              "--tmpfs")  # fmt: skip
    assert repo not in read_rules(plan)[0] and repo not in protected_paths(plan)
    # Shown read-only on request, a folder around it shows it no more than its own .env.
    shown = mount_plan(task, repository=inner, home=tmp_path / "home", read_only=(tmp_path,))
    argv = bwrap_argv(shown, ["/bin/true"], limits=LIMITS, network=False)
    assert argv.index(str(repo), argv.index("--ro-bind-try")) > argv.index("--ro-bind-try")


def test_a_bare_repositorys_folder_is_no_checkout(tmp_path):
    # `git clone --bare url proj/.git`, worktrees beside it: proj is no checkout to hide.
    bare = tmp_path / "proj" / ".git"
    subprocess.run(["git", "clone", "-q", "--bare", str(make_repo(tmp_path / "src")), str(bare)],
                   check=True)  # fmt: skip
    main = tmp_path / "proj" / "main"  # the checkout aca runs in, its task's worktree in it
    subprocess.run(["git", "-C", str(bare), "worktree", "add", "-q", str(main)], check=True)
    task = main / ".aca" / "worktrees" / "s1" / "t1"
    subprocess.run(["git", "-C", str(main), "worktree", "add", "-q", "--detach", str(task)],
                   check=True)  # fmt: skip

    plan = mount_plan(task, repository=main, home=tmp_path / "home")

    assert plan.repository == main and tmp_path / "proj" not in plan.checkouts


def test_claude_codes_deny_list_has_acas_config_before_it_exists_and_the_other_worktrees(
    tmp_path,
):
    repo, worktree = task_worktree(tmp_path)
    others = [repo / ".aca" / "worktrees" / "s1" / "t2", repo / ".aca" / "worktrees" / "s0" / "t1"]
    for other in others:
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", "--detach", str(other)],
                       check=True)  # fmt: skip

    denied = protected_paths(mount_plan(worktree))

    assert {repo / "aca.toml", repo / ".aca" / "config.toml", others[0], others[1].parent} <= set(
        denied
    )
    assert not any(worktree == p or p in worktree.parents for p in denied[2:])


def test_the_worktree_is_the_one_writable_bind_and_comes_after_what_hides_it(tmp_path):
    repo, worktree = task_worktree(tmp_path)
    argv = bwrap_argv(mount_plan(worktree), ["/bin/true"], limits=LIMITS, network=False)

    assert argv[:4] == [shutil.which("bwrap"), "--ro-bind", "/", "/"]
    assert pairs(argv, "--bind") == [str(worktree)]
    # Order matters: the checkout is replaced by an empty folder (.aca with it), the worktree
    # and the git directory are shown in it, then it is made read-only.
    assert str(repo) in pairs(argv, "--tmpfs")
    assert pairs(argv, "--ro-bind") == ["/", str(repo / ".git")]
    assert argv.index(str(repo)) < argv.index(str(worktree)) < argv.index(str(repo / ".git"))
    assert pairs(argv, "--remount-ro") == ["/dev", str(repo)]
    assert len(argv) - argv[::-1].index("--remount-ro") > argv.index(str(repo / ".git"))
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--") + 1].endswith("prlimit")
    assert "--nproc=64" in argv and "--cpu=5" in argv and argv[-1] == "/bin/true"


def test_network_can_be_allowed(tmp_path):
    _, worktree = task_worktree(tmp_path)
    argv = bwrap_argv(mount_plan(worktree), ["/bin/true"], limits=LIMITS, network=True)
    assert "--unshare-net" not in argv


def test_a_worktree_git_file_pointing_anywhere_does_not_widen_the_plan(tmp_path):
    worktree = tmp_path / "wt"
    worktree.mkdir()
    (worktree / ".git").write_text("gitdir: /root/.ssh\n")
    plan = mount_plan(worktree)
    assert plan.repository is None and Path("/root") in plan.hidden
    assert plan.git_dirs == ()  # /root/.ssh is no git directory: nothing is shown for it


def test_bubblewrap_missing_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "bubblewrap ('bwrap') is not installed" in bwrap_problem()
    monkeypatch.undo()
    assert bwrap_problem() is None


def test_aca_s_folder_in_a_home_is_hidden_again_under_a_path_shown(tmp_path):
    """``~/.aca`` holds the warm runner's socket and token (it runs what it is sent outside
    the sandbox): hidden with the home, and hidden again when the home is shown read-only."""
    home = tmp_path / "home"
    (home / ".aca" / "server").mkdir(parents=True)
    _, worktree = task_worktree(tmp_path)

    hidden = bwrap_argv(mount_plan(worktree, home=home), ["/bin/true"], limits=LIMITS,
                        network=True)  # fmt: skip
    shown = bwrap_argv(mount_plan(worktree, read_only=(home,), home=home), ["/bin/true"],
                       limits=LIMITS, network=True)  # fmt: skip

    # The home's own tmpfs hides it: no mount that would put a folder in the empty home.
    assert str(home) in pairs(hidden, "--tmpfs")
    assert str(home / ".aca") not in pairs(hidden, "--tmpfs")
    shown_home = next(i for i in range(len(shown) - 1) if shown[i : i + 2] == [
        "--ro-bind-try", str(home)])  # fmt: skip
    hide_again = shown.index(str(home / ".aca"))
    assert shown_home < hide_again and shown[hide_again - 1] == "--tmpfs"


def git_repo_with_a_secret(path: Path) -> Path:
    """A git repository holding a secret beside its .git: a dotfiles home, say."""
    make_repo(path)
    (path / "secret.txt").write_text("HOME-SECRET\n")
    return path


def test_a_git_file_rewritten_to_point_elsewhere_widens_no_plan(tmp_path):
    repo, worktree = task_worktree(tmp_path)
    home = git_repo_with_a_secret(tmp_path / "home")
    other = task_worktree(tmp_path / "other")[1]  # a real admin folder, of another worktree
    recorded = mount_plan(worktree, home=tmp_path / "nohome")
    admin = repo / ".git" / "worktrees" / "t1"

    for rewrite in (f"gitdir: {home}/.git", f"gitdir: {other.parents[3]}/.git/worktrees/t1",
                    f"gitdir: {home}"):  # fmt: skip
        (worktree / ".git").write_text(rewrite + "\n")
        # From what was recorded when the worktree was made: the same plan as before.
        later = mount_plan(worktree, git_dir=admin, repository=repo, home=tmp_path / "nohome")
        assert later == recorded
        # Read from the .git file: nothing of the other repository is shown.
        read = mount_plan(worktree, home=tmp_path / "nohome")
        assert read.git_dirs == () and read.repository is None, rewrite
    (worktree / ".git").unlink()
    (worktree / ".git").symlink_to(home / ".git")
    assert mount_plan(worktree).git_dirs == ()


def test_a_recorded_git_dir_that_is_not_the_repositorys_is_never_shown(tmp_path):
    repo, worktree = task_worktree(tmp_path)
    home = git_repo_with_a_secret(tmp_path / "home")

    plan = mount_plan(worktree, git_dir=home / ".git", repository=repo)
    assert plan.git_dirs == () and plan.repository == repo  # the checkout is still hidden
    argv = bwrap_argv(plan, ["/bin/true"], limits=LIMITS, network=False)
    assert str(home) not in " ".join(argv)
    # Nor is the admin folder of this worktree claimed for another repository.
    admin = repo / ".git" / "worktrees" / "t1"
    assert mount_plan(worktree, git_dir=admin, repository=home).git_dirs == ()


def test_a_path_asked_for_inside_acas_folder_is_not_shown(tmp_path):
    home = tmp_path / "home"
    (home / ".aca" / "server").mkdir(parents=True)
    _, worktree = task_worktree(tmp_path)
    plan = mount_plan(worktree, read_only=(home / ".aca" / "server", home / ".cargo"), home=home)
    assert plan.read_only == ((home / ".cargo").resolve(),)
