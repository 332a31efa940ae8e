"""A run whose Prefect server stopped answering: how it is told, and what it stops.

``lost_server(exc)`` says whether an error came from a server that is gone (its chain holds a
connection error, a 5xx or a timeout, and the server fails its health check now). The run then
``give_up_on_server()``: Prefect's clients stop retrying, logs stop going there, and the
terminal gets none of Prefect's echoes of it. ``run_lost_server`` makes the ``ServerLost``
that ends the run: an interrupt (exit 130) that resumes once the server is back, or, when the
session had ended already, the session's own end.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from aca_flows.errors import AcaError
from aca_flows.flows.local_servers import healthy

if TYPE_CHECKING:
    from aca_flows.flows.summary import RunSummary

__all__ = [
    "ServerLost",
    "give_up_on_server",
    "lost_run",
    "lost_server",
    "run_lost_server",
    "server_given_up",
    "watch_for_a_lost_server",
]


class ServerLost(AcaError):
    """The Prefect server stopped answering in the middle of a run. Nothing failed: the run
    stopped as an interrupt does (exit 130), its finished work kept, and resumes once the
    server is back. A run whose session had already ended when the server went carries that
    end (``summary``): its outcome is the session's, only the flow run's final state is lost."""

    exit_code = 130

    def __init__(
        self,
        url: str,
        session_id: str,
        status: str = "interrupted",
        summary: RunSummary | None = None,
        resume: str | None = None,
    ):
        if summary is not None:
            message = (
                f"the Prefect server at {url} stopped answering after session {session_id} "
                f"ended ({summary.status}): its flow run's final state could not be recorded "
                "there; the session's record (.aca) holds the run's outcome."
            )
        else:
            # A run whose tasks all ended before its last reports failed keeps its status.
            message = (
                f"the Prefect server at {url} stopped answering, so the run stopped; session "
                f"{session_id} is {status} and its finished work kept. Start the server again "
                f"(`aca server start`, or the one PREFECT_API_URL names), then run "
                f"`{resume or f'aca resume {session_id}'}`."
            )
        super().__init__(message)
        self.url = url
        self.session_id = session_id
        self.summary = summary


# The run of this process that lost its server (its error), for ``_unreachable``: what the
# flow engine raises after the run ends is a connection error that no longer names it.
_LOST: list[ServerLost] = []
# Set once the run stopped for a lost server: a call cut short then fails as it may (an
# in-flight retry of Prefect's client ends with an AssertionError), for the same reason.
_GIVEN_UP: list[bool] = []


def lost_server(exc: BaseException) -> bool:
    """Whether ``exc`` failed because the Prefect server is gone: a connection error, a 5xx
    answer (after Prefect's retries) or a timeout in its chain, and the server does not
    answer its health check now. Blocks for at most two seconds (the health check)."""
    from prefect.settings import PREFECT_API_URL

    if _GIVEN_UP:
        return True
    url = PREFECT_API_URL.value()
    return bool(url) and _server_error_in(exc) and not healthy(url, timeout=2.0)


def _server_error_in(exc: BaseException | None) -> bool:
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, httpx.TransportError | TimeoutError):
            return True
        if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code >= 500:
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def server_given_up() -> bool:
    """Whether this run stopped for a lost server (``give_up_on_server``)."""
    return bool(_GIVEN_UP)


def give_up_on_server() -> None:
    """From now on this process's Prefect clients fail at once instead of retrying each call
    for a minute (Prefect retries a refused connection 5 times, 2 s to 32 s apart): the
    run's last reports and its flow run's final state cannot reach a server that is gone.
    Its logs are no longer sent there, and the terminal gets no traceback of a call that
    failed for it (Prefect logs some with one, such as a concurrency slot it could not
    give back)."""
    from prefect.settings import get_current_settings

    _GIVEN_UP[:] = [True]
    _drop_queued_events()
    # In place, on purpose: every task and thread of the run (and the flow engine, which sets
    # the final state outside the flow) reads Prefect's settings through its own copy of the
    # context, so a temporary_settings entered here would reach this caller only. Under
    # prefect_api_for_run the object is the run's own copy, dropped when the run ends.
    settings = get_current_settings()
    settings.client.max_retries = 0
    settings.logging.to_api.enabled = False
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    for logger in [logging.getLogger(), *loggers]:
        for handler in getattr(logger, "handlers", []):
            # The terminal's: Prefect's console, and its internal loggers' stream (workers).
            if type(handler).__name__ in ("PrefectConsoleHandler", "_SafeStreamHandler"):
                handler.addFilter(_no_traceback_of_server_errors)


def _drop_queued_events() -> None:
    """The events still queued for a server that is gone are dropped, not sent: each tried
    to connect ten times, 7 s, while the run waited to exit ("Still processing items"). A
    resume sends aca's own events of the session again (``flows/events.py``)."""
    from prefect.events.worker import EventsWorker

    async def dropped(event) -> None:
        return None

    for worker in list(getattr(EventsWorker, "_instances", {}).values()):
        if isinstance(worker, EventsWorker):
            worker._handle = dropped  # type: ignore[method-assign]


def _no_traceback_of_server_errors(record) -> bool:
    """What the terminal shows of a run whose server is gone: aca's one line says it all,
    so Prefect's echoes of it (the run's end as an exception, a final state it could not
    set, events it could not send) are not shown, and no record carries a traceback."""
    error = record.exc_info[1] if record.exc_info else None
    if isinstance(error, ServerLost) or _echoes_a_lost_server(record):
        return False
    if error is not None and _server_error_in(error):
        record.exc_info = record.exc_text = None
    return True


def _echoes_a_lost_server(record) -> bool:
    message = record.getMessage()
    return (
        record.name == "prefect.events.clients"
        or (record.name == "prefect._internal.concurrency" and "failed to process" in message)
        or message == "Finished in state Running()"  # its final state never reached it
        # The run's end as an exception (the redacting filter has formatted it by now).
        or message.startswith("Encountered exception during execution: ServerLost(")
    )


def run_lost_server(
    session_id: str,
    status: str = "interrupted",
    summary: RunSummary | None = None,
    resume: str | None = None,
) -> ServerLost:
    """The error that ends the run of ``session_id``, whose server is gone (``summary``: the
    session's end, when it ended before; ``resume``: the command that continues it);
    remembered for ``_unreachable``."""
    from prefect.settings import PREFECT_API_URL

    give_up_on_server()
    _LOST[:] = [ServerLost(PREFECT_API_URL.value(), session_id, status, summary, resume)]
    return _LOST[0]


def quiet_failed_log_batches() -> None:
    """Prefect's log worker writes a batch it could not send to stderr as "--- Error logging
    to API ---" and the error, with no newline after it: glued to the next line on the
    terminal, aca's own line about the server included. A server that does not answer is
    told by aca, once; any other failure keeps Prefect's words, on lines of their own."""
    import httpx
    from prefect.logging.handlers import APILogWorker

    if getattr(APILogWorker._handle_batch, "_aca_quiet", False):
        return

    async def handle_batch(self, items: list[bytes]) -> None:
        try:
            await self._client.request(
                "POST",
                "/logs/",
                content=b"[" + b",".join(items) + b"]",
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError:
            pass
        except Exception as exc:
            if sys.stderr:
                sys.stderr.write(f"--- Error logging to API ---\n{exc}\n")

    handle_batch._aca_quiet = True  # type: ignore[attr-defined]
    APILogWorker._handle_batch = handle_batch  # type: ignore[method-assign]


class _EventNamed(logging.Filter):
    """Prefect's "Service 'EventsWorker' failed to process item Event(...)" wrote the whole
    event, about 2,000 characters, on the terminal when its server was unreachable; its
    name says which one it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        failed_item = record.msg == _FAILED_ITEM and isinstance(args, tuple) and len(args) == 2
        if failed_item and isinstance(event := getattr(args[1], "event", None), str):
            record.msg, record.args = "Service %r failed to send the event %r", (args[0], event)
        return True


_FAILED_ITEM = "Service %r failed to process item %r"


def _name_events_not_dump_them() -> None:
    logger = logging.getLogger("prefect._internal.concurrency")
    if not any(isinstance(f, _EventNamed) for f in logger.filters):
        logger.addFilter(_EventNamed())


def watch_for_a_lost_server() -> None:
    """A run starts with its server answering (as far as anyone knows here)."""
    quiet_failed_log_batches()
    _name_events_not_dump_them()
    _LOST.clear()
    _GIVEN_UP.clear()


def lost_run() -> ServerLost | None:
    """The error of this process's run that lost its server, if one did."""
    return _LOST[0] if _LOST else None
