"""What ``aca run`` and ``aca --task-file`` do: load the plan, show or dump it, then run it."""

from __future__ import annotations

import json

from aca_flows.cli.options import RunOptions
from aca_flows.errors import InputError
from aca_flows.plan import ExecutionPlan, load_execution_plan, load_task_file, plan_to_text
from aca_flows.plan.io import PLAN_SUFFIXES
from aca_flows.plan.render import render_tree
from aca_flows.session.files import write_text_atomic
from aca_flows.settings import load_config


def prepare_plan(options: RunOptions) -> ExecutionPlan:
    """The plan the user asked for, with command-line context applied, fully validated."""
    if options.task_file and options.execution_plan:
        raise InputError(
            "give either --task-file or --execution-plan, not both: "
            "the execution plan is the reviewed form of a task file."
        )
    if options.dump_plan and options.dump_plan.suffix.lower() not in PLAN_SUFFIXES:
        raise InputError(
            f"--dump-plan {options.dump_plan}: name the file .json or .toml "
            "so aca knows which format to write."
        )
    if options.use_intelligent_parser and options.force_naive_parser:
        raise InputError("--use-intelligent-parser and --force-naive-parser contradict; pick one.")
    if options.use_intelligent_parser and not options.force_naive_parser:
        raise InputError(
            "the intelligent parser is not available in this version of aca; "
            "drop --use-intelligent-parser to load the file with the deterministic parser."
        )
    if options.execution_plan:
        plan = load_execution_plan(options.execution_plan)
    elif options.task_file:
        plan = load_task_file(options.task_file)
    else:
        raise InputError(
            "no work given: pass a task file (aca run tasks.md, or aca --task-file tasks.md) "
            "or a reviewed plan (aca --execution-plan plan.json)."
        )
    updates: dict[str, object] = {}
    if options.context:
        updates["context_hints"] = [*plan.context_hints, *options.context]
    if options.append_system_prompt:
        updates["append_system_prompt"] = options.append_system_prompt
    return plan.model_copy(update=updates) if updates else plan


def execute(options: RunOptions) -> int:
    """Run (or dry-run) what the options ask for; return the process exit code."""
    options.workdir = options.workdir.resolve()
    load_config(options.workdir, options.config, options.config_overrides())
    plan = prepare_plan(options)
    if options.dump_plan:
        write_text_atomic(options.dump_plan, plan_to_text(plan, options.dump_plan.suffix))
    if options.dry_run:
        _show_dry_run(plan, options)
        return 0
    raise InputError(
        "running tasks is not available in this version of aca (the Prefect engine arrives "
        "next); use --dry-run to review the plan, and --dump-plan plan.json to save it."
    )


def _show_dry_run(plan: ExecutionPlan, options: RunOptions) -> None:
    pending = [t for t in plan.tasks if t.status.state == "pending"]
    if options.json:
        summary = {
            "dry_run": True,
            "plan": plan.name,
            "tasks": len(plan.tasks),
            "pending": len(pending),
            "dumped_to": str(options.dump_plan) if options.dump_plan else None,
        }
        print(json.dumps(summary))
        return
    print(render_tree(plan))
    print(f"\nDry run: {len(plan.tasks)} tasks ({len(pending)} pending); nothing was run.")
    if options.dump_plan:
        print(
            f"Plan written to {options.dump_plan}; review or edit it, then run "
            f"`aca --execution-plan {options.dump_plan}`."
        )
