"""The live terminal view of ``aca run``: completed / running / failed / skipped, what each
running task is doing, tokens and cost.

It reads what the run writes (``meta/session.json`` and the task logs), never the run's
memory, so it shows the same truth a second terminal or a crash investigation would.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from aca_flows._words import one_line, shown, unpriced
from aca_flows.session.layout import AcaDir
from aca_flows.session.reading import load_session
from aca_flows.session.record import SessionRecord

__all__ = ["LiveView"]


class LiveView:
    """A background thread drawing the newest session of ``workdir`` started after ``since``
    (or ``session_id``), until ``stop``."""

    def __init__(self, workdir: Path, *, session_id: str | None = None, console: Console):
        self.aca = AcaDir(workdir)
        self.session_id = session_id
        self.since = time.time()
        self.console = console
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="aca-live", daemon=True)

    def __enter__(self) -> LiveView:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        with Live(Text("starting…"), console=self.console, refresh_per_second=4) as live:
            while not self._stop.wait(0.5):
                session = self._session()
                if session is not None:
                    live.update(render(session, self.aca))
            session = self._session()
            if session is not None:
                live.update(render(session, self.aca))

    def _session(self) -> SessionRecord | None:
        session_id = self.session_id or self._newest()
        if session_id is None:
            return None
        try:
            return load_session(self.aca.workdir, session_id)
        except Exception:  # a half-created session: draw it on the next tick
            return None

    def _newest(self) -> str | None:
        folder = self.aca.sessions_dir
        if not folder.is_dir():
            return None
        fresh = [p for p in folder.iterdir() if p.stat().st_mtime >= self.since - 1]
        if not fresh:
            return None
        self.session_id = max(fresh, key=lambda p: p.name).name
        return self.session_id


def render(session: SessionRecord, aca: AcaDir) -> Group:
    tasks = session.plan.tasks
    counts = session.task_counts  # the same counts as the summary and the Prefect artifacts
    header = Text.assemble(
        (f"{one_line(shown(session.name))}  ", "bold"),
        (f"{counts.get('completed', 0)} completed", "green"),
        "  ",
        (f"{counts.get('in_progress', 0)} running", "cyan"),
        "  ",
        (f"{counts.get('failed', 0)} failed", "red"),
        "  ",
        (f"{counts.get('skipped', 0)} skipped", "yellow"),
        f"  of {sum(counts.values())}   tokens {session.total_tokens:,}   "
        f"${session.cost_usd:.4f}{unpriced(session.unpriced_calls)}",
    )
    table = Table(show_header=True, box=None, pad_edge=False)
    table.add_column("task", no_wrap=True)
    table.add_column("doing")
    for task in tasks:
        if task.status.state == "in_progress" and not task.children:
            paths = aca.session(session.id)
            # Text, not markup: the activity is the agent's ("rm [/]" is no tag).
            activity = Text(one_line(shown(_last_activity(paths.task_log(task.id)))))
            table.add_row(Text(task.id, style="cyan"), activity)
    return Group(header, table) if table.row_count else Group(header)


def _last_activity(log: Path) -> str:
    """The newest line of a task log, in a few words."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(handle.tell() - 4096, 0))
            last = handle.read().decode("utf-8", "replace").strip().splitlines()[-1]
        record = json.loads(last)
    except (OSError, IndexError, ValueError):
        return "starting"
    kind = record.get("kind", "")
    if kind == "tool_call":
        args = record.get("arguments", {})
        target = args.get("path") or args.get("command") or args.get("pattern") or ""
        return f"{record.get('name')} {str(target)[:60]}"
    if kind == "verify":
        return f"verify {'passed' if record.get('passed') else 'failed'}"
    return kind.replace("_", " ")
