"""Options shared by ``aca --task-file ...`` and ``aca run FILE``: declared once, used twice."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer


def _workdir_path(given: str | Path) -> Path:
    # Read as a path, "" is "." : ``--workdir "$DIR"`` with the variable unset would work on,
    # or report about, the current folder.
    if not str(given).strip():
        raise typer.BadParameter(
            "the folder is empty: name the repository's folder, or leave --workdir out for "
            "the current one"
        )
    path = Path(given)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file: name the repository's folder")
    return path


def _workdir_option(**extra: Any) -> Any:
    return typer.Option(
        "--workdir",
        "-w",
        help="The repository worked on; its .aca/ holds the sessions.",
        parser=_workdir_path,
        metavar="<dir>",
        **extra,
    )


# A run may create its workdir (--init-git, --repo); a command that only reads one may not.
Workdir = Annotated[Path, _workdir_option()]


def existing_folder(workdir: Path) -> Path:
    """The workdir of a command that only reads it: a mistyped path must not read as "no
    sessions", "no checkpoints" or the default configuration."""
    from aca_flows.errors import InputError

    if not workdir.is_dir():
        what = "is not a folder" if workdir.exists() else "does not exist"
        raise InputError(f"{workdir} {what}; pass an existing folder to --workdir.")
    if top := _top_level_holding_aca(workdir):
        # Read here, its own .aca (none) would say "no sessions": the run refuses it too.
        raise InputError(
            f"{workdir} is inside the git repository {top}, not its top level, where .aca/ "
            f"holds the sessions and configuration; run aca with --workdir {top}."
        )
    return workdir


def _top_level_holding_aca(folder: Path) -> Path | None:
    """The top level of the git repository ``folder`` is a subfolder of, when aca has worked
    there (``.aca/sessions``: a home that is a repository holds ``~/.aca`` of the server and
    clones only); found without git (these commands answer at once)."""
    here = folder.resolve()
    if (here / ".aca").exists() or (here / ".git").exists():  # a top level, or a worktree
        return None
    for parent in here.parents:
        if (parent / ".git").exists():
            return parent if (parent / ".aca" / "sessions").is_dir() else None
    return None


ExistingWorkdir = Annotated[Path, _workdir_option(callback=existing_folder)]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", "-n", help="Load, validate and show the plan; run nothing."),
]
DumpPlan = Annotated[
    Path | None,
    typer.Option("--dump-plan", help="Write the plan to this .json or .toml file for review."),
]
UseIntelligentParser = Annotated[
    bool,
    typer.Option(
        "--use-intelligent-parser", help="Let an LLM turn free-form Markdown into a plan."
    ),
]
ForceNaiveParser = Annotated[
    bool,
    typer.Option(
        "--force-naive-parser",
        help="Use the deterministic parser (the default; the original aca's flag).",
    ),
]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Intelligent parser: refuse a plan that lost items of the task file.",
    ),
]
Context = Annotated[
    list[str] | None,
    typer.Option(
        "--context", metavar="TEXT", help="Project context given to every task (repeatable)."
    ),
]
AppendSystemPrompt = Annotated[
    str | None,
    typer.Option("--append-system-prompt", help="Instructions appended to every system prompt."),
]
ProviderName = Annotated[
    str | None,
    typer.Option("--provider", help="claude-code (default), anthropic, openai, ollama or replay."),
]


def _named_model(value: str | None) -> str | None:
    # An empty name (``--model "$MODEL"`` with the variable unset) would quietly drop the
    # configured model for the provider's default.
    if value is not None and not value.strip():
        raise typer.BadParameter(
            "the model name is empty: name a model, e.g. claude-sonnet-4-5, or leave "
            "--model out for the configured one"
        )
    return value


ModelName = Annotated[
    str | None,
    typer.Option("--model", callback=_named_model, help="Model name for the provider."),
]
MaxConcurrent = Annotated[
    int | None, typer.Option("--max-concurrent", min=1, max=64, help="Tasks run at once.")
]


def _positive_budget(value: float | None) -> float | None:
    # nan passes no comparison and inf caps nothing: neither is a budget.
    if value is not None and not (0 < value < math.inf):
        raise typer.BadParameter(
            f"{value:g} is no budget: give the dollars to spend at most, e.g. 5"
        )
    return value


BudgetUsd = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        callback=_positive_budget,
        help="Cap on the session's spend in US dollars (reached: exit 3, resumable).",
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Configuration file (default: first found)."),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")]
InitGit = Annotated[
    bool, typer.Option("--init-git", help="Create a git repository in --workdir if there is none.")
]
Record = Annotated[
    Path | None,
    typer.Option("--record", help="Record every provider request and response to a cassette."),
]


def _named_repo(value: str | None) -> str | None:
    # Read as no --repo, ``--repo "$URL"`` with the variable unset would work on the current
    # folder instead of the remote, and push nothing.
    if value is not None and not value.strip():
        raise typer.BadParameter(
            "the repository is empty: give a git URL or the path of a bare repository, or "
            "leave --repo out to work on --workdir"
        )
    return value


Repo = Annotated[
    str | None,
    typer.Option(
        "--repo",
        metavar="URL",
        callback=_named_repo,
        help="Work on this git repository (URL or path of a bare repository): cloned into "
        "~/.aca/repos/ (or --workdir), the session branch pushed back after each task.",
    ),
]

RequireApproval = Annotated[
    bool,
    typer.Option(
        "--require-approval",
        help="Wait, once the plan is published, for approval in the Prefect UI or `aca approve`.",
    ),
]
OpenPr = Annotated[
    bool,
    typer.Option(
        "--open-pr",
        help="Open or update one GitHub pull request for the session branch (GITHUB_TOKEN).",
    ),
]
GitHubRepoName = Annotated[
    str | None,
    typer.Option(
        "--github-repo",
        metavar="OWNER/NAME",
        help="--open-pr: the GitHub repository, when the remote URL does not name one.",
    ),
]


@dataclass
class RunOptions:
    """Everything a run or a dry run was asked for on the command line."""

    workdir: Path = field(default_factory=Path.cwd)
    task_file: Path | None = None
    execution_plan: Path | None = None
    dry_run: bool = False
    dump_plan: Path | None = None
    use_intelligent_parser: bool = False
    force_naive_parser: bool = False
    strict: bool = False
    context: list[str] = field(default_factory=list)
    append_system_prompt: str | None = None
    provider: str | None = None
    model: str | None = None
    max_concurrent: int | None = None
    budget_usd: float | None = None
    config: Path | None = None
    json: bool = False
    init_git: bool = False
    record: Path | None = None
    require_approval: bool = False
    open_pr: bool = False
    github_repo: str | None = None
    repo: str | None = None

    def __post_init__(self) -> None:
        # `--dump-plan=~/plan.json`: the shell leaves `~` after `=` as it is, and aca wrote a
        # folder named `~` into the repository while saying "written to ~/plan.json".
        for name in ("workdir", "task_file", "execution_plan", "dump_plan", "config", "record"):
            if (path := getattr(self, name)) is not None:
                setattr(self, name, Path(path).expanduser())


def refuse_options_that_do_nothing(options: RunOptions) -> None:
    """An option that only shapes another one, given without it, is refused: the user asked
    for something the run would silently not do."""
    from aca_flows.errors import InputError

    if options.strict and not options.use_intelligent_parser:
        raise InputError(
            "--strict checks the plan of the intelligent parser: add --use-intelligent-parser, "
            "or leave --strict out."
        )
    if options.repo and options.init_git:
        raise InputError(
            "--init-git makes a new repository in --workdir, but --repo clones one: leave "
            "--init-git out."
        )
    refuse_github_repo_without_open_pr(options.github_repo, options.open_pr)


def refuse_github_repo_without_open_pr(github_repo: str | None, open_pr: bool) -> None:
    if github_repo is not None and not open_pr:
        from aca_flows.errors import InputError

        raise InputError(
            f"--github-repo {github_repo} names where --open-pr opens the pull request: add "
            "--open-pr, or leave --github-repo out."
        )


def warn_of_options_a_dry_run_ignores(options: RunOptions) -> None:
    """A dry run may be the run's own command line with --dry-run added: its run options are
    not refused, but the user is told they did nothing (--budget-usd does: a budget the run
    could not keep is refused)."""
    given = {
        "--init-git": options.init_git,
        "--open-pr": options.open_pr,
        "--record": options.record is not None,
        "--require-approval": options.require_approval,
    }
    ignored = [flag for flag, on in given.items() if on]
    if options.dry_run and ignored:
        print(
            f"warning: --dry-run runs no task, so these do nothing here: {', '.join(ignored)} "
            "(the run command --dump-plan prints keeps them).",
            file=sys.stderr,
        )
