"""prefect.yaml and the deployments/ scripts, read without a Prefect server."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from aca_flows.flows.aca_run import aca_run
from aca_flows.flows.deployment_guard import JOBS_DIR, resolve_job_paths
from aca_flows.plan import load_task_file
from aca_flows.plan.models import verify_command_for

ROOT = Path(__file__).resolve().parents[2]
# A module path: the worker imports the aca it has installed; no file of a clone is named.
ENTRYPOINT = "aca_flows.flows.aca_run.aca_run"


def project() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text())


def deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in project()["deployments"]}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"aca_{name}", ROOT / "deployments" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_project_has_a_schedule_an_on_demand_deployment_and_a_trigger():
    found = deployments()
    assert set(found) == {"nightly-fix-tests", "docs-refresh", "on-demand", "on-ci-build"}
    assert all(d["entrypoint"] == ENTRYPOINT for d in found.values())
    assert all(d["work_pool"]["name"] == "aca-process" for d in found.values())
    assert [s["cron"] for s in found["nightly-fix-tests"]["schedules"]] == ["0 2 * * *"]
    assert [s["cron"] for s in found["docs-refresh"]["schedules"]] == ["0 4 * * 1"]
    # On demand: nothing preset, so every flow parameter is the caller's to give.
    assert not found["on-demand"].get("parameters")
    (trigger,) = found["on-ci-build"]["triggers"]
    assert trigger["expect"] == ["ci.build.finished"]


def test_shipped_schedules_are_inactive_until_pointed_at_a_repository():
    for name in ("nightly-fix-tests", "docs-refresh"):
        schedules = deployments()[name]["schedules"]
        assert schedules and all(s["active"] is False for s in schedules)
        # No repository is preset: a run started anyway is refused, naming what to give.
        parameters = deployments()[name]["parameters"]
        assert "repo" not in parameters and "workdir" not in parameters
    text = (ROOT / "prefect.yaml").read_text()
    assert "ACA_DEPLOYMENTS__ALLOWED_WORKDIRS" in text and "--param repo=" in text


def test_no_path_of_one_checkout_is_pinned_and_nothing_is_pulled():
    text = (ROOT / "prefect.yaml").read_text()
    assert str(ROOT) not in text
    assert not [s for s in strings(project()) if s.startswith(("/", "~"))]
    # Nothing to build, push or pull: an explicit empty pull stops `prefect deploy` from
    # recording the deploying folder as the worker's working directory.
    assert project()["pull"] == [] and not project()["build"] and not project()["push"]


@pytest.mark.parametrize("name", sorted(deployments()))
def test_preset_parameters_are_valid_flow_parameters(name):
    spec = deployments()[name]
    presets = [spec.get("parameters") or {}]
    presets += [s.get("parameters") or {} for s in spec.get("schedules") or []]
    for parameters in presets:
        aca_run.validate_parameters(parameters)  # raises on an unknown name or a bad value


@pytest.mark.parametrize("name", ["nightly-fix-tests", "docs-refresh"])
def test_recurring_jobs_run_task_files_shipped_in_the_package_with_verify_commands(name):
    parameters = resolve_job_paths(deployments()[name]["parameters"])
    task_file = Path(parameters["task_file"])
    assert task_file.parent == JOBS_DIR == ROOT / "aca_flows" / "jobs"
    assert deployments()[name]["parameters"]["open_pr"] is True
    plan = load_task_file(task_file)
    leaves = [t for t in plan.tasks if not t.children]
    assert leaves
    assert all(verify_command_for(plan, t) for t in leaves), [t.id for t in leaves]


def test_the_ci_trigger_renders_payload_fields_as_parameters():
    (trigger,) = deployments()["on-ci-build"]["triggers"]
    env = ImmutableSandboxedEnvironment()

    def render(payload: dict[str, Any]) -> dict[str, str]:
        event = SimpleNamespace(payload=payload)
        return {k: env.from_string(v).render(event=event) for k, v in trigger["parameters"].items()}

    given = render({"workdir": "/srv/repo", "task_file": "docs-refresh.md"})
    assert given == {"repo": "", "workdir": "/srv/repo", "task_file": "docs-refresh.md"}
    by_url = render({"repo": "https://github.com/org/service.git"})
    assert by_url["repo"] == "https://github.com/org/service.git" and by_url["workdir"] == "."
    assert by_url["task_file"] == "nightly-fix-tests.md"
    assert Path(resolve_job_paths(by_url)["task_file"]).is_file()


def test_serve_builds_the_same_deployments_from_prefect_yaml():
    serve = load_script("serve")
    built = {d.name: d for d in (serve.runner_deployment(s) for s in serve.load_deployment_specs())}
    assert set(built) == set(deployments())
    nightly = built["nightly-fix-tests"]
    assert nightly.parameters == deployments()["nightly-fix-tests"]["parameters"]
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
    (trigger,) = built["on-ci-build"].triggers
    assert trigger.expect == {"ci.build.finished"}
    assert trigger.parameters == deployments()["on-ci-build"]["triggers"][0]["parameters"]


def test_serve_names_the_known_deployments_when_given_an_unknown_one():
    serve = load_script("serve")
    with pytest.raises(SystemExit, match="no deployment named nightly.*known: nightly-fix-tests"):
        serve.load_deployment_specs(names=["nightly"])
