"""``aca_flows``: the curated public surface, imported lazily."""

from __future__ import annotations


def test_the_public_surface_is_all_and_loads_lazily():
    import subprocess
    import sys

    import aca_flows

    assert sorted(aca_flows.__all__) == sorted([*aca_flows._EXPORTS, "__version__"])
    for name in aca_flows.__all__:
        assert getattr(aca_flows, name) is not None
    code = "import sys, aca_flows; print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip() == "False"  # `import aca_flows` (so `aca --help`) pays for nothing


def test_aca_run_is_the_flow_and_plan_task_build_an_execution_plan():
    from prefect import Flow

    from aca_flows import Plan, Task, aca_run
    from aca_flows.flows.aca_run import aca_run as the_flow
    from aca_flows.plan.models import ExecutionPlan

    assert aca_run is the_flow and isinstance(aca_run, Flow) and aca_run.name == "aca-run"
    plan = Plan(name="p", tasks=[Task(id="a", title="t", description="d", verify="true")])
    assert isinstance(plan, ExecutionPlan) and plan.tasks[0].verify == "true"
