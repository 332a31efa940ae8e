"""Runs ``aca`` (as ``python -m aca_flows`` would) and writes, at exit, when each phase of its
start-up was reached (``time.time()``), as JSON to the file ``ACA_BENCH_PHASES`` names.

Used by bench/startup.py. Functions are timed by wrapping them right after their module is
imported, so nothing is imported earlier than aca itself imports it.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.util
import inspect
import json
import os
import sys
import time

PHASES: dict[str, float] = {"python started": time.time()}
# module -> (function, phase reached when it is called, phase reached when it returns)
WATCHED = {
    "aca_flows.cli.run": [("preflight", None, "CLI: provider checks done")],
    "aca_flows.flows.server": [("prefect_api_for_run", "Prefect and the flow imported", None)],
    "aca_flows.flows.aca_run": [("open_run", "flow run created, flow started", None)],
    "aca_flows.flows.run_providers": [
        ("_import_sdks", "provider SDK import started (a thread)", "provider SDK imported"),
        ("build_providers", "session created", "providers built"),
    ],
    "aca_flows.flows.task_run": [("execute_task", "first task run started", None)],
    "aca_flows.agent.execute": [("run_agent_and_verify", "worktree ready, prompt next", None)],
}


def _timed(function, on_call, on_return):
    def mark(phase):
        if phase and phase not in PHASES:
            PHASES[phase] = time.time()

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed(*args, **kwargs):
            mark(on_call)
            try:
                return await function(*args, **kwargs)
            finally:
                mark(on_return)

        return timed

    @functools.wraps(function)
    def timed(*args, **kwargs):
        mark(on_call)
        try:
            return function(*args, **kwargs)
        finally:
            mark(on_return)

    return timed


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in WATCHED:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module):
            original(module)
            for attr, on_call, on_return in WATCHED[name]:
                setattr(module, attr, _timed(getattr(module, attr), on_call, on_return))

        loader.exec_module = exec_module
        return spec


@atexit.register
def _write() -> None:
    with open(os.environ["ACA_BENCH_PHASES"], "w") as handle:
        json.dump(PHASES, handle)


sys.meta_path.insert(0, _Finder())
from aca_flows.cli import main  # noqa: E402

PHASES["CLI imported"] = time.time()
sys.argv[0] = "aca"
main()
