"""Deployment runs work only where the worker allows: the allow-list of workdirs.

Whoever can create a flow run of a deployment chooses its parameters (the UI, the API, an
event matching the ``on-ci-build`` trigger, which copies ``workdir`` and ``task_file`` from
any event's payload). A task file holds shell commands (verify commands), so a deployment
run starts only when its ``workdir`` is inside a folder the worker's owner listed, and the
files it names (``task_file``, ``execution_plan``, ``config_file``, ``record``) are inside one
of those folders or among the jobs shipped inside aca (``aca_flows/jobs``, where a relative
``task_file`` or ``execution_plan`` of a deployment run is looked up: a worker has aca
installed and nothing of the machine that deployed). Anything else is refused before the
session, the repository or a provider is touched.

A run given ``repo`` (a git URL) works in aca's own working area (``~/.aca/repos``, allowed)
and pushes there, so the repository itself must be allowed: its URL starts with one of
``ACA_DEPLOYMENTS__ALLOWED_REPOS`` (URL prefixes, matched up to a path boundary), or it is a
local repository inside an allowed folder. A URL with ``.`` or ``..`` in its path is refused
(a local path is resolved instead): the text checked must be the repository reached. So a
``file://`` URL is compared by the path it reaches (symlinks resolved, as a local path's are),
and credentials in a URL (``https://token@host/...``), which choose no repository, are left
out of the comparison (on both sides) and of every message.

The lists come from the worker's side only: ``ACA_DEPLOYMENTS__ALLOWED_WORKDIRS`` and
``ACA_DEPLOYMENTS__ALLOWED_REPOS`` (comma-separated) in the worker's environment, or
``[deployments] allowed_workdirs`` / ``allowed_repos`` in the worker user's
``~/.aca/config.toml``; never from the repository worked on or a ``config_file`` parameter,
which the requester of the run chooses. Empty lists refuse every deployment run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aca_flows.config_loader import load_config, users_config_file
from aca_flows.errors import AcaError
from aca_flows.workspace.remote import (
    _SCP_LIKE,
    normalize_url,
    public_url,
    repos_home,
    without_userinfo,
)

__all__ = [
    "JOBS_DIR",
    "PATH_PARAMETERS",
    "allowed_repos",
    "allowed_workdirs",
    "deployment_refusal",
    "resolve_job_paths",
]

PATH_PARAMETERS = ("task_file", "execution_plan", "config_file", "record")
# The task files shipped inside aca for the project's deployments (prefect.yaml).
JOBS_DIR = Path(__file__).resolve().parents[1] / "jobs"
JOB_PARAMETERS = ("task_file", "execution_plan")
HOW_TO_ALLOW = (
    "set ACA_DEPLOYMENTS__ALLOWED_WORKDIRS (comma-separated folders) in the worker's "
    "environment, or [deployments] allowed_workdirs in its ~/.aca/config.toml "
    "(docs/deployments.md)"
)


def _worker_config():
    """The worker's own settings: its ``~/.aca/config.toml`` (load_config reads
    ``[deployments]`` from no other file) and its environment."""
    user_config = users_config_file()
    return load_config(Path.home(), user_config if user_config.is_file() else None).config


def allowed_workdirs() -> list[Path]:
    """The worker's allowed folders, resolved."""
    entries = _worker_config().deployments.allowed_workdirs
    return [Path(entry).expanduser().resolve() for entry in entries]


def allowed_repos() -> list[str]:
    """The worker's allowed repository URL prefixes."""
    return [entry.strip() for entry in _worker_config().deployments.allowed_repos if entry.strip()]


def resolve_job_paths(parameters: dict[str, Any]) -> dict[str, Any]:
    """``parameters`` with a relative ``task_file`` or ``execution_plan`` made absolute under
    the shipped jobs (``nightly-fix-tests.md`` is ``aca_flows/jobs/nightly-fix-tests.md``):
    a deployment run's working folder is a temporary one of the worker's."""
    resolved = dict(parameters)
    for name in JOB_PARAMETERS:
        value = resolved.get(name)
        if value and not Path(value).expanduser().is_absolute():
            resolved[name] = str(JOBS_DIR / value)
    return resolved


def deployment_refusal(parameters: dict[str, Any], code_dir: Path = JOBS_DIR) -> str | None:
    """Why a deployment run with ``parameters`` must not start, or ``None`` if it may.

    Relative paths are resolved as the run would: against ``code_dir``, its working folder.
    """
    allowed, repos = allowed_workdirs(), allowed_repos()
    if not allowed and not repos:
        return (
            "deployment runs are refused until the worker lists the folders they may work "
            f"in: {HOW_TO_ALLOW}."
        )
    repo = parameters.get("repo")
    if not repo and (parameters.get("workdir") or ".") == ".":
        return (
            "no repository named: give the deployment run the repository to work on, as "
            "repo (a git URL, cloned into aca's working area) or workdir (a folder the worker "
            "allows); its own working folder is a temporary one."
        )
    if repo:
        refusal = _repo_refusal(repo, allowed, repos)
        if refusal:
            return refusal
        # The clone lives in aca's own working area (~/.aca/repos), or a folder allowed.
        allowed = [*allowed, repos_home().resolve()]
    workdir = _resolve(parameters.get("workdir") or ".", code_dir)
    if not _inside_any(workdir, allowed):
        return (
            f"workdir {workdir} is not inside the worker's allowed workdirs "
            f"({', '.join(map(str, allowed))}); nothing was started. If runs may work there, "
            f"{HOW_TO_ALLOW}."
        )
    for name in PATH_PARAMETERS:
        value = parameters.get(name)
        if value and not _inside_any(_resolve(value, code_dir), [*allowed, code_dir.resolve()]):
            return (
                f"{name} {_resolve(value, code_dir)} is outside the allowed workdirs and the "
                f"deployment's code folder {code_dir}; nothing was started. Put the file in "
                "the repository worked on or the deployment's code."
            )
    return None


def _repo_refusal(repo: str, allowed: list[Path], repos: list[str]) -> str | None:
    """A repository URL must start with one of the allowed prefixes; a local repository (a
    path) may also be inside an allowed folder. The run pushes to it, and runs its commands."""
    try:
        url = normalize_url(repo)
        reached = _repository_reached(url)
    except AcaError as exc:
        return str(exc)
    except ValueError as exc:
        reason = without_userinfo(str(exc), url)
        return f"repo is not a URL git can use ({reason}); nothing was started."
    if _has_dot_segments(url):
        return (
            f"repo {public_url(url)} has a '.' or '..' segment in its path (or one "
            "percent-encoded, or between backslashes): git, ssh or the server would resolve it "
            "to another repository than the one the allow-list sees, so it is refused; nothing "
            "was started. Give the repository's URL without them."
        )
    if any(_under_prefix(reached, _comparable_prefix(prefix)) for prefix in repos):
        return None
    local = not ("://" in url or _SCP_LIKE.match(url))
    if local and _inside_any(Path(url), allowed):
        return None
    shown = public_url(url)
    if url.startswith("file://") and reached != url:
        shown += f" (which reaches {urlsplit(reached).path})"
    return (
        f"repo {shown} is not among the worker's allowed repositories; nothing was "
        "started. If runs may work on it, set ACA_DEPLOYMENTS__ALLOWED_REPOS (comma-separated "
        "URL prefixes, e.g. https://github.com/your-org/) in the worker's environment, or "
        "[deployments] allowed_repos in its ~/.aca/config.toml (a local repository may also "
        "be inside ACA_DEPLOYMENTS__ALLOWED_WORKDIRS)."
    )


def _has_dot_segments(url: str) -> bool:
    """Whether the path of ``url`` (normalised: a local path is already resolved) holds a
    ``.`` or ``..`` segment, percent-encoded or not, ``/`` or ``\\`` separated. Refused
    rather than resolved: curl, ssh servers, git hosts and proxies each resolve (or decode)
    them their own way, and no repository needs them."""
    path = _path_of(url)
    while (decoded := unquote(path)) != path:  # %252e%252e is %2e%2e to a proxy
        path = decoded
    return any(segment in (".", "..") for segment in re.split(r"[/\\]", path))


def _path_of(url: str) -> str:
    """Where ``url``'s path is: what follows ``scheme://`` (the host is one more segment,
    never ``.`` or ``..`` in a usable URL), what follows ``host:`` in git's scp-like syntax,
    or the whole of a local path."""
    if "://" in url:
        return url.split("://", 1)[1]
    scp_like = _SCP_LIKE.match(url)
    return url[scp_like.end() :] if scp_like else url


def _repository_reached(url: str) -> str:
    """``url`` as the allow-list compares it: without the credentials git sends (a bare user of
    ``http(s)://user@host``, which is a token there, and any password), which choose no
    repository, and for a ``file://`` URL with the path git reads (percent-decoded once, as
    git does) resolved through symlinks, as a local path is. A user name of any other scheme
    stays (``ssh://git@host/``; ``ssh://alice@host/~/x`` is in alice's home). Raises
    ``ValueError``, without the credentials in its message, when the URL is malformed or its
    user part ambiguous (an ``@`` in it, where git and curl disagree on the host)."""
    if "://" not in url:
        return url
    urlsplit(url)  # raises on a malformed host ("https://[x/y")
    scheme, rest = url.split("://", 1)
    authority, path = re.match(r"([^/?#]*)(.*)", rest, re.DOTALL).groups()
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if "@" in userinfo:
            raise ValueError(
                "more than one '@' before its host; write an '@' of a user name or password as %40"
            )
        user = userinfo.partition(":")[0]
        keep_user = user and scheme.lower() not in ("http", "https")
        authority = f"{user}@{host}" if keep_user else host
    if scheme == "file" and path:
        path = str(Path(unquote(path)).resolve())
    return f"{scheme}://{authority}{path}"


def _comparable_prefix(prefix: str) -> str:
    """An allowed ``prefix`` compared as a URL is: its credentials left out, and a folder (a
    path, or a ``file://`` URL) resolved through symlinks, its trailing ``/`` kept."""
    if "://" in prefix:
        try:
            compared = _repository_reached(prefix)
        except ValueError:
            return prefix  # matches no URL that parses
    elif Path(prefix).expanduser().is_absolute() and not _SCP_LIKE.match(prefix):
        compared = str(Path(prefix).expanduser().resolve())
    else:
        return prefix
    if prefix.endswith("/") and not compared.endswith("/"):
        compared += "/"
    return compared


def _under_prefix(url: str, prefix: str) -> bool:
    """Whether ``url`` starts with the allowed ``prefix`` at a boundary: the prefix ends with
    ``/`` or ``:``, or the URL goes on with ``/``, ``.git`` or nothing. So the prefix
    ``https://github.com/your-org`` does not allow ``https://github.com/your-org-evil/x`` nor
    ``https://github.com.evil.com/x``."""
    if not url.startswith(prefix):
        return False
    rest = url[len(prefix) :]
    return prefix.endswith(("/", ":")) or rest in ("", ".git") or rest.startswith("/")


def _resolve(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _inside_any(path: Path, folders: list[Path]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)
