"""Start an aca run from another pipeline's flow with ``run_deployment``, and wait for it.

A Prefect flow of some other pipeline (release, migration, nightly build...) hands a coding
job to aca and gets back the session id and branch where the work landed, and the run's
summary read from the flow run's persisted result::

    PREFECT_API_URL=http://prefect:4200/api python deployments/run_from_pipeline.py \
        --workdir /srv/checkouts/service --task-file nightly-fix-tests.md

The aca run is a child of this flow run in the UI; its work is on the branch returned.
Parameters are checked against the flow's signature before the run is created: a wrong type
is refused at once, naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from aca_flows.flows.aca_run import deployment_session_id
from aca_flows.session.layout import session_branch

DEPLOYMENT = "aca-run/on-demand"


@flow(name="pipeline-hands-off-to-aca")
def hand_off_to_aca(
    workdir: str,
    task_file: str,
    deployment: str = DEPLOYMENT,
    timeout_seconds: float = 3600,
    extra_parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``task_file`` in ``workdir`` through an aca deployment; return where its work is:
    the flow run, its session id and its session branch.

    Raises if the aca run did not complete (failed, crashed, or still running at the
    timeout), so this pipeline's run fails with it.
    """
    logger = get_run_logger()
    parameters = {"workdir": workdir, "task_file": task_file, **(extra_parameters or {})}
    flow_run = run_deployment(deployment, parameters=parameters, timeout=timeout_seconds)
    state = flow_run.state
    logger.info(f"aca run {flow_run.name} ({flow_run.id}) ended {state.name if state else '?'}")
    if state is None or not state.is_completed():
        raise RuntimeError(
            f"aca run {flow_run.name} ended {state.name if state else 'without a state'}: "
            f"{state.message if state else ''}"
        )
    # The run's session is named after it and its id derives from it.
    session_id = deployment_session_id(flow_run)
    return {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "state": state.name,
        "session_id": session_id,
        "branch": session_branch(session_id),
        # The flow's own summary (a RunSummary: status, each task's commit, cost...),
        # persisted with the flow run.
        "summary": state.result(raise_on_failure=False).model_dump(mode="json"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="the repository aca works on")
    parser.add_argument("--task-file", required=True, help="the task file to run")
    parser.add_argument("--deployment", default=DEPLOYMENT, help="flow-name/deployment-name")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait")
    args = parser.parse_args(argv)
    summary = hand_off_to_aca(args.workdir, args.task_file, args.deployment, args.timeout)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
