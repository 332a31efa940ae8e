"""Flow runs of ``aca_run`` as a deployment has them, run as a worker runs them: in this
process, against the tests' Prefect server."""

from __future__ import annotations

import uuid

from prefect.client.orchestration import get_client

__all__ = ["deployment_run", "run_as_a_worker"]


async def deployment_run(parameters: dict):
    """A flow run of ``aca_run`` from a deployment made for it, scheduled (Prefect suspends
    only a run that has a deployment)."""
    from aca_flows.flows.aca_run import aca_run

    async with get_client() as client:
        flow_id = await client.create_flow(aca_run)
        deployment_id = await client.create_deployment(
            flow_id=flow_id, name=f"approval-{uuid.uuid4().hex[:8]}"
        )
        return await client.create_flow_run_from_deployment(deployment_id, parameters=parameters)


async def run_as_a_worker(flow_run_id, parameters: dict):
    """What a worker does with a scheduled flow run: run it, to its final (or paused) state."""
    from prefect.flow_engine import run_flow_async

    from aca_flows.flows.aca_run import aca_run

    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
    return await run_flow_async(
        aca_run, flow_run=flow_run, parameters=parameters, return_type="state"
    )
