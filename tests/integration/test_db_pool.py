"""The app's pool tests a connection only when it sat idle (db.ping_when_idle): one handed
back a moment ago goes out untested, and one cut while idle is found and replaced before any
query of the request fails on it."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from devpush.db import make_engine
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
