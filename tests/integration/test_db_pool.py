"""The app's pool tests a connection only when it sat idle (db.ping_when_idle): one handed
back a moment ago goes out untested, and one cut while idle is found and replaced before any
query of the request fails on it. A session that only reads (db.reads_only) runs without a
transaction and hands its connection back as it found it."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import make_engine, make_sessionmaker, reads_only
from devpush.settings import Settings


async def test_only_idle_connections_are_tested_and_a_dead_one_is_replaced(
    settings: Settings,
) -> None:
    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=1, ping_idle_after=0.5)
    dialect = engine.sync_engine.dialect
    pings: list[Any] = []
    real_ping = dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return real_ping(dbapi_connection)

    dialect.do_ping = counted  # type: ignore[method-assign]
    admin = make_engine(settings.database_url, pool_size=1)
    try:
        for _ in range(5):  # back-to-back requests: no test of the connection
            async with engine.connect() as conn:
                pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        assert pings == []
        await asyncio.sleep(0.6)
        async with engine.connect() as conn:  # idle: tested, and alive
            assert await conn.scalar(text("SELECT pg_backend_pid()")) == pid
        assert len(pings) == 1

        async with admin.connect() as conn:  # cut while idle (a restart, a dropped link)
            assert await conn.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.6)
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid
        assert len(pings) == 2
    finally:
        await admin.dispose()
        await engine.dispose()


async def _in_a_transaction(session: AsyncSession) -> bool:
    """Whether the session's statements share a transaction, as PostgreSQL sees it: now() is
    the transaction's start, the same for two statements a moment apart in one transaction."""
    first = await session.scalar(text("SELECT now()"))
    await asyncio.sleep(0.02)
    return bool(first == await session.scalar(text("SELECT now()")))


async def test_a_session_that_only_reads_runs_outside_a_transaction_and_leaves_the_pool_clean(
    settings: Settings,
) -> None:
    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=1, ping_idle_after=5)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:  # the default: one transaction per request
            assert await _in_a_transaction(session)
            pid = await session.scalar(text("SELECT pg_backend_pid()"))
        async with sessions() as session:
            await reads_only(session)
            assert not await _in_a_transaction(session)
            assert await session.scalar(text("SELECT pg_backend_pid()")) == pid
            await session.commit()
        async with sessions() as session:  # the same connection, transactional again
            assert await session.scalar(text("SELECT pg_backend_pid()")) == pid
            assert await _in_a_transaction(session)
    finally:
        await engine.dispose()


async def test_reads_only_keeps_a_transaction_already_begun(settings: Settings) -> None:
    """A request whose token was read or touched first keeps that transaction (and no
    warning is raised for options that could no longer apply)."""
    assert settings.database_url
    engine = make_engine(settings.database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:
            await session.execute(text("SELECT 1"))
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                await reads_only(session)
            assert await _in_a_transaction(session)
    finally:
        await engine.dispose()
