"""The worktrees of a run's tasks, made and removed by git beside the tasks' own work, so that
no task waits for git where it need not:

- a task's worktree is made as soon as the task is admitted, while Prefect starts its task run
  (``ahead``), and the task finds it made (``take``);
- once a task has landed, the worktree of the task that takes its place is made at once
  (``landed``), on the head that now holds the landed work, while the landed task's run ends
  and the scheduler admits the next one;
- a task's worktree is removed after its outcome is returned, while its dependents start
  (``remove``); a later attempt of the task waits for that (``removed``): its worktree has the
  same path.

Which task takes a landed one's place is the scheduler's guess (``next_after``). A worktree no
task took (a wrong guess, a task that ended before it began) is removed by ``drop_unclaimed``
once the task that made it and the task it is for are not running, and by ``settled`` at the
run's end.

A task's worktree is not removed but set aside (up to ``spares`` of them), and the next
worktree made takes one up: git then rewrites the files that differ, not the whole tree
(``workspace/worktree.py``). ``settled`` removes those left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable

from aca_flows._threads import in_thread
from aca_flows.workspace import TaskWorktree

__all__ = ["RunWorktrees"]


class RunWorktrees:
    def __init__(
        self, make: Callable[[str, TaskWorktree | None], TaskWorktree], spares: int = 0
    ) -> None:
        self._make = make
        """Makes a task's worktree at the session branch head (in a worker thread), taking up
        the spare given, if one is."""
        self.spares = spares
        """How many worktrees of ended tasks are kept for the next (0: none, each removed)."""
        self._spare: list[TaskWorktree] = []
        self._spare_lock = threading.Lock()  # worker threads take and give them
        self.next_after: Callable[[str], str | None] = lambda _landed: None
        """The task that starts once ``landed`` has finished, if one surely does (set by the
        scheduler); None: none is made ahead."""
        self.removals: dict[str, asyncio.Future] = {}
        # Each task's worktree made ahead, and the landed task that made it (None: the task's
        # admission did).
        self._ahead: dict[str, tuple[asyncio.Future, str | None]] = {}

    def ahead(self, task_id: str, *, by: str | None = None) -> None:
        """Start making ``task_id``'s worktree, unless it is made already or its last one is
        still being removed."""
        if task_id not in self._ahead and task_id not in self.removals:
            self._ahead[task_id] = (asyncio.ensure_future(in_thread(self.make, task_id)), by)

    def make(self, task_id: str) -> TaskWorktree:
        """``task_id``'s worktree at the session branch head: a spare taken up, if one is
        kept, else a new one. In a worker thread."""
        with self._spare_lock:
            spare = self._spare.pop() if self._spare else None
        return self._make(task_id, spare)

    def landed(self, task_id: str) -> None:
        """``task_id`` is on the session branch: make the worktree of the task that takes its
        place."""
        if (next_id := self.next_after(task_id)) is not None:
            self.ahead(next_id, by=task_id)

    def claimed(self, task_id: str) -> bool:
        """Whether a worktree is being made, or was made, ahead for ``task_id``."""
        return task_id in self._ahead

    async def take(self, task_id: str) -> TaskWorktree | None:
        """The worktree made ahead for ``task_id``, or None (none was, or making it failed:
        the task makes its own, and meets the error there)."""
        if (ahead := self._ahead.pop(task_id, None)) is None:
            return None
        with contextlib.suppress(Exception):
            return await ahead[0]
        return None

    def drop_unclaimed(self, running: Callable[[str], bool]) -> None:
        """Remove the worktrees made ahead that no task will take: the task they are for is
        not ``running``, nor is the task that made them (it has landed and finished: the
        guess was wrong, or the run admitted no task)."""
        for task_id, (made, by) in list(self._ahead.items()):
            if not running(task_id) and (by is None or not running(by)):
                del self._ahead[task_id]
                self._removing(task_id, _discard(made))

    def remove(self, task_id: str, worktree: TaskWorktree) -> asyncio.Future:
        """Set ``worktree`` aside for a later task, or remove it, in the background; the
        future ends once its path is free."""
        return self._removing(task_id, in_thread(self._set_aside, worktree))

    def none_left_to_start(self) -> None:
        """No task is left to start: the spares are removed now, while the last tasks run,
        not at the run's end, and the worktrees of those are removed as they end."""
        self.spares = 0
        with self._spare_lock:
            spares, self._spare = self._spare, []
        for spare in spares:
            self._removing(spare.path.name, in_thread(spare.remove))

    def _set_aside(self, worktree: TaskWorktree) -> None:
        with self._spare_lock:
            room = len(self._spare) < self.spares
        if not room:
            worktree.remove()
        elif (spare := worktree.set_aside()) is not None:
            with self._spare_lock:
                # No room any more: other tasks set theirs aside meanwhile, or none is left to
                # start, or the run is settling (``spares`` is 0 then).
                kept = len(self._spare) < self.spares
                if kept:
                    self._spare.append(spare)
            if not kept:
                spare.remove()

    async def removed(self, task_id: str) -> None:
        """Until an earlier removal of ``task_id``'s worktree, at the path its next one takes,
        has ended."""
        if (removal := self.removals.get(task_id)) is not None:
            await asyncio.wait([removal])

    async def settled(self) -> list[Exception]:
        """Until every removal has ended and every worktree made ahead that no task took is
        removed; the errors of those that failed."""
        for task_id in list(self._ahead):
            self._removing(task_id, _discard(self._ahead.pop(task_id)[0]))
        self.spares = 0  # a landing that comes after this removes its worktree
        results = await asyncio.gather(*self.removals.values(), return_exceptions=True)
        with self._spare_lock:
            spares, self._spare = self._spare, []
        results += await asyncio.gather(
            *(in_thread(spare.remove) for spare in spares), return_exceptions=True
        )
        return [error for error in results if isinstance(error, Exception)]

    def _removing(self, task_id: str, removal: Awaitable[None]) -> asyncio.Future:
        future = self.removals[task_id] = asyncio.ensure_future(removal)
        future.add_done_callback(functools.partial(self._forget_removed, task_id))
        return future

    def _forget_removed(self, task_id: str, removal: asyncio.Future) -> None:
        # A removal that succeeded is forgotten: a finished asyncio task keeps the context it
        # ran in (its task run's), and a long run would keep one for every task.
        succeeded = not removal.cancelled() and removal.exception() is None
        if succeeded and self.removals.get(task_id) is removal:
            del self.removals[task_id]


async def _discard(made: asyncio.Future) -> None:
    try:
        worktree = await made
    except Exception:
        return  # never made: nothing to remove
    await in_thread(worktree.remove)
