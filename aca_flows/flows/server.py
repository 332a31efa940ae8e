"""The Prefect server a run or command talks to: the one ``PREFECT_API_URL`` names, aca's
local server, or a temporary server that lives exactly as long as the run
(``local_servers.py`` starts and stops those two). Runs on aca's local server start in about a
second and can be watched in its UI. A server that does not answer, refuses aca's requests or
is no Prefect API ends the command with a message naming the fix, not a traceback.

Nothing here imports prefect at module level: ``aca server status`` stays instant.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from aca_flows.errors import InputError
from aca_flows.flows.local_servers import (
    LocalServer,
    ServerError,
    ServerState,
    healthy,
    temporary_server,
)

__all__ = [
    "HINT",
    "prefect_api_for_command",
    "prefect_api_for_run",
    "require_given_server",
    "runs_on_a_temporary_server",
    "runs_on_acas_server",
]

HINT = (
    "aca: no Prefect server is running, so this run starts a temporary one (about 10 s; the "
    "first time longer, while it creates its database). "
    "`aca server start` keeps one up: runs start at once and show in its UI."
)


@contextlib.contextmanager
def prefect_api_for_run(*, announce=print) -> Iterator[str]:
    """Within the block, Prefect clients talk to the server this run should use: the one
    ``PREFECT_API_URL`` names, else aca's local server, else a temporary server started here
    and stopped (with everything it started) when the block ends."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from aca_flows.flows.lost_server import watch_for_a_lost_server

    given = PREFECT_API_URL.value()
    local = LocalServer()
    local_url = local.api_url()
    url = given or local_url
    watch_for_a_lost_server()
    if url:
        with (
            temporary_settings(updates=_client_settings(url)),
            _unreachable(url, given),
            _acas_server(url == local_url),
        ):
            yield url
        return
    announce(_hung_hint(hung) if (hung := local.state()) else HINT)
    with (
        temporary_server() as url,
        temporary_settings(updates=_client_settings(url)),
        _acas_server(True, temporary=True),
    ):
        yield url


_ON_ACAS_SERVER = False
_ON_TEMPORARY_SERVER = False


def runs_on_acas_server() -> bool:
    """Whether this process's run talks to a server aca started (local or temporary), whose
    SQLite writes wait for the lock (``server_app.py``) instead of failing with "database
    is locked" when two come together. A deployed run's server may be any."""
    return _ON_ACAS_SERVER


def runs_on_a_temporary_server() -> bool:
    """Whether this process's run talks to a temporary server, gone with the run: a link to
    one of its pages (in a pull request) would lead nowhere."""
    return _ON_TEMPORARY_SERVER


@contextlib.contextmanager
def _acas_server(is_acas: bool, *, temporary: bool = False) -> Iterator[None]:
    global _ON_ACAS_SERVER, _ON_TEMPORARY_SERVER
    _ON_ACAS_SERVER, _ON_TEMPORARY_SERVER = is_acas, temporary
    try:
        yield
    finally:
        _ON_ACAS_SERVER = _ON_TEMPORARY_SERVER = False


def _hung_hint(state: ServerState) -> str:
    """``HINT`` for a local server that runs but does not answer: "no server is running" was
    untrue, and the run missing from its UI unexplained."""
    return (
        f"aca: aca's local Prefect server (pid {state.pid}) does not answer at {state.url} "
        f"(its log: {state.log}), so this run starts a temporary one and will not show in its "
        "UI. `aca server stop`, then `aca server start`, starts it again."
    )


def require_given_server() -> None:
    """Refuse (exit 2) a run whose ``PREFECT_API_URL`` names a server that does not answer,
    before the run changes anything (``--init-git``)."""
    from prefect.settings import PREFECT_API_URL

    given = PREFECT_API_URL.value()
    if given and not healthy(given, timeout=5.0):
        raise InputError(_not_answering(given, "no answer to /health"))


def _not_answering(url: str, cause: object) -> str:
    return (
        f"the Prefect server at {url} (PREFECT_API_URL) does not answer ({cause}); start it, "
        "or unset PREFECT_API_URL so that aca uses its local server or a temporary one."
    )


def _refused(url: str, answer: BaseException | None) -> str | None:
    """Why the server ``PREFECT_API_URL`` names answered aca's requests without serving them,
    when that is the user's to fix: no credentials, or a URL that is not a Prefect API."""
    import httpx

    if not isinstance(answer, httpx.HTTPStatusError):
        return None
    status, path = answer.response.status_code, answer.request.url.path
    if status in (401, 403):
        return (
            f"the Prefect server at {url} (PREFECT_API_URL) refused aca's requests (HTTP "
            f"{status}): set PREFECT_API_AUTH_STRING to its `user:password` (a server started "
            "with PREFECT_SERVER_API_AUTH_STRING), or PREFECT_API_KEY for Prefect Cloud."
        )
    # A run's client asks for the version first; a command's first request is its own, which
    # a web server that is no Prefect API refuses as a method it does not serve.
    if (status == 404 and path.endswith("/admin/version")) or status in (405, 501):
        api = url.rstrip("/")
        fix = f"name its API, {api}/api" if not api.endswith("/api") else "name a Prefect API"
        return (
            f"{url} (PREFECT_API_URL) is not a Prefect server's API (HTTP {status} for {path}): "
            f"set PREFECT_API_URL to {fix}, or unset it so that aca uses its local server or "
            "a temporary one."
        )
    return None


@contextlib.contextmanager
def _unreachable(url: str, given: str | None) -> Iterator[None]:
    """A server that does not answer ends the command with a message, not a traceback: the
    one ``PREFECT_API_URL`` names is the user's to fix (exit 2)."""
    import httpx

    from aca_flows.flows.lost_server import lost_run

    try:
        yield
    except (RuntimeError, httpx.TransportError, httpx.HTTPStatusError) as exc:
        if lost_run() is not None:  # lost in the middle of a run: the session says how it ended
            raise lost_run() from None
        cause = exc if isinstance(exc, httpx.HTTPError) else exc.__cause__
        if given and "incompatible versions" in str(exc):  # the client's check, first thing
            import prefect

            raise InputError(
                f"the Prefect server at {url} (PREFECT_API_URL) is of another version ({exc}): "
                f"point PREFECT_API_URL at a Prefect {prefect.__version__.split('.')[0]} "
                "server, or unset it so that aca uses its local server or a temporary one."
            ) from None
        refusal = _refused(url, cause) if given else None
        if refusal:
            raise InputError(refusal) from None
        if not isinstance(cause, httpx.TransportError):
            raise
        if given:
            raise InputError(_not_answering(url, cause)) from None
        raise ServerError(
            f"aca's local Prefect server at {url} stopped answering ({cause}); "
            "`aca server start` starts it again, and `aca resume` continues the session."
        ) from None


@contextlib.contextmanager
def prefect_api_for_command(purpose: str) -> Iterator[str]:
    """Within the block, Prefect clients talk to the server ``PREFECT_API_URL`` names, else
    aca's local server; a command that changes a server (``purpose``) never starts one."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = PREFECT_API_URL.value() or LocalServer().api_url()
    if not url:
        raise InputError(
            f"no Prefect server to {purpose}: set PREFECT_API_URL to the server your runs and "
            "workers use, or start aca's local one with `aca server start`."
        )
    import httpx

    with temporary_settings(updates=_client_settings(url)):
        try:
            yield url
        except httpx.HTTPError as exc:
            if refusal := _refused(url, exc):
                raise InputError(refusal) from None
            raise ServerError(
                f"the Prefect server at {url} did not answer ({exc}); check that it runs and "
                "that PREFECT_API_URL names it."
            ) from None


def _client_settings(url: str) -> dict:
    """Prefect's settings for clients of the server at ``url``.

    Each of Prefect's API clients loads a CA bundle (about 50 ms of CPU on a 2-core machine),
    and a run opens seven before its first task: about a quarter of a warm run's start-up.
    A plain-HTTP server on this machine (aca's local or temporary server) has no certificate
    to check, so its clients get a file of one certificate instead, whose key was thrown
    away: were TLS ever attempted with it, verification would fail, never pass.
    """
    from urllib.parse import urlsplit

    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL

    updates = {PREFECT_API_URL: url}
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        updates[PREFECT_API_SSL_CERT_FILE] = str(_PLAIN_HTTP_CA)
    return updates


_PLAIN_HTTP_CA = Path(__file__).with_name("plain_http_ca.pem")
