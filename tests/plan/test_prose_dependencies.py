"""Dependencies stated in prose (aca_flows/plan/prose_dependencies.py): found to warn about."""

from __future__ import annotations

from aca_flows.plan import load_task_file
from aca_flows.plan.prose_dependencies import prose_dependencies, prose_dependencies_warning
from tests.fixtures import COMPAT


def test_the_original_numbered_phases_state_their_dependencies_in_prose():
    plan = load_task_file(COMPAT / "nested-complex-tasks" / "dependencies-test.md")
    found = prose_dependencies(plan)
    # Phase 1 says "None (starting point)": nothing to warn about.
    assert [task_id for task_id, _ in found] == [
        "2-service-endpoints",
        "3-web-dashboard",
        "4-end-to-end-checks",
        "5-launch",
    ]
    assert "Requires Storage Layer (task #1)" in found[0][1]
    warning = prose_dependencies_warning(plan)
    assert warning.startswith("4 task(s) state dependencies in prose")
    assert "--use-intelligent-parser" in warning


def test_a_plain_checklist_or_a_task_with_depends_on_gives_no_warning(tmp_path):
    assert prose_dependencies_warning(load_task_file(COMPAT / "multi-task" / "tasks.md")) == ""
    tasks = tmp_path / "tasks.md"
    tasks.write_text(
        "- Build the db {#db}\n"
        "- Add login {#login depends_on=db}\n"
        "  Depends on: the db task\n"
        "- Add docs\n"
        "  Dependencies: none\n"
    )
    assert prose_dependencies(load_task_file(tasks)) == []
