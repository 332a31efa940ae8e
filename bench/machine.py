"""How fast this machine is today: one line every bench prints before its figures.

The same code, on the same kind of machine (2 cores), measured two to four times slower one
day than another: more than any change of several rounds. Beside a bench's figures, these
two say whether a later figure moved with the code or with the machine:

- the CPU seconds of a fixed pure-Python loop (10 million additions; best of 3);
- a bare ``git worktree add`` and ``git worktree remove`` of a fresh repository, the commands
  every task runs (median of 10, in ms).
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["print_machine"]


def print_machine(bench: str) -> None:
    print(f"{bench}: machine: pure-Python loop {_loop_seconds():.2f} s CPU, "
          f"git worktree add + remove {_worktree_ms():.0f} ms")  # fmt: skip


def _loop_seconds() -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        total = 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.process_time() - start)
    return best


def _worktree_ms() -> float:
    from tests.fakes.git_repo import make_repo

    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repo(Path(tmp) / "repo")
        git = ["git", "-C", str(repo)]
        times = []
        for n in range(10):
            start = time.perf_counter()
            worktree = str(Path(tmp) / f"wt{n}")
            subprocess.run([*git, "worktree", "add", "-q", "--detach", worktree], check=True)
            subprocess.run([*git, "worktree", "remove", worktree], check=True)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
