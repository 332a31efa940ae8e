"""A budget aca cannot keep, refused before anything is spent (a run's set-up, and a dry run,
which must refuse what the run refuses). Imports no Prefect: the command line checks it."""

from __future__ import annotations

from aca_flows.errors import InputError
from aca_flows.plan import ExecutionPlan
from aca_flows.prices import PRICED_BY_TABLE, price_for
from aca_flows.providers.readiness import default_model
from aca_flows.settings import AcaConfig

__all__ = ["free_provider", "priced_by_aca", "refuse_a_budget_without_prices"]


def refuse_a_budget_without_prices(plan: ExecutionPlan, config: AcaConfig) -> None:
    """A budget aca cannot keep is refused before anything is spent: the calls of a model
    with no known price would count $0 and never reach it. So would a hosted Ollama's."""
    budget = config.session.budget_usd
    if budget is None:
        return
    unpriced: set[tuple[str, str]] = set()
    for task in plan.tasks:
        provider = task.provider or config.session.provider
        if task.children or task.status.is_done or not priced_by_aca(provider, config):
            continue
        model = config.model_for(provider, task.model) or default_model(provider)
        if model and price_for(model, config.provider(provider).prices) is None:
            unpriced.add((provider, model))
    if unpriced:
        provider, model = min(unpriced)
        listed = ", ".join(f"{m} ({p})" for p, m in sorted(unpriced))
        hosted = ""
        if any(p == "ollama" for p, _ in unpriced):
            hosted = (
                f" (the Ollama server at {_ollama_host(config)} is not on this machine, so it "
                "may bill them; a price of 0 says it does not)"
            )
        raise InputError(
            f"a budget of ${budget:g} cannot be kept: aca has no price for {listed}, so its "
            f"calls would count $0{hosted}. Give the price in the config "
            f'([providers.{provider}.prices."{model}"] input = ..., output = ..., in USD per '
            "million tokens), or run without a budget."
        )


def priced_by_aca(provider: str, config: AcaConfig) -> bool:
    """Whether ``provider``'s calls cost what aca's prices say (a model without one: $0).
    Ollama's do too unless its server runs on this machine, where they are free."""
    from aca_flows.providers.ollama_api import runs_here

    if provider == "ollama":
        return not runs_here(_ollama_host(config))
    return provider in PRICED_BY_TABLE


def free_provider(provider: str, config: AcaConfig) -> bool:
    """Whether ``provider``'s calls cost nothing, so $0 is their true cost: a replay's (they
    cost what they were recorded at) and a local Ollama's."""
    return provider == "replay" or (provider == "ollama" and not priced_by_aca(provider, config))


def _ollama_host(config: AcaConfig) -> str:
    from aca_flows.providers.ollama_api import host_of

    return host_of(config.provider("ollama"))
