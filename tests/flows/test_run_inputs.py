"""Warnings about a run's inputs, said before any task starts (pure: no Prefect)."""

from __future__ import annotations

from aca_flows.flows.run_inputs import setup_network_warning
from aca_flows.plan.models import ExecutionPlan, SetupCommand, Task
from aca_flows.settings import SandboxSection


def plan_of(network: bool | None, *tasks: Task) -> ExecutionPlan:
    install = SetupCommand(name="install", command="pip install -e .", network=network)
    return ExecutionPlan(name="p", tasks=list(tasks), setup_commands=[install])


def test_a_setup_that_will_lose_the_network_is_named_before_the_run():
    a, b = Task(id="a", title="A"), Task(id="b", title="B")
    said = setup_network_warning(plan_of(None, a, b), SandboxSection())
    assert "'install' will run without the network" in said and "(a, b)" in said
    assert "`network = false`" in said
    # Its own network = true covers the first task; the second may start after one landed.
    assert "(a, b)" in setup_network_warning(plan_of(True, a, b), SandboxSection())
    assert setup_network_warning(plan_of(True, a), SandboxSection()) is None


def test_no_warning_where_setup_keeps_the_network_or_says_it_needs_none():
    a, b = Task(id="a", title="A"), Task(id="b", title="B", network=True)
    assert setup_network_warning(plan_of(False, a, b), SandboxSection()) is None  # offline
    assert setup_network_warning(plan_of(None, b), SandboxSection()) is None  # b has it
    assert setup_network_warning(plan_of(None, a, b), SandboxSection(network=True)) is None
    assert setup_network_warning(plan_of(None, a, b), SandboxSection(mode="off")) is None
