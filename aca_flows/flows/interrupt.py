"""Stopping a run: a signal (the ``aca`` command's Ctrl-C, SIGTERM or SIGHUP), a cancel from the
Prefect UI or a takeover of the session (its flow run ended ``Crashed`` by a resume elsewhere)
becomes an ``Interrupt``: no new task starts, running ones get a grace period (none for a
cancel or a takeover)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prefect.context import get_run_context

from aca_flows._startup import interrupt_signals, let_one_pass, run_ended

__all__ = [
    "CANCEL_POLL_SECONDS",
    "UI_CANCEL",
    "Interrupt",
    "cancelled_from_outside",
    "interrupt_on_signals",
    "stop_for_lost_server",
    "task_runs_recorded_ended",
    "watch_for_cancel",
]

# How often the flow looks whether its flow run was cancelled (the Prefect UI's Cancel sets
# the state to Cancelling; nothing else tells a flow run that no worker started).
CANCEL_POLL_SECONDS = 2.0
UI_CANCEL = "a cancel from the Prefect UI"
# A look at the flow run with no answer in this long (Prefect's client retries a refused
# connection after 2 s, then 4 s, ...) asks whether the server is still there.
LOOK_TIMEOUT_SECONDS = 10.0
# Set by ``interrupt_on_signals`` (the CLI): the flow then turns SIGINT/SIGTERM into a stop.
_SIGNALS_WANTED = False


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within this block, a flow run started in this thread's event loop handles SIGINT and
    SIGTERM as an interrupt (see ``Interrupt``) instead of Prefect's crash handling.

    For the ``aca`` command only: a deployment run leaves SIGTERM to Prefect's runner, which
    uses it to cancel flow runs.
    """
    global _SIGNALS_WANTED
    previous, _SIGNALS_WANTED = _SIGNALS_WANTED, True
    try:
        yield
    finally:
        _SIGNALS_WANTED = previous


class Interrupt:
    """A stop asked for by a signal. The first signal stops new tasks from starting and gives
    the running ones ``grace_seconds`` to finish; after that, or at a second signal, they are
    cancelled."""

    def __init__(self, grace_seconds: float):
        self.grace_seconds = grace_seconds
        self.signal_name: str | None = None
        self.count = 0
        self.announced = False
        self.server_lost = False
        # Why the run stopped when its session was taken over (``watch_for_cancel``): its end
        # then says so, and it pushes nothing more.
        self.taken_over: str | None = None
        self.flow_run_crashed = False  # by someone else while the run ran it: it starts none
        self._since: float | None = None
        self._changed = asyncio.Event()

    @property
    def requested(self) -> bool:
        return self.count > 0

    def request(self, signum: int) -> None:
        self.count += 1
        if self._since is None:
            self._since = time.monotonic()
            self.signal_name = signal.Signals(signum).name
        self._changed.set()

    def request_cancel(self, why: str) -> None:
        """A cancel from outside (the Prefect UI): no grace, running tasks stop now."""
        self.count += 2
        if self._since is None:
            self._since = time.monotonic()
            self.signal_name = why
        self._changed.set()

    def cancel_now(self) -> bool:
        """Running tasks must be cancelled: a second signal, or the grace period is over."""
        return self.count > 1 or (self.requested and self.grace_left() <= 0)

    def grace_left(self) -> float:
        if self._since is None:
            return float("inf")
        return self.grace_seconds - (time.monotonic() - self._since)

    async def wait(self, seen: int) -> None:
        """Until more than ``seen`` signals have arrived."""
        while self.count <= seen:
            self._changed.clear()
            await self._changed.wait()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT/SIGTERM in the running loop while the block runs (if the CLI asked
        for it).

        After it, the run records its end (the flow's cleanup, Prefect's engine, the CLI's
        summary): the first signal then is let pass unheeded (``_startup.run_ended``), and
        the next goes to the handlers found before."""
        if not _SIGNALS_WANTED:
            yield
            return
        loop = asyncio.get_running_loop()
        previous = {sig: signal.getsignal(sig) or signal.SIG_DFL for sig in interrupt_signals()}
        try:
            for sig in previous:
                loop.add_signal_handler(sig, self.request, sig)
        except (ValueError, RuntimeError):  # not the main thread: signals are not ours
            installed = False
        else:
            installed = True
        if not installed:
            yield
            return
        try:
            with _subflows_leave_sigterm_alone():
                yield
        finally:
            for sig in previous:
                loop.remove_signal_handler(sig)
            run_ended()
            # A plain handler, not the loop's: the loop resets its own when it closes
            # (SIGTERM to the default action, which killed the command without a word).
            for sig in previous:
                signal.signal(sig, functools.partial(_late, previous))


def _late(previous: dict, signum: int, _frame) -> None:
    """A signal while the run records its end: the first is let pass, the next puts the
    handlers found before (Prefect's, the command's) back and is sent to them."""
    if let_one_pass():
        return
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    signal.raise_signal(signum)


@contextlib.contextmanager
def _subflows_leave_sigterm_alone() -> Iterator[None]:
    """Prefect's engine puts its own SIGTERM handler back around each subflow run (a group's)
    when it finds another in place: a SIGTERM while a group ran raised ``TerminationSignal``
    there, and the run crashed ("Crash detected!", a traceback, no grace period) instead of
    stopping as it does outside a group. While the run handles SIGTERM itself, a subflow run
    takes no handler (the root flow run's, installed before, is left as it is)."""
    from prefect import flow_engine

    prefects = flow_engine.capture_sigterm
    flow_engine.capture_sigterm = contextlib.nullcontext
    try:
        yield
    finally:
        flow_engine.capture_sigterm = prefects


# The summary is persisted (JSON, in Prefect's result storage) so a caller that started the
# run with ``run_deployment`` reads it from the flow run's state.
async def cancelled_from_outside(interrupt: Interrupt, flow_run) -> bool:
    """Whether the run was cancelled from the UI (or the API): its watch saw it, or, when the
    run is cut off before it could (a worker's SIGTERM for the cancel), its flow run says so
    now. A look with no answer within seconds says no."""
    if interrupt.signal_name == UI_CANCEL:
        return True
    if flow_run is None:
        return False
    from prefect.client.orchestration import get_client

    async def look():
        async with get_client() as client:
            return (await client.read_flow_run(flow_run.id)).state

    try:
        state = await asyncio.wait_for(look(), LAST_LOOK_SECONDS)
    except Exception:
        return False
    return state is not None and (state.is_cancelling() or state.is_cancelled())


# How long a run cut off waits to learn whether it was cancelled.
LAST_LOOK_SECONDS = 3.0


async def watch_for_cancel(
    interrupt: Interrupt,
    on_taken_over: Callable[[], None] | None = None,
    session_id: str | None = None,
) -> None:
    """Turn a cancel of this flow run (the UI's Cancel: state Cancelling) into a stop, and
    so a Prefect server that stopped answering (``stop_for_lost_server``), and a takeover:
    the flow run ended ``Crashed`` while this run still runs it. This run never sets that
    state itself while the watch runs (its flow run is Running, or Paused while it waits for
    an answer; Prefect records its end after the flow returns, once the watch is over), so
    someone else did: a resume of the session with ``--repo`` on another machine, which took
    the session over (abandoned_runs.py; ``interrupt.taken_over`` says so), or anyone else
    (the run stops as at a cancel, resumable). ``on_taken_over`` is called at a takeover,
    before the stop (the run drops its remote: the session's pushes are the resume's now).
    With ``session_id``, a Cancel of any flow run of the session stops it too."""
    from prefect.client.orchestration import get_client

    flow_run = getattr(get_run_context(), "flow_run", None)
    if flow_run is None:
        return
    since = datetime.now(UTC)  # an earlier run's subflow left Cancelling is none of this one's
    async with get_client() as client:
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            look = _look(client, flow_run, session_id, since)
            try:
                state, sub_cancelled = await asyncio.wait_for(look, LOOK_TIMEOUT_SECONDS)
            except Exception as exc:  # a missed look is retried at the next one...
                if await stop_for_lost_server(interrupt, exc):  # ...unless the server is gone
                    return
                continue
            cancelled = state is not None and (state.is_cancelling() or state.is_cancelled())
            if cancelled or sub_cancelled:
                interrupt.request_cancel(UI_CANCEL)
                return
            if state is not None and state.is_crashed():
                from aca_flows.flows.abandoned_runs import taken_over_reason

                interrupt.flow_run_crashed = True
                interrupt.taken_over = taken_over_reason(state.message)
                if interrupt.taken_over is None:  # not by a resume: stopped as by a cancel
                    interrupt.request_cancel(crashed_from_outside(state.message))
                    return
                if on_taken_over is not None:
                    on_taken_over()
                interrupt.request_cancel(interrupt.taken_over)
                return


async def _look(client, flow_run, session_id: str | None, since: datetime):
    """The flow run's state, and whether a Cancel was given on another flow run of its
    session (the plan's subflow run a deployment run makes, a group's: the UI offers Cancel
    on each, and it was ignored while the work went on and was paid for)."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    state = (await client.read_flow_run(flow_run.id)).state
    if session_id is None:
        return state, False
    # Cancelling only: the run's own end sets its subflow runs Cancelled when it stops.
    others = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(not_any_=[flow_run.id]),
            start_time=FlowRunFilterStartTime(after_=since),
            tags=FlowRunFilterTags(all_=[f"session:{session_id}"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING])),
        ),
        limit=1,
    )
    return state, bool(others)


def crashed_from_outside(message: str | None) -> str:
    """What stopped a run whose flow run someone else ended ``Crashed`` (not a resume)."""
    why = f": {message.strip()}" if message and message.strip() else ""
    return f"its flow run set Crashed from outside{why}"


async def stop_for_lost_server(interrupt: Interrupt, exc: BaseException) -> bool:
    """When ``exc`` failed because the Prefect server is gone, stop the run now, as a cancel
    from the UI does (running tasks stay unfinished; ``aca resume`` runs them); ``True``
    then."""
    from prefect.settings import PREFECT_API_URL

    from aca_flows._threads import in_thread
    from aca_flows.flows.lost_server import give_up_on_server, lost_server

    if not await in_thread(lost_server, exc):
        return False
    give_up_on_server()
    interrupt.server_lost = True
    interrupt.request_cancel(f"the loss of the Prefect server at {PREFECT_API_URL.value()}")
    return True


# How long a stopped run's end waits for the server to show its task runs ended: it records
# them from their events in batches a second apart (local_servers.RECORDER_FLUSH_SECONDS), and
# later under load.
RECORDED_WAIT_SECONDS = 5.0
RECORDED_POLL_SECONDS = 0.2


async def task_runs_recorded_ended() -> None:
    """Wait until the server shows every task run of this flow run ended (at most
    ``RECORDED_WAIT_SECONDS``; not at all for a server that is gone or cannot say).

    Before a stopped run's flow run ends Cancelled: the server cancels the task runs of a
    cancelled flow run that it still shows unfinished, with its own message ("The parent flow
    run was cancelled."), and keeps that state over the one the task run ended in
    ("Interrupted", "Stopped"), which it records later with an earlier time. Every task run
    of the flow has ended by now: this waits for the server to have recorded it. (A task run
    an earlier attempt of a flow run retried by Prefect left unfinished costs the whole wait.)"""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import TERMINAL_STATES, StateType

    from aca_flows.flows.lost_server import server_given_up

    if server_given_up():
        return
    unfinished = TaskRunFilter(
        state=TaskRunFilterState(
            type=TaskRunFilterStateType(any_=[t for t in StateType if t not in TERMINAL_STATES])
        )
    )
    of_this_run = FlowRunFilter(id=FlowRunFilterId(any_=[get_run_context().flow_run.id]))
    with contextlib.suppress(Exception):  # a server that cannot say: the end goes on
        async with asyncio.timeout(RECORDED_WAIT_SECONDS), get_client() as client:
            while await client.read_task_runs(
                flow_run_filter=of_this_run, task_run_filter=unfinished, limit=1
            ):
                await asyncio.sleep(RECORDED_POLL_SECONDS)
