"""``aca plan show|schema``: look at a plan without running it."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

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
    from aca_flows.plan import load_task_file, plan_to_text
    from aca_flows.plan.render import render_mermaid, render_tree

    plan = load_task_file(file)
    if format is PlanFormat.json:
        typer.echo(plan_to_text(plan, ".json"), nl=False)
    elif format is PlanFormat.mermaid:
        typer.echo(render_mermaid(plan))
    else:
        typer.echo(render_tree(plan))


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of execution plans, generated from the models."""
    from aca_flows.plan.render import plan_json_schema

    typer.echo(json.dumps(plan_json_schema(), indent=2))
