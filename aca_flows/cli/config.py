"""``aca config show``: every effective setting and where it came from, secrets masked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from aca_flows.cli.options import ConfigFile, ExistingWorkdir, JsonOutput

app = typer.Typer(no_args_is_help=True)

# The standard variables providers read their credentials and endpoints from.
CREDENTIAL_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "OLLAMA_HOST",
    "ACA_CLAUDE_CLI",
)


def mask(name: str, value: str) -> str:
    """Keys show only their last four characters; endpoints and paths are not secret."""
    if not any(word in name for word in ("KEY", "TOKEN", "SECRET")):
        return value
    return "****" + value[-4:] if len(value) > 8 else "****"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


@app.command("show")
def show(
    workdir: ExistingWorkdir = Path("."),
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Print the effective configuration with the source of each value."""
    from aca_flows.config_loader import load_config, source_of
    from aca_flows.session.redact import redact_text

    loaded = load_config(workdir.resolve(), config)
    # Each value as the records have it: a base_url's password, a key written in the file.
    # By value only: the name of a Secret block (api_key_secret) is no secret.
    values = {
        key: redact_text(value) if isinstance(value, str) else value
        for key, value in flatten(loaded.config.model_dump(mode="json")).items()
    }
    rows = [(k, v, source_of(k, loaded.sources) or "default") for k, v in values.items()]
    credentials = {
        name: mask(name, os.environ[name]) for name in CREDENTIAL_VARIABLES if name in os.environ
    }
    if json_output:
        typer.echo(
            json.dumps(
                {
                    "file": str(loaded.file) if loaded.file else None,
                    "values": {k: {"value": v, "source": s} for k, v, s in rows},
                    "credentials": credentials,
                    "ignored": loaded.ignored,
                },
                indent=2,
            )
        )
        return
    from rich.table import Table

    from aca_flows.cli.sessions import console as make_console

    console = make_console()  # values are the user's: "[/]" is no markup; wide in a pipe
    console.print(f"config file: {loaded.file or '(none found; defaults)'}")
    for line in loaded.ignored:
        console.print(f"warning: {line}")
    table = Table()
    table.add_column("key", no_wrap=True)  # whole: a key is what a config file needs
    table.add_column("value")
    table.add_column("source")
    for key, value, source in rows:
        table.add_row(key, json.dumps(value), source)
    console.print(table)
    creds = Table("variable", "value")
    for name in CREDENTIAL_VARIABLES:
        creds.add_row(name, credentials.get(name, "(not set)"))
    console.print(creds)
