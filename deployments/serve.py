"""Serve the deployments of prefect.yaml from this process: no work pool, no worker.

For one machine (a laptop, a small server): this process registers every deployment of
prefect.yaml (or those named with ``--name``) with the Prefect server, then runs their
scheduled, triggered and on-demand runs itself until stopped (Ctrl-C pauses the schedules)::

    prefect server start                       # or PREFECT_API_URL pointing at a server
    python deployments/serve.py                # every deployment of prefect.yaml
    python deployments/serve.py --name on-demand --name on-ci-build --limit 2

prefect.yaml stays the one description of the deployments: names, parameters, cron
schedules and event triggers are read from it. A relative task file names a job shipped
inside aca (``aca_flows/jobs/``), as it does for a worker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

PREFECT_YAML = Path(__file__).resolve().parent.parent / "prefect.yaml"


def load_deployment_specs(
    prefect_yaml: Path = PREFECT_YAML, names: list[str] | None = None
) -> list[dict[str, Any]]:
    """The ``deployments`` entries of prefect.yaml, all or those named; an unknown name is
    an error listing the known ones."""
    specs = yaml.safe_load(prefect_yaml.read_text(encoding="utf-8")).get("deployments") or []
    if not names:
        return specs
    known = {spec["name"]: spec for spec in specs}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(
            f"no deployment named {', '.join(unknown)} in {prefect_yaml}; known: {', '.join(known)}"
        )
    return [known[name] for name in names]


def runner_deployment(spec: dict[str, Any]):
    """A servable deployment of the ``aca-run`` flow built from one prefect.yaml entry."""
    from prefect.events import DeploymentTriggerTypes
    from prefect.schedules import Cron
    from pydantic import TypeAdapter

    from aca_flows.flows.aca_run import aca_run

    schedules = [
        Cron(
            s["cron"],
            timezone=s.get("timezone"),
            active=s.get("active", True),
            parameters=s.get("parameters") or {},
        )
        for s in spec.get("schedules") or []
    ]
    trigger_adapter = TypeAdapter(DeploymentTriggerTypes)
    triggers = [
        trigger_adapter.validate_python({"name": f"{spec['name']}__automation_{i}", **t})
        for i, t in enumerate(spec.get("triggers") or [], start=1)
    ]
    return aca_run.to_deployment(
        name=spec["name"],
        description=spec.get("description"),
        tags=spec.get("tags"),
        parameters=spec.get("parameters") or {},
        schedules=schedules or None,
        triggers=triggers or None,
        concurrency_limit=spec.get("concurrency_limit"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", action="append", help="serve only this deployment (repeat)")
    parser.add_argument("--limit", type=int, help="at most this many runs at once")
    parser.add_argument("--prefect-file", type=Path, default=PREFECT_YAML)
    args = parser.parse_args(argv)
    from prefect import serve

    deployments = [
        runner_deployment(s) for s in load_deployment_specs(args.prefect_file, args.name)
    ]
    serve(*deployments, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
