"""Flows: the only layer that imports Prefect: the ``aca-run`` flow, its task runs, artifacts.

Import ``aca_flows.flows.aca_run`` for the flow itself (the deployment entrypoint is
``aca_flows/flows/aca_run.py:aca_run``); ``run_flow`` runs it from synchronous code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FlowOutcome", "reload_prefect_settings", "run_flow"]


def reload_prefect_settings() -> None:
    """Prefect's settings and logging read again from this process's environment and streams,
    which changed after Prefect was imported (a run forked by the warm runner)."""
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    _ca_file_default_from_environment()
    refresh_global_settings_context()
    setup_logging(incremental=False)


def _ca_file_default_from_environment() -> None:
    """Prefect's default CA file for its server is ``SSL_CERT_FILE`` as it was at import: set
    it again from the environment now, so a forked run verifies its server as the command
    run by itself would."""
    import os

    from prefect.settings.models.api import APISettings

    ca_file = APISettings.model_fields["ssl_cert_file"]
    if ca_file.default != os.environ.get("SSL_CERT_FILE"):
        ca_file.default = os.environ.get("SSL_CERT_FILE")
        APISettings.model_rebuild(force=True)


class FlowOutcome:
    """How a flow run ended: Prefect's state name, the run summary in its JSON form (what
    ``aca run --json`` prints), or the error that stopped it before any task ran."""

    def __init__(self, state_name: str, summary: dict[str, Any] | None, error: Exception | None):
        self.state_name = state_name
        self.summary = summary
        self.error = error


def run_flow(
    *, quiet_console: bool = False, prose_warning_said: bool = False, **parameters: Any
) -> FlowOutcome:
    """Run ``aca_run`` to its end with ``parameters`` (its keyword arguments), as the flow
    named after the plan.

    ``quiet_console``: keep Prefect's run logs off the terminal (a live view draws there);
    they still reach the Prefect server and its UI.

    ``prose_warning_said``: the caller warned of the dependencies the task file states in
    prose (``aca run`` does as it loads it); the flow run does not log it again.

    The run talks to the server ``PREFECT_API_URL`` names, else to aca's local server
    (``aca server start``), else to a temporary server that ends with the run.
    """
    import asyncio
    import sys

    from aca_flows.flows.aca_run import aca_run, plan_flow
    from aca_flows.flows.run_setup import plan_name_of, prose_warning_said_by_caller
    from aca_flows.flows.server import prefect_api_for_run
    from aca_flows.flows.summary import RunSummary
    from aca_flows.session.store import new_session_id

    if quiet_console:
        _quiet_console_logs()

    # Run under the plan's name, so the flow run is the plan's (docs/engine.md).
    plan_name = plan_name_of(parameters)
    run_name = None
    if plan_name is not None and (parameters.get("session_id") or not parameters.get("repo")):
        # The session id made here, not in the flow: the flow run is named "<plan> · <id>"
        # from its first line on, in the terminal as in the UI. (With a remote, an id means
        # "fetch this session first": a new session's is made by the flow, which names that
        # run once it knows it; a resume's is given.)
        parameters["session_id"] = parameters.get("session_id") or new_session_id()
        run_name = f"{plan_name} · {parameters['session_id']}"
    flow = aca_run if plan_name is None else plan_flow(plan_name, run_name)

    async def main() -> FlowOutcome:
        from prefect import tags

        # Tagged with its session from the start: a resume finds it even if this process
        # dies before the flow labels its run (abandoned_runs.py).
        session = parameters.get("session_id")
        with tags(*(["aca", f"session:{session}"] if session else [])):
            state = await flow(**parameters, return_state=True)
        result = await state.aresult(raise_on_failure=False)
        if isinstance(result, RunSummary):
            return FlowOutcome(state.name, result.model_dump(mode="json"), None)
        error = result if isinstance(result, Exception) else RuntimeError(state.message)
        return FlowOutcome(state.name, None, error)

    with (
        prefect_api_for_run(announce=lambda line: print(line, file=sys.stderr)),
        prose_warning_said_by_caller(prose_warning_said),
    ):
        return asyncio.run(main())


def _quiet_console_logs() -> None:
    import logging

    from aca_flows.flows.log_batch import console_handlers

    for handler in console_handlers():
        handler.setLevel(logging.WARNING)
