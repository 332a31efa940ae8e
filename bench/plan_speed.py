"""Prints how long aca takes to load, validate and dump a generated 5,000-task plan, and how
long ``aca --help`` takes to start. Targets: plan under 1 s; --help well under a second.
Beside them, a load of items without ids (each id made from its title) at 4,000 and 16,000
items: the time should grow with the items, not with their square (it took 1.5 s and 21 s).

Run: .venv/bin/python bench/plan_speed.py
"""

from __future__ import annotations

import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aca_flows.plan import load_execution_plan, load_task_file, plan_to_text

TASKS = 5_000


def generate_markdown(path: Path) -> None:
    lines = ["# Generated plan", ""]
    for group in range(TASKS // 50):
        lines.append(f"## Group {group}")
        for item in range(49):
            n = group * 49 + item
            dep = f" depends_on=t{n - 1}" if item else ""
            lines.append(f'- [ ] Task number {n} {{#t{n}{dep} verify="true"}}')
    path.write_text("\n".join(lines) + "\n")


def generate_untitled_ids(path: Path, items: int) -> None:
    path.write_text("# Generated\n\n" + "".join(f"- [ ] do it {n % 7}\n" for n in range(items)))


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "plan.md"
        generate_markdown(source)
        dumped = Path(tmp) / "plan.json"
        plan = load_task_file(source)
        load_s = timed(lambda: load_task_file(source))
        dump_s = timed(lambda: dumped.write_text(plan_to_text(plan, ".json")))
        reload_s = timed(lambda: load_execution_plan(dumped))
    print(f"tasks in plan:                       {len(plan.tasks)}")
    print(f"load + validate Markdown:            {load_s:.3f} s")
    print(f"dump JSON:                           {dump_s:.3f} s")
    print(f"load + validate dumped JSON:         {reload_s:.3f} s")
    print(f"total (target < 1 s):                {load_s + dump_s + reload_s:.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for items in (4_000, 16_000):
            source = Path(tmp) / f"ids-{items}.md"
            generate_untitled_ids(source, items)
            seconds = timed(functools.partial(load_task_file, source))
            print(f"load {items:>6,} items, ids made:      {seconds:.3f} s")

    with tempfile.TemporaryDirectory() as tmp:
        # One item line of what links and code spans start with: read in linear time (it
        # took each start of one to the line's end: 200 KB ran past a minute).
        for name, unit in (("[", "["), ("`", "`"), ("[x](", "[x](")):
            source = Path(tmp) / "line.md"
            source.write_text("# P\n\n- " + unit * (200_000 // len(unit)) + " {#a}\n")
            seconds = timed(functools.partial(load_task_file, source))
            print(f"a 200 KB item line of {name!r:<8}      {seconds:.3f} s")

    aca = Path(sys.executable).with_name("aca")
    help_run = [str(aca), "--help"]
    runs = [timed(lambda: subprocess.run(help_run, capture_output=True)) for _ in range(5)]
    print(f"aca --help start-up (median of 5):   {statistics.median(runs):.3f} s")


if __name__ == "__main__":
    main()
