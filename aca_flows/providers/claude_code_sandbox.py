"""What the ``claude`` process runs with: its environment and Claude Code's sandbox settings.

- ``claude_environment``: ``options.env`` when sandboxed; every inherited variable claude does
  not need is passed blank, and Claude Code scrubs its credentials from its commands' env;
  ``PATH`` keeps its absolute folders that exist only; a run that may run commands gets
  ``HOME=~/.aca/claude-home`` (``claude_home``), so the placeholders Claude Code's sandbox
  makes in its home never land in the user's;
- ``quiet_environment`` (``QUIET_ENV``): Claude Code's non-essential traffic, its git
  instructions, its auto memory and Bun's idle GC and DFG JIT off, unless the environment sets
  the variable itself;
- ``claude_sandbox_settings``: Claude Code's own sandbox for Bash, with no unsandboxed escape,
  no home nor the user's checkout readable but the worktree and git's folders, no
  credentials, ``protected`` paths not writable;
- ``denied_bash_rules``: aca's deny list as ``Bash(...)`` permission rules;
- ``bwrap_with_homes_read_only``: a folder for the front of claude's ``PATH`` whose ``bwrap``
  remounts /home and /root read-only, which Claude Code's sandbox binds writable, and shows
  the run's own folder (``PRIVATE_TMP``) as ``/tmp``, which it binds writable, host's and all;
- ``npm_root_answered``: a folder for the front of claude's ``PATH`` whose ``npm`` answers
  ``npm root -g`` at once (Claude Code's sandbox asks it at every start, to look for its
  seccomp helper: about 0.2 s of wall time and 0.3 s of CPU of node per task); anything else
  goes to npm itself;
- ``dying_with_aca``: the binary to start for claude, which is killed when aca is.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aca_flows._search_path import absolute_folders
from aca_flows.session.secret_values import register_handed_over

__all__ = [
    "PRIVATE_TMP",
    "QUIET_ENV",
    "bwrap_with_homes_read_only",
    "claude_environment",
    "claude_home",
    "claude_home_path",
    "claude_sandbox_settings",
    "denied_bash_rules",
    "dying_with_aca",
    "end_leftover_bridges",
    "npm_root_answered",
    "private_tmp",
    "private_tmp_of",
    "quiet_environment",
    "scratch_parent",
]

# What the claude process needs from aca's environment; every other inherited variable is
# passed blank (the SDK starts claude with aca's environment merged under ``options.env``).
CLAUDE_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "TERM", "TZ", "TMPDIR"}
    | {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}
    | {"NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "ACA_CLAUDE_CLI", "BUN_GC_TIMER_DISABLE"}
)
# BUN_JSC_: claude's JavaScript engine options (no secrets); claude refuses to start with one
# passed blank ("invalid JSC environment variable").
CLAUDE_ENV_PREFIXES = (
    "ANTHROPIC_",
    "CLAUDE_",
    "DISABLE_",
    "LC_",
    "AWS_BEARER_TOKEN_BEDROCK",
    "BUN_JSC_",
)


# What an unattended run has no use for. Side traffic: a model call on the task's model to
# title the session, a connectivity check, telemetry, error reports, update checks (measured
# against the fake server: one paid request and about 0.2 s of CPU per claude process). Git
# instructions: aca commits, so Claude Code's commit and pull-request instructions, its
# attribution lines and the git-status snapshot it gathers at start-up (six git processes per
# claude process, about 2,000 input tokens in every request) only contradict aca's prompt.
# Auto memory: a folder outside the worktree (``~/.claude/projects/<repository>/memory``),
# shared by every task and session on the repository, that the model is told to write to and
# every request carries (about 3,000 tokens): a task starts from its prompt and its worktree.
# Bun's idle GC timer (claude is a Bun program): collections of a ~200 MB heap while claude
# waits for the model, about 0.2 of a short run's 0.7 CPU-s (eight at once on two cores: most
# of what held bench/peer.py above its target). The heap is still collected as it grows;
# about 35 MB more per process. Bun's optimizing JIT tier (DFG): it compiles start-up code
# that a run of a few turns never gets back, about 0.05 of the 0.45 CPU-s before claude's first
# request (medians of interleaved runs against the fake server; a 21-turn run of large reads
# spent less too, 1.61 -> 1.48 CPU-s); hot code still runs compiled by the baseline JIT. Both
# reach the commands claude runs (a `bun` the agent starts), as its whole environment does.
QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_DISABLE_GIT_INSTRUCTIONS": "1",
    "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
    "BUN_GC_TIMER_DISABLE": "1",
    "BUN_JSC_useDFGJIT": "0",
}


def quiet_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``QUIET_ENV`` without what ``environ`` sets itself: the user's own value wins (Claude
    Code treats any non-empty value as on, so an empty one turns the traffic back on)."""
    return {name: value for name, value in QUIET_ENV.items() if name not in environ}


def claude_environment(
    environ: Mapping[str, str], extra_names: list[str] | tuple[str, ...] = (), *, scrub: bool = True
) -> dict[str, str]:
    """``options.env`` for claude: blanks every inherited variable it does not need, and
    (``scrub``, for a run that may run commands) has Claude Code scrub its own credentials from
    the environment of the commands it runs: that starts its sandbox, placeholders and all."""
    register_handed_over(extra_names, environ)
    keep = CLAUDE_ENV_NAMES | set(extra_names)
    env = {
        name: ("" if name not in keep and not name.startswith(CLAUDE_ENV_PREFIXES) else value)
        for name, value in environ.items()
    }
    if scrub:
        env["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"] = "1"
        # Its sandbox then creates empty dotfiles and folders in HOME to mount over (.bashrc,
        # .netrc, .npmrc, .gitconfig, .config/gh, .pip, ...): in a home of aca's, not the user's.
        env["HOME"] = str(claude_home(environ))
    if "PATH" in env:
        # claude is started, and starts bwrap, socat and git outside its sandbox, in the
        # task's worktree: no relative entry may find the agent's own program there. Nor a
        # missing folder: its sandbox creates every PATH folder under /home, /root, /tmp...
        env["PATH"] = os.pathsep.join(
            folder for folder in absolute_folders(env["PATH"]).split(os.pathsep)
            if os.path.isdir(folder)
        )  # fmt: skip
    return env


# What claude reads in its home, shown in ``claude_home`` as links to the user's own: its
# login, settings and transcripts (``.claude``, made when missing, as claude would) and its
# state (``.claude.json``: claude writes it where the link points), and git's global
# configuration where the user has one (claude would create a missing one, through a link too).
CLAUDE_HOME_LINKS = (".claude", ".claude.json")
GIT_HOME_LINKS = (".gitconfig", ".config/git")


def claude_home_path() -> Path:
    return Path.home() / ".aca" / "claude-home"


def claude_home(environ: Mapping[str, str] | None = None) -> Path:
    """``~/.aca/claude-home``: the ``HOME`` of a claude whose sandbox is on. It holds links to
    what claude and git read of the user's home (``CLAUDE_HOME_LINKS``, ``GIT_HOME_LINKS``),
    and whatever claude creates in its home besides. Commands in its sandbox cannot write it
    (``claude_sandbox_settings``)."""
    environ = os.environ if environ is None else environ
    real, home = Path.home(), claude_home_path()
    (home / ".config").mkdir(parents=True, exist_ok=True)
    if not environ.get("CLAUDE_CONFIG_DIR"):
        (real / ".claude").mkdir(mode=0o700, exist_ok=True)
    for name in (*CLAUDE_HOME_LINKS, *GIT_HOME_LINKS):
        if name in CLAUDE_HOME_LINKS or (real / name).exists():
            _link(home / name, real / name)
        elif (home / name).is_symlink():
            # The user's is gone: claude would create it again, empty, through the link.
            (home / name).unlink(missing_ok=True)
    return home


def _link(link: Path, target: Path) -> None:
    """``link`` pointing at ``target``, replaced atomically when it is anything else (claude
    may have written a file over it); runs of other tasks and processes may do the same."""
    try:
        if os.readlink(link) == str(target):
            return
    except OSError:
        pass
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link, ignore_errors=True)  # os.replace cannot put a link over a folder
    spare = link.with_name(f"{link.name}.{os.getpid()}.{threading.get_ident()}.link")
    spare.unlink(missing_ok=True)
    os.symlink(target, spare)
    os.replace(spare, link)


# Credentials a command has no business reading, wherever the homes are.
HIDDEN_IN_HOME = (".ssh", ".aws", ".git-credentials", ".netrc", ".gnupg", ".docker", ".kube")
HIDDEN_IN_HOME += (".config/gcloud", ".claude/.credentials.json")
# Package registries' and hosts' tokens: Claude Code binds the homes back over their denied
# read (``bwrap_with_homes_read_only``), so each is hidden by its name.
HIDDEN_IN_HOME += (".npmrc", ".pypirc", ".config/gh", ".config/hub", ".gem/credentials")
HIDDEN_IN_HOME += (".cargo/credentials", ".cargo/credentials.toml", ".m2/settings.xml")
HIDDEN_IN_HOME += (".terraformrc", ".terraform.d/credentials.tfrc.json", ".vault-token")
HIDDEN_IN_HOME += (".config/op", ".azure", ".config/hcloud", ".pgpass", ".my.cnf")
# aca's own folder, whatever path the user shows around it: its warm runner's socket and token
# (it runs what it is sent outside any sandbox), clones of other repositories, plan seals.
HIDDEN_IN_HOME += (".aca",)


# Claude Code's sandbox leaves these writable by default (seen with claude 2.1.332 on Linux);
# the homes too, which cannot be denied here (a worktree in one could not be written, nor its
# mount points made): ``bwrap_with_homes_read_only``.
SYSTEM_WRITABLE = ("/var", "/opt", "/mnt", "/srv", "/run")


def claude_sandbox_settings(
    network: bool,
    cwd: str | None,
    protected: list[str] | tuple[str, ...] = (),
    *,
    unreadable: list[str] | tuple[str, ...] = (),
    readable: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Claude Code's own sandbox: Bash reads no home, nor ``unreadable`` (the user's checkout),
    but the working directory and ``readable`` inside them (git's folders, the user's
    ``read_only_paths``), and no credentials even there; it writes none of ``protected`` (the
    repository's ``.git``, aca's session records) nor system folders, and has no way around
    it. A home holding the worktree is no exception: a script the agent wrote read the user's
    tokens there (``~/.pypirc``, ``~/.config/gh``) and sent them to the model."""
    homes = [Path("/root"), Path("/home"), Path.home()]
    # Only the credentials there are: the homes are read-only to Bash, so none appears while
    # claude runs but by the user's own hand. Each path denied costs claude's start-up (about
    # 0.2 CPU-s for the ~90 of three homes, most of them absent: bench/peer.py).
    hidden = (h / name for h in homes for name in HIDDEN_IN_HOME)
    deny = {str(h) for h in homes} | {str(path) for path in hidden if os.path.lexists(path)}
    deny |= set(unreadable)
    allow = [str(Path(cwd).resolve()), *readable] if cwd else list(readable)
    settings: dict[str, Any] = {
        "enabled": True,
        "allowUnsandboxedCommands": False,
        "autoAllowBashIfSandboxed": True,
        "filesystem": {
            "denyRead": sorted(deny),
            # Shown again inside what is denied; a path of ``HIDDEN_IN_HOME`` stays denied.
            "allowRead": list(dict.fromkeys(allow)),
            # claude's home (``claude_home``): what claude reads there is its settings.
            "denyWrite": [*SYSTEM_WRITABLE, str(claude_home_path()), *protected],
        },
    }
    if not network:
        settings["network"] = {"allowedDomains": [], "allowLocalBinding": False}
    return settings


def denied_bash_rules(deny_commands: list[str]) -> list[str]:
    """aca's deny list as Claude Code permission rules: ``Bash(curl:*)`` for ``curl``."""
    return [f"Bash({entry.strip()}:*)" for entry in deny_commands if entry.strip()]


NPM_SHIM = """#!/bin/sh
# Written by aca (aca_flows/providers/claude_code_sandbox.py): Claude Code's sandbox runs
# `npm root -g` at every start; its answer, read once, is given from npm.root beside this.
if [ "$#" -eq 2 ] && [ "$1" = root ] && [ "$2" = -g ] && [ -s "$0.root" ]; then
  exec cat "$0.root"
fi
exec {npm} "$@"
"""


NPM_PREFIX_VARIABLES = ("npm_config_prefix", "NPM_CONFIG_PREFIX")


def npm_root_answered(environ: Mapping[str, str]) -> str | None:
    """The folder of an ``npm`` that answers ``npm root -g`` from a copy of the real answer
    (made once: ``~/.aca/npm-shim/<key>``), or ``None`` when ``environ``'s PATH has no npm.
    The key changes with npm itself and its prefix settings, so the copy is never stale.
    npm is looked for in PATH's absolute folders only: aca runs it, and claude the shim, from
    folders (the checkout, the worktree) where a relative entry would find a file of theirs."""
    npm = shutil.which("npm", path=absolute_folders(environ.get("PATH", os.defpath)))
    if npm is None:
        return None
    npmrc = Path.home() / ".npmrc"
    key = "\0".join(
        [
            os.path.realpath(npm),
            *(environ.get(name, "") for name in NPM_PREFIX_VARIABLES),
            str(npmrc.stat().st_mtime_ns) if npmrc.exists() else "",
        ]
    )
    folder = Path.home() / ".aca" / "npm-shim" / hashlib.sha256(key.encode()).hexdigest()[:16]
    return _npm_shim(npm, folder)


_NPM_SHIM_LOCK = threading.Lock()  # a provider's thread and its first call may both ask


@functools.cache
def _npm_shim(npm: str, folder: Path) -> str | None:
    from aca_flows.session.files import write_text_atomic

    shim = folder / "npm"
    with _NPM_SHIM_LOCK:
        if shim.is_file():
            return str(folder)
        try:
            root = subprocess.run(
                [npm, "root", "-g"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / "npm.root", root + "\n", redact=False, durable=False)
            script = NPM_SHIM.format(npm=shlex.quote(npm))
            write_text_atomic(shim, script, redact=False, durable=False)
            shim.chmod(0o755)
        except (OSError, subprocess.SubprocessError):
            return None  # claude asks npm itself, as it would without aca
    return str(folder)


# Claude Code also binds the host's whole /tmp writable (seen with claude 2.1.337; no setting
# takes it out: a denied read of /tmp is bound back over as the homes are, a denied write makes
# a worktree or scratch folder in /tmp read-only): a command read and wrote other processes'
# files there, another task's scratch folder among them. That bind is of the run's own folder
# instead (``private_tmp``, named by ``PRIVATE_TMP`` in claude's environment), or of an empty
# tmpfs without one; what Claude Code binds in /tmp after it (the worktree, the scratch folder,
# git's folders, PATH's folders, its placeholders) is bound there as it made it.
PRIVATE_TMP = "ACA_CLAUDE_TMP"


def scratch_parent() -> str | None:
    """Where a run's scratch folder is made: the temporary folder (``None``: ``tempfile``'s),
    unless the sandbox keeps that from writes (``SYSTEM_WRITABLE``: a ``TMPDIR`` of
    ``/var/tmp``, macOS's ``/var/folders``): there its commands could write no temporary file,
    nor Claude Code its Bash's working-directory record, and every command failed. Then
    ``/tmp``."""
    parent = tempfile.gettempdir()
    for path in {os.path.abspath(parent), os.path.realpath(parent)}:
        if any(path == top or path.startswith(f"{top}/") for top in SYSTEM_WRITABLE):
            return "/tmp"
    return None


class Scratch:
    """A run's scratch folder, held while the run lives (an ``flock`` on the folder): a run
    killed outright leaves it and its private ``/tmp``, and the first run of any aca after
    removes those nobody holds."""

    def __init__(self) -> None:
        parent = scratch_parent()
        _remove_unheld_scratch(parent or tempfile.gettempdir())
        self.path = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent)
        self._held = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self._held, fcntl.LOCK_EX)

    def remove(self) -> None:
        _remove_scratch(self.path)
        os.close(self._held)


SCRATCH_PREFIX = "aca-scratch-"


@functools.cache
def _remove_unheld_scratch(parent: str) -> None:
    # A folder younger than a day may be one another aca has made and not yet held, or one
    # of a run of an aca from before the lock (an upgrade while it runs).
    young = time.time() - 86_400
    for path in Path(parent).glob(f"{SCRATCH_PREFIX}*"):
        try:
            if path.suffix == ".tmp" or path.is_symlink() or path.stat().st_mtime > young:
                continue
            held = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _remove_scratch(str(path))
        except OSError:
            pass  # held: its run lives, or not ours to take
        finally:
            os.close(held)


def _remove_scratch(scratch: str) -> None:
    end_leftover_bridges(scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(private_tmp_of(scratch), ignore_errors=True)


def private_tmp_of(scratch: str) -> str:
    """The folder the commands of the run whose scratch folder is ``scratch`` see as ``/tmp``:
    beside the scratch folder, not in it, where no command can put a link in its place."""
    return f"{scratch}.tmp"


def private_tmp(scratch: str) -> str | None:
    """Makes ``private_tmp_of(scratch)`` (mode 0700); ``None`` when it cannot be made."""
    folder = private_tmp_of(scratch)
    try:
        os.mkdir(folder, 0o700)
    except OSError:
        return None
    return folder


# Put first on claude's PATH, the bwrap Claude Code's sandbox runs: Claude Code binds /home and
# /root back writable, as ancestors of the paths it mounts, over the empty folders a denied read
# puts there; a command then read the homes and wrote ~/.bash_login on the host. With that bind
# left out and the homes remounted read-only, they are again as denied: empty but for what it
# binds inside them (the worktree, git's folders, PATH's folders), which stays as it made it.
BWRAP_SHIM = """#!/bin/bash
# Written by aca (aca_flows/providers/claude_code_sandbox.py). Claude Code's sandbox hides a
# home behind an empty tmpfs (its denied read), then binds the home itself back over it: that
# bind is left out, and what it had bound inside the home before is bound again. The homes it
# binds writable are remounted read-only before its command (bwrap cannot remount what is no
# mount; a remount is not recursive). The host's /tmp it binds writable is the run's own folder
# ($ACA_CLAUDE_TMP) instead, or an empty tmpfs; /var/tmp is an empty tmpfs.
args=("$@")
out=()
bound=" "
hidden=" "
private_tmp=
is_home() {{ case " {homes} " in *" $1 "*) return 0 ;; esac; return 1; }}
for ((i = 0; i < ${{#args[@]}}; i++)); do
  arg=${{args[i]}}
  case "$arg" in
    --tmpfs)
      home=${{args[i+1]}}
      if is_home "$home" && [ "${{args[i+2]}}" = --bind ] && [ "${{args[i+3]}}" = "$home" ] \
          && [ "${{args[i+4]}}" = "$home" ]; then
        out+=(--tmpfs "$home")
        for ((j = 0; j < i; j++)); do
          case "${{args[j]}}" in
            --bind|--ro-bind|--bind-try|--ro-bind-try|--dev-bind|--dev-bind-try)
              case "${{args[j+2]}}" in "$home"/*) out+=("${{args[@]:j:3}}") ;; esac ;;
          esac
        done
        hidden="$hidden$home "
        i=$((i + 4))
        continue
      fi ;;
    --ro-bind)
      # A host file of /tmp itself that it keeps from writes (/tmp/inline-comments-buffer.jsonl):
      # not in the private /tmp, where that bind alone would show it.
      dest=${{args[i+2]}}
      if [ -n "$private_tmp" ] && [ "${{args[i+1]}}" = "$dest" ] && [ "${{dest%/*}}" = /tmp ] \
          && [ -f "$dest" ]; then
        i=$((i + 2))
        continue
      fi
      # A file masked in a hidden home that is not there: nothing to mask, and no file to make
      # for it in the folder bound read-only there.
      for home in $hidden; do
        case "${{args[i+2]}}" in "$home"/*)
          if [ "${{args[i+1]}}" = /dev/null ] && [ ! -e "${{args[i+2]}}" ]; then
            i=$((i + 2))
            continue 2
          fi ;;
        esac
      done ;;
    --bind|--bind-try|--dev-bind|--dev-bind-try)
      if [ "${{args[i+1]}}" = /tmp ] && [ "${{args[i+2]}}" = /tmp ]; then
        tmp=${{{private}:-}}
        if [ -n "$tmp" ] && [ -d "$tmp" ] && [ ! -L "$tmp" ] && [ -O "$tmp" ]; then
          out+=(--bind "$tmp" /tmp)
        else
          out+=(--tmpfs /tmp)
        fi
        private_tmp=1
        i=$((i + 2))
        continue
      fi
      is_home "${{args[i+2]}}" && bound="$bound${{args[i+2]}} " ;;
    --)
      for home in $bound; do out+=(--remount-ro "$home"); done
      # /var/tmp, which it leaves readable (other programs' files, kept across boots): empty,
      # unless it binds something there (a worktree under /var/tmp), which stays as it made it.
      case " ${{args[*]:0:i}} " in *" /var/tmp "* | *" /var/tmp/"*) ;; *)
        [ -d /var/tmp ] && [ ! -L /var/tmp ] && out+=(--tmpfs /var/tmp) ;;
      esac
      out+=(--unsetenv {private})
      out+=("${{args[@]:i}}")
      exec {bwrap} "${{out[@]}}" ;;
  esac
  out+=("$arg")
done
exec {bwrap} "${{out[@]}}"
"""
HOMES = ("/home", "/root")


def bwrap_with_homes_read_only(environ: Mapping[str, str]) -> str | None:
    """The folder of a ``bwrap`` (``BWRAP_SHIM``) for the front of claude's PATH, or ``None``
    when there is no bwrap or no bash (Claude Code's sandbox then fails to start, as without
    it). In aca's folder, which the sandbox hides and no command writes."""
    path = absolute_folders(environ.get("PATH", os.defpath))
    bwrap, bash = shutil.which("bwrap", path=path), shutil.which("bash", path=path)
    if bwrap is None or bash is None:
        return None
    script = BWRAP_SHIM.replace("#!/bin/bash", f"#!{bash}", 1).format(
        homes=" ".join(HOMES), bwrap=shlex.quote(os.path.realpath(bwrap)), private=PRIVATE_TMP
    )
    folder = (
        Path.home() / ".aca" / "claude-bwrap" / hashlib.sha256(script.encode()).hexdigest()[:16]
    )
    return _shim(folder / "bwrap", script)


def dying_with_aca(cli: Path) -> Path:
    """``cli``, started so that it is killed when the aca process that started it dies: a
    script in aca's folder that runs it under ``setpriv --pdeathsig KILL``. A claude whose aca
    was killed alone (the OOM killer's choice, a ``kill -9`` of its pid) ran its agent loop to
    its end: its calls were on no bill and under no budget, and its writes landed in the
    worktree a resume made at the same path. ``cli`` itself where no ``setpriv`` takes
    ``--pdeathsig``."""
    setpriv = _setpriv_with_pdeathsig()
    sh = shutil.which("sh", path=absolute_folders(os.environ.get("PATH", os.defpath)))
    if setpriv is None or sh is None:
        return cli
    script = (
        f"#!{sh}\n# claude, killed when the aca that started it dies\n"
        f'exec {shlex.quote(setpriv)} --pdeathsig KILL -- {shlex.quote(str(cli))} "$@"\n'
    )
    digest = hashlib.sha256(script.encode()).hexdigest()[:16]
    folder = _shim(Path.home() / ".aca" / "claude-pdeath" / digest / "claude", script)
    return cli if folder is None else Path(folder) / "claude"


@functools.cache
def _setpriv_with_pdeathsig() -> str | None:
    # util-linux's setpriv has --pdeathsig since 2.33: an older one (CentOS 7, Amazon Linux 2)
    # refused it, and every claude-code task failed.
    setpriv = shutil.which("setpriv", path=absolute_folders(os.environ.get("PATH", os.defpath)))
    if setpriv is None:
        return None
    try:
        shown = subprocess.run(
            [setpriv, "--help"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return setpriv if "--pdeathsig" in shown else None


@functools.cache
def _shim(path: Path, script: str) -> str | None:
    from aca_flows.session.files import write_text_atomic

    with _NPM_SHIM_LOCK:
        try:
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(path, script, redact=False, durable=False)
                path.chmod(0o755)
        except OSError:
            return None
    return str(path.parent)


def end_leftover_bridges(scratch: str) -> int:
    """End the network bridges of a claude run that ended without stopping them, and say how
    many: Claude Code's sandbox starts ``socat UNIX-LISTEN:<scratch>/claude-http-….sock …``,
    and a claude killed mid-run (a Ctrl-C, the grace period, a crash) leaves it running
    forever, re-parented to pid 1. ``scratch`` is the run's own folder, so only its bridges
    name it."""
    proc = Path("/proc")
    if not (proc / "self").exists():  # not Linux: nothing to look at
        return 0
    ended = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            program, _, args = (entry / "cmdline").read_bytes().partition(b"\0")
        except OSError:
            continue
        if Path(os.fsdecode(program)).name == "socat" and f"{scratch}/".encode() in args:
            try:
                os.kill(int(entry.name), signal.SIGTERM)
                ended += 1
            except (ProcessLookupError, PermissionError):
                pass
    return ended
