"""``aca providers list`` and ``aca providers check NAME``.

``list`` shows, for each provider, whether it can work here, what was found and its
configured model, from the free checks ``aca run`` makes before any task (``providers.
readiness``: the key accepted by the model list, the Ollama server and model, the ``claude``
binary and its login, the cassette); no tokens are spent. ``check`` makes that check (a
provider that cannot work is refused with the fix, exit 2), then one minimal real call (a
one-word answer, at most 16 output tokens) and prints the answer, usage, cost and time; a
failure is raised as the provider's own classified error (the CLI prints it, exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from aca_flows._words import counted
from aca_flows.cli.options import ConfigFile, ExistingWorkdir, JsonOutput, ModelName

app = typer.Typer(no_args_is_help=True)

CHECK_PROMPT = "Reply with the single word: ok"


def _config(workdir: Path, config: Path | None):
    from aca_flows.config_loader import load_config

    return load_config(workdir.resolve(), config).config


@app.command("list", short_help="Whether each provider can work here, and why.")
def list_providers(
    workdir: ExistingWorkdir = Path("."),
    config: ConfigFile = None,
    json_output: JsonOutput = False,
) -> None:
    """Each provider: whether it can work here (checked without spending tokens), and why."""
    from aca_flows.providers import PROVIDER_NAMES, check_provider

    loaded = _config(workdir, config)
    default = loaded.session.provider
    statuses = [check_provider(name, loaded, use_cache=False) for name in PROVIDER_NAMES]
    if json_output:
        rows = [
            {
                "name": s.name,
                "ready": s.ready,
                "default": s.name == default,
                "model": s.model,
                "detail": s.detail,
                "fix": s.fix or None,
            }
            for s in statuses
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("provider", "ready", "model", "details")
    for s in statuses:
        name = f"{s.name} (default)" if s.name == default else s.name
        detail = s.detail if s.ready else f"{s.detail}. To fix it, {s.fix}."
        table.add_row(name, "yes" if s.ready else "no", s.model, detail)
    # Text, not rich markup: fixes name config sections such as [providers.replay].
    Console(width=160, markup=False).print(table)


@app.command("check", short_help="Check a provider with one minimal real call.")
def check_provider(
    name: str = typer.Argument(..., help="claude-code, anthropic, openai, ollama or replay."),
    workdir: ExistingWorkdir = Path("."),
    config: ConfigFile = None,
    model: ModelName = None,
    json_output: JsonOutput = False,
) -> None:
    """Check provider NAME can work, then make one minimal real call and show what it
    answered and cost."""
    from aca_flows.cli.run import secret_block_environ
    from aca_flows.providers import get_provider, require_providers
    from aca_flows.providers.base import Message, ProviderRequest

    loaded = _config(workdir, config)
    environ = secret_block_environ(name, loaded)
    provider = get_provider(name, loaded, environ=environ)
    require_providers([name], loaded, environ)
    if name == "replay":
        # A cassette answers only what it recorded; checking it means reading it.
        calls = counted(provider.remaining, "call")
        typer.echo(f"replay: cassette {provider.cassette} holds {calls}")
        return
    import asyncio
    import tempfile
    import time

    with tempfile.TemporaryDirectory(prefix="aca-check-") as scratch:
        request = ProviderRequest(
            messages=[Message(role="user", text=CHECK_PROMPT)],
            model=model,
            max_tokens=16,
            # claude-code works in a folder: give it an empty one and nothing to do there.
            options={"cwd": scratch, "max_turns": 1, "allowed_tools": [], "resumable": False},
        )
        started = time.monotonic()
        response = asyncio.run(provider.complete(request))
        seconds = time.monotonic() - started
    summary = {
        "provider": name,
        "model": response.model,
        "answer": response.text.strip(),
        "input_tokens": response.usage.input_tokens,
        "output_tokens": response.usage.output_tokens,
        "cost_usd": response.cost_usd,
        "seconds": round(seconds, 2),
    }
    if json_output:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(
        f"{name}: ok — model {summary['model']}, answered {summary['answer']!r} in "
        f"{summary['seconds']} s; {summary['input_tokens']} in / {summary['output_tokens']} out "
        f"tokens, ${summary['cost_usd']:.6f}"
    )
