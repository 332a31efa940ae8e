"""Tell Prefect a CI build finished: the `on-ci-build` deployment's trigger starts an aca run.

What another pipeline (a CI job, a webhook handler) does at its end::

    PREFECT_API_URL=http://prefect:4200/api \
        python deployments/emit_ci_event.py --repo https://github.com/org/service.git \
        --task-file nightly-fix-tests.md --build-id 1234

The event is ``ci.build.finished`` on the resource ``ci.build.<build-id>``; its payload carries
``repo`` (a git URL) or ``workdir`` (a checkout on the worker), and ``task_file`` (optional; the
deployment's trigger in prefect.yaml falls back to the shipped nightly-fix-tests.md), which the
trigger passes to the flow run as parameters. The shell equivalent::

    prefect event emit ci.build.finished --resource-id ci.build.1234 \
        --payload '{"repo": "https://github.com/org/service.git"}'
"""

from __future__ import annotations

import argparse
import sys

EVENT = "ci.build.finished"


def emit_build_finished(
    workdir: str | None = None,
    task_file: str | None = None,
    build_id: str = "local",
    status: str = "success",
    repo: str | None = None,
) -> str:
    """Emit the event; returns its id. Raises if Prefect did not take it."""
    from prefect.events import emit_event
    from prefect.events.worker import EventsWorker

    payload = {"build_id": build_id, "status": status}
    if repo:
        payload["repo"] = repo
    if workdir:
        payload["workdir"] = workdir
    if task_file:
        payload["task_file"] = task_file
    event = emit_event(
        event=EVENT,
        resource={"prefect.resource.id": f"ci.build.{build_id}", "prefect.resource.name": build_id},
        payload=payload,
    )
    if event is None:
        raise RuntimeError("the event was not emitted: is PREFECT_API_URL set?")
    # emit_event queues the event; drain the queue before the process exits.
    EventsWorker.drain_all()
    return str(event.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo", help="the repository aca works on, as a git URL")
    where.add_argument("--workdir", help="the repository aca works on, a checkout on the worker")
    parser.add_argument("--task-file", help="task file (default: the trigger's)")
    parser.add_argument("--build-id", default="local", help="the CI build's id")
    parser.add_argument("--status", default="success", help="the build's outcome")
    args = parser.parse_args(argv)
    event_id = emit_build_finished(
        args.workdir, args.task_file, args.build_id, args.status, repo=args.repo
    )
    print(f"emitted {EVENT} {event_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
