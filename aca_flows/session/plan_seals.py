"""The plans this machine's runs started, were approved or extended, sealed in ``~/.aca``.

A session's record travels through a ``--repo`` remote (``refs/aca/sessions/<id>``), and
whoever can push there can rewrite it: new tasks, other prompts or verify commands, another
provider, model or budget, an approval nobody gave. A resume would run that with the user's
key. So whenever a run here records what defines the work (the session's start, subtasks its
agents added, a resume, an approval), the store seals it in the user's home, never in the
repository: ``~/.aca/plan-seals/<session-id>.json`` holds a digest of each task's definition
(its status, times and progress left out), of the plan's shared fields, of the hints a
reviewer gave a task and of the approval's terms (skips, concurrency, note: all of them reach
the agents' prompts or limits), and the provider, model, budget and approval; and the most
this machine saw the session spend, sealed too when a run ends (a ledger rewritten to cost
nothing started the budget over). A record fetched from a remote is restored only when it
matches its seal and has spent no less (``seal_changes`` names what differs). A session this
machine never ran has no seal: its record is taken as the remote holds it (docs/security.md
says what that leaves open).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

from aca_flows._words import listed
from aca_flows.session.files import write_json_atomic
from aca_flows.session.record import SessionRecord

__all__ = ["keep_seal", "seal_changes", "seal_path", "sealed_source"]

# A task's fields that say what it does; its status, times and tree links change as it runs.
_PROGRESS = {"status", "created_at", "updated_at", "children"}


def seal_path(session_id: str) -> Path:
    """Where this machine keeps the seal of ``session_id``'s plan."""
    return Path.home() / ".aca" / "plan-seals" / f"{session_id}.json"


def keep_seal(record: SessionRecord) -> None:
    """Seal ``record``'s plan as this machine's run has it now. A home that cannot be written
    does not stop the run: a later resume from a remote is then compared with an older seal."""
    seal = _seal(record)
    with contextlib.suppress(OSError, ValueError, TypeError):  # what it spent never goes down
        kept = json.loads(seal_path(record.id).read_text(encoding="utf-8"))
        seal["spent_usd"] = max(seal["spent_usd"], float(kept.get("spent_usd", 0.0)))
    with contextlib.suppress(OSError):
        # Digests only, nothing to redact (a 64-hex digest would look like a token).
        write_json_atomic(seal_path(record.id), seal, redact=False, durable=False)


def seal_changes(record: SessionRecord) -> list[str]:
    """What ``record`` (fetched from a remote) defines otherwise than its seal here: ``[]``
    when it matches, or when this machine has no seal of the session."""
    try:
        kept = json.loads(seal_path(record.id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    now = _seal(record)
    changes = []
    old_tasks, new_tasks = kept.get("tasks", {}), now["tasks"]
    added = [t for t in new_tasks if t not in old_tasks]
    removed = [t for t in old_tasks if t not in new_tasks]
    changed = [t for t in new_tasks if t in old_tasks and new_tasks[t] != old_tasks[t]]
    for words, ids in (("added", added), ("removed", removed), ("changed", changed)):
        if ids:
            changes.append(f"task(s) {words}: {listed(ids, 5)}")
    if kept.get("plan") != now["plan"]:
        changes.append("the plan's shared fields (verify, setup commands, context, prompt)")
    for key in ("source", "provider", "model", "budget_usd", "approved"):
        if kept.get(key) != now[key]:
            changes.append(f"{key} {kept.get(key)!r} -> {now[key]!r}")
    # Sealed since round 47: a seal from before holds none of these.
    if "hints" in kept and (other := _differ(kept["hints"], now["hints"])):
        changes.append(f"a reviewer's hints to task(s) {listed(other, 5)}")
    if "approval" in kept and kept["approval"] != now["approval"]:
        changes.append("the approval's terms (skipped tasks, concurrency, note)")
    if now["spent_usd"] < kept.get("spent_usd", 0.0) - 1e-9:
        changes.append(f"the spend ${kept['spent_usd']:.4f} -> ${now['spent_usd']:.4f}")
    return changes


def _differ(old: dict[str, str], new: dict[str, str]) -> list[str]:
    return sorted(t for t in old.keys() | new.keys() if old.get(t) != new.get(t))


def _seal(record: SessionRecord) -> dict[str, Any]:
    plan = record.plan
    shared = plan.model_dump(mode="json", exclude={"tasks"})
    return {
        "session_id": record.id,
        "source": record.source.path if record.source else None,
        "plan": _digest(shared),
        "tasks": {t.id: _digest(t.model_dump(mode="json", exclude=_PROGRESS)) for t in plan.tasks},
        "provider": record.provider,
        "model": record.model,
        "budget_usd": record.budget_usd,
        "approved": record.approval is not None and record.approval.state == "approved",
        "hints": {t: _digest(run.hints) for t, run in record.tasks.items() if run.hints},
        "approval": _digest(
            record.approval.model_dump(mode="json", include={"skip", "max_concurrent", "note"})
            if record.approval is not None
            else None
        ),
        "spent_usd": record.cost_usd,
    }


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def sealed_source(session_id: str) -> str | None:
    """The task file the sealed session was started from, as this machine recorded it."""
    try:
        return json.loads(seal_path(session_id).read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None
