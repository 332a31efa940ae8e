"""The Prefect server as aca starts it: on SQLite, a transaction that reads and then writes
waits for another writer's commit instead of failing with "database is locked" (which the
server answers with a 503 that Prefect's client retries two seconds later)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from prefect.server.database.configurations import AioSqliteConfiguration

from aca_flows.flows import server_app


async def _read_then_write_while_another_commits(url: str) -> list[str]:
    """Transaction A reads; meanwhile B writes and commits; then A writes. Returns the rows."""
    config = AioSqliteConfiguration(connection_url=url)
    engine = await config.engine()
    async with engine.begin() as connection:
        await connection.execute(sa.text("CREATE TABLE IF NOT EXISTS t (v TEXT)"))
    a_has_read = asyncio.Event()

    async def a() -> None:
        session = await config.session(engine)
        async with session, config.begin_transaction(session):
            await session.execute(sa.text("SELECT count(*) FROM t"))
            a_has_read.set()
            await asyncio.sleep(0.3)  # B's commit lands here, unless B has to wait for A
            await session.execute(sa.text("INSERT INTO t VALUES ('a')"))

    async def b() -> None:
        await a_has_read.wait()
        session = await config.session(engine)
        async with session, config.begin_transaction(session):
            await session.execute(sa.text("INSERT INTO t VALUES ('b')"))

    try:
        await asyncio.gather(a(), b())
        async with engine.connect() as connection:
            rows = await connection.execute(sa.text("SELECT v FROM t ORDER BY v"))
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


def test_prefects_own_transactions_fail_when_a_commit_lands_between_read_and_write(tmp_path):
    # What the module is for: without it, A's write fails at once.
    url = f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"
    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        asyncio.run(_read_then_write_while_another_commits(url))


def test_with_aca_server_app_the_write_waits_for_the_lock_and_both_land(tmp_path, monkeypatch):
    # monkeypatch restores Prefect's method when the test ends.
    original = AioSqliteConfiguration.begin_transaction
    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", original)
    server_app.install()
    server_app.install()  # twice is once
    url = f"sqlite+aiosqlite:///{tmp_path / 'immediate.db'}"
    assert asyncio.run(_read_then_write_while_another_commits(url)) == ["a", "b"]
