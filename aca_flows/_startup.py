"""Start-up of a run: fewer garbage collections while aca's heavy dependencies load, and a
Ctrl-C (or SIGTERM) that comes before the flow handles its signals is never lost.

Importing Prefect and a vendor SDK creates hundreds of thousands of objects that all live to
the end of the process; the collector, run every 700 new objects, walks them again and again
for nothing (about a fifth of the import time). ``collect_less`` raises that threshold for
the start-up; ``collect_as_usual`` puts back what was there once the SDKs are in, and moves
what start-up made out of the collector's reach (``gc.freeze``): a full collection during the
run walked all of it, 270 ms at a time (one in every 30 tasks of ``bench/engine_speed.py``).

``signals_remembered`` makes SIGINT and SIGTERM end the command (``KeyboardInterrupt``) until
the flow takes them over, and remembers that one came: a ``KeyboardInterrupt`` raised where
Python or a library swallows it (a finalizer such as GitPython's ``Repo.__del__`` run by the
garbage collector: "Exception ignored in ..."; a callback; a cancelled start-up task) would
otherwise be lost, and the run went on to its end with exit 0. ``stop_if_signalled`` raises
it again where aca looks (before the session is made, before the flow starts), and the flow
takes the signal over with ``take_signal`` once its own handlers are in.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "collect_as_usual",
    "collect_less",
    "ended_runs_hold_their_signals",
    "interrupts_from_the_start",
    "let_one_pass",
    "run_ended",
    "signals_remembered",
    "stop_if_signalled",
    "take_signal",
]

_STARTUP_THRESHOLD = 100_000
_saved: tuple[int, int, int] | None = None
_frozen = False
_lock = threading.Lock()


def collect_less() -> None:
    """Collect garbage rarely until ``collect_as_usual`` (the CLI calls it before a run)."""
    global _saved
    with _lock:
        if _saved is None:
            _saved = gc.get_threshold()
            gc.set_threshold(_STARTUP_THRESHOLD, *_saved[1:])


def collect_as_usual() -> None:
    """The thresholds as they were before ``collect_less``, and what start-up made frozen
    (``gc.freeze``) the first time: nothing if ``collect_less`` was not called."""
    global _saved, _frozen
    with _lock:
        if _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None
            # Once: frozen again in a process that runs more than once (the tests, the
            # in-process CLI), an earlier run's garbage would never be collected.
            if not _frozen:
                gc.freeze()
                _frozen = True


INTERRUPT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt_signals() -> list[int]:
    """The signals that stop a run: SIGINT, SIGTERM, and SIGHUP (the terminal or ssh session
    of an unattended run closed, which killed it mid-task) unless it is ignored (``nohup``:
    the user asked the run to outlive its terminal)."""
    return [
        sig
        for sig in INTERRUPT_SIGNALS
        if sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN
    ]


# The first SIGINT/SIGTERM that ``signals_remembered``'s handler saw, until a stop takes it.
_signalled: int | None = None
_depth = 0
# The run has recorded its end (``run_ended``), and whether a signal was let pass since.
_ended = False
_let_passed = False
# A process that is the command (``ended_runs_hold_their_signals``).
_to_the_end = False


def interrupts_from_the_start() -> None:
    """SIGTERM and SIGHUP end the command as a Ctrl-C does (a ``KeyboardInterrupt``: said as
    "interrupted", exit 130, ``--json`` says so too) from its first line, until the run's
    own handlers take over: by default they killed it without a word (143) while it started.
    A signal the command inherited ignored (``nohup``) stays ignored."""
    for sig in interrupt_signals():
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _raise_interrupt)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def ended_runs_hold_their_signals() -> None:
    """This process is the ``aca`` command, and ends with it: once a run has ended, its
    signal handling holds until the process exits, through the summary's print and Prefect's
    last logs and events (a SIGTERM there killed a completed run: 143, or a traceback, or no
    ``--json``), not only while the run's block lasts. (Tests run many commands in one
    process, whose handlers are put back.)"""
    global _to_the_end
    _to_the_end = True


def _after_the_run(signum, frame) -> None:
    # The run has ended and says so; what is left only records it. A second signal stops
    # the command at once, as the first one's line told.
    if not let_one_pass():
        os._exit(128 + signum)


def run_ended() -> None:
    """The run's body has ended: its session has its end, or gets it next (a failure, an
    interrupt). What is left records that end: Prefect the flow run's, a temporary server
    stops, the command prints its summary. A signal then made a completed run Crashed, or an
    exit code contradict its session: the next one is let pass (``let_one_pass``), saying so,
    and one after it stops the command as before."""
    global _ended
    _ended = True


def let_one_pass() -> bool:
    """Whether the signal that came now is let pass: the first one after ``run_ended``."""
    global _let_passed
    if not _ended or _let_passed:
        return False
    _let_passed = True
    # os.write: a print here could interrupt one to the same stream.
    os.write(2, _LET_PASS_SAID.encode())
    return True


_LET_PASS_SAID = (
    "aca: the run has ended and is recording its end; it finishes as its session says "
    "(press Ctrl-C again to stop at once)\n"
)


@contextmanager
def signals_remembered() -> Iterator[None]:
    """SIGINT, SIGTERM or SIGHUP within this block (before the flow takes over its signals:
    while aca looks around, Prefect and its server start) ends the command: a
    ``KeyboardInterrupt``, which the CLI says as "interrupted" (exit 130), and the signal is
    remembered for ``stop_if_signalled`` and ``take_signal``. Python's own SIGINT handler
    would not do: under it, ``asyncio.run`` turns a Ctrl-C into a cancel of its main task,
    which Prefect's start-up can swallow; and SIGTERM would kill the process without a word.
    A ``KeyboardInterrupt`` Python drops (in a finalizer) is not printed as "Exception
    ignored": the signal is remembered, and the run ends as interrupted."""
    global _depth, _signalled, _ended, _let_passed

    def handler(signum, frame):
        global _signalled
        if let_one_pass():
            return
        if _signalled is None:
            _signalled = signum
        raise KeyboardInterrupt

    try:
        previous = {sig: signal.signal(sig, handler) for sig in interrupt_signals()}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    unraisable = sys.unraisablehook

    def remembered_not_printed(info) -> None:
        if not (issubclass(info.exc_type, KeyboardInterrupt) and _signalled is not None):
            unraisable(info)

    sys.unraisablehook = remembered_not_printed
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        sys.unraisablehook = unraisable
        held = _depth == 0 and _to_the_end and _ended
        for sig, earlier in previous.items():
            signal.signal(sig, _after_the_run if held else earlier)
        if _depth == 0 and not held:  # this command is done with them (a test runs several)
            _signalled, _ended, _let_passed = None, False, False


def stop_if_signalled() -> None:
    """Raise the ``KeyboardInterrupt`` of a signal that came and was swallowed on its way."""
    if _signalled is not None:
        raise KeyboardInterrupt


def take_signal() -> int | None:
    """The signal that came before the flow handled its signals (``None`` if none did); the
    flow's interrupt takes it from here on."""
    global _signalled
    signum, _signalled = _signalled, None
    return signum
