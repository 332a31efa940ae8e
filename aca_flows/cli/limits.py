"""``aca limits sync|show``: provider limits on the Prefect server, shared by every run and worker.

``sync`` writes the configuration's ``[rate_limiting]`` (per provider where a provider has its
own) as Prefect global concurrency limits named ``aca-<provider>-requests``, ``-tokens`` and
``-in-flight``; runs on that server then hold every provider call to them
(docs/configuration.md, "Limits shared by every worker").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from aca_flows._words import counted
from aca_flows.cli.options import ConfigFile, ExistingWorkdir, JsonOutput

app = typer.Typer(no_args_is_help=True)

Providers = Annotated[
    list[str] | None,
    typer.Option(
        "--provider",
        help="Only this provider (repeatable); default: claude-code, anthropic, openai, ollama.",
    ),
]


@app.command("sync", short_help="Create or update the limits on the Prefect server.")
def sync(
    provider: Providers = None,
    workdir: ExistingWorkdir = Path("."),
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Create or update the limits on the Prefect server (PREFECT_API_URL, else aca's local one)."""
    from aca_flows.config_loader import load_config
    from aca_flows.flows.provider_limits import sync_limits
    from aca_flows.flows.server import prefect_api_for_command

    loaded = load_config(workdir.resolve(), config)
    with prefect_api_for_command("hold the limits") as url:
        done = sync_limits(loaded.config, provider)
    if json_output:
        rows = [
            {
                "name": spec.name,
                "limit": spec.limit,
                "slot_decay_per_second": spec.slot_decay_per_second,
                "action": action,
            }
            for spec, action in done
        ]
        typer.echo(json.dumps({"server": url, "limits": rows}, indent=2))
        return
    for spec, action in done:
        typer.echo(
            f"{action:9} {spec.name}: "
            + _describe(spec.kind, spec.limit, spec.slot_decay_per_second)
        )
    typer.echo(f"on {url}: every run on this server shares them.")


@app.command("show")
def show(provider: Providers = None, json_output: JsonOutput = False) -> None:
    """The limits on the Prefect server and the slots in use now."""
    from aca_flows.flows.provider_limits import read_limits
    from aca_flows.flows.server import prefect_api_for_command

    with prefect_api_for_command("read the limits from") as url:
        found = read_limits(provider)
    if json_output:
        rows = {name: limit and limit.__dict__ for name, limit in found.items()}
        typer.echo(json.dumps({"server": url, "limits": rows}, indent=2))
        return
    for name, limit in found.items():
        if limit is None:
            typer.echo(f"{name}: not on the server (`aca limits sync` creates it)")
        else:
            kind = "in-flight" if name.endswith("in-flight") else name.rsplit("-", 1)[-1]
            described = _describe(kind, limit.limit, limit.slot_decay_per_second)
            typer.echo(f"{name}: {described}; {limit.active_slots:,} in use")
    typer.echo(f"on {url}")


def _describe(kind: str, limit: int, decay_per_second: float) -> str:
    if kind == "in-flight":
        return f"{counted(limit, 'call')} at once"
    return f"{decay_per_second * 60:,.0f} {kind} a minute, up to {limit:,} at once"
