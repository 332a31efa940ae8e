"""``aca plan show|parse|schema``: look at a plan without running it."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from aca_flows.cli.options import (
    AppendSystemPrompt,
    ConfigFile,
    Context,
    DumpPlan,
    ExistingWorkdir,
    ModelName,
    ProviderName,
    Strict,
)

app = typer.Typer(no_args_is_help=True)


class PlanFormat(StrEnum):
    tree = "tree"
    mermaid = "mermaid"
    json = "json"


@app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="Task file (.md, .toml) or plan (.json, .toml).")],
    format: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="tree, mermaid or json.")
    ] = PlanFormat.tree,
) -> None:
    """Print a task file's plan as a tree, a Mermaid graph or JSON."""
    from aca_flows.cli.preflight import check_task_providers
    from aca_flows.plan import load_task_file
    from aca_flows.plan.prose_dependencies import prose_dependencies_warning

    plan = load_task_file(file)
    # A task's provider that no run could use is refused here as `aca run -n` refuses it.
    check_task_providers(plan, file)
    if warning := prose_dependencies_warning(plan):  # as `aca run` warns (cli/run.py)
        typer.echo(f"warning: {file}: {warning}", err=True)
    _print_plan(plan, format)


def _print_plan(plan, format: PlanFormat) -> None:
    from aca_flows.plan import plan_to_text
    from aca_flows.plan.render import render_mermaid, render_tree

    if format is PlanFormat.json:
        typer.echo(plan_to_text(plan, ".json"), nl=False)
    elif format is PlanFormat.mermaid:
        typer.echo(render_mermaid(plan))
    else:
        typer.echo(render_tree(plan))


@app.command("parse", short_help="Let an LLM turn a Markdown task file into a plan.")
def parse(
    file: Annotated[Path, typer.Argument(help="Markdown task file for the LLM to read.")],
    format: Annotated[
        PlanFormat, typer.Option("--format", "-f", help="tree, mermaid or json.")
    ] = PlanFormat.tree,
    dump_plan: DumpPlan = None,
    workdir: ExistingWorkdir = Path("."),
    context: Context = None,
    append_system_prompt: AppendSystemPrompt = None,
    provider: ProviderName = None,
    model: ModelName = None,
    config: ConfigFile = None,
    strict: Strict = False,
) -> None:
    """Let the configured LLM turn a Markdown task file into a plan, and print it.

    The parse is cached in ~/.aca/parse_cache: the same input parses again without a provider
    call.
    """
    from aca_flows.cli.options import RunOptions
    from aca_flows.cli.plan_files import check_dump_target
    from aca_flows.cli.plan_files import dump_plan as write_plan_file
    from aca_flows.cli.run import parse_intelligently
    from aca_flows.errors import InputError
    from aca_flows.plan.io import MARKDOWN_SUFFIXES
    from aca_flows.plan.source import require_file

    require_file(file)
    if file.suffix.lower() not in MARKDOWN_SUFFIXES:
        raise InputError(
            f"{file}: the intelligent parser reads Markdown task files (.md, .markdown, .txt, "
            "or no suffix); "
            "TOML task files and plans are structured already: use `aca plan show`."
        )
    check_dump_target(dump_plan)
    options = RunOptions(
        workdir=workdir,
        task_file=file,
        use_intelligent_parser=True,
        strict=strict,
        context=context or [],
        append_system_prompt=append_system_prompt,
        provider=provider,
        model=model,
        config=config,
    )
    plan = parse_intelligently(file, options)
    if dump_plan:
        write_plan_file(plan, dump_plan)
    _print_plan(plan, format)


@app.command("schema", short_help="Print the JSON Schema of execution plans.")
def schema() -> None:
    """Print the JSON Schema of execution plans, generated from the models."""
    from aca_flows.plan.render import plan_json_schema

    typer.echo(json.dumps(plan_json_schema(), indent=2))
