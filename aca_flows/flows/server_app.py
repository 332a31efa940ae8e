"""Prefect's server as aca starts it: Prefect's own, except that on SQLite a transaction that
will write takes the write lock when it begins.

Why: Prefect begins most write transactions ``DEFERRED``. In SQLite's WAL mode such a
transaction reads first, and when another connection commits before its first write, the
write fails at once with "database is locked" (SQLITE_BUSY_SNAPSHOT: waiting cannot help, so
SQLite does not wait). The server answers 503 and Prefect's client retries two seconds later.
In a run that starts several task runs at once this happened every few seconds: a task run's
tag concurrency check (``/v2/concurrency_limits/increment-with-lease``) or a flow run's
creation failed, and every task run starting behind it waited the two seconds (Prefect checks
one set of tags at a time). ``BEGIN IMMEDIATE``, as Prefect uses for its own state changes
and as its database module recommends for this case, makes the transaction wait for the lock
(up to SQLite's busy timeout) instead; reads outside transactions are unaffected.

Use: ``python -m aca_flows.flows.server_app server start ...`` in place of
``python -m prefect server start ...``, or ``uvicorn --factory
aca_flows.flows.server_app:create_app`` in place of Prefect's factory.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["create_app", "install"]


def install() -> None:
    """Make every explicit SQLite transaction of this process's Prefect server ``IMMEDIATE``."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    original = AioSqliteConfiguration.begin_transaction
    if getattr(original, "_aca_immediate", False):
        return

    @contextlib.asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncIterator[Any]:
        # Prefect maps with_for_update=True to BEGIN IMMEDIATE on SQLite (and nothing else).
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction._aca_immediate = True  # type: ignore[attr-defined]
    AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]


def create_app() -> Any:
    """Prefect's server app (``prefect.server.api.server:create_app``), with ``install``."""
    install()
    from prefect.server.api.server import create_app as prefect_app

    return prefect_app()


def main() -> None:
    """``prefect`` on the command line (``server start`` and the rest), with ``install``."""
    install()
    from prefect.cli import app

    app()


if __name__ == "__main__":
    main()
