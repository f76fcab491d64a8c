"""Database plumbing: the declarative base, engine and session factories.

Nothing connects at import time; the app lifespan and the worker's startup build engines.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def new_id() -> str:
    """A 20-char lowercase id; its first 7 chars name deployment aliases."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(20))


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(
    url: str, *, pool_size: int = 5, ping_idle_after: float | None = None
) -> AsyncEngine:
    """A pooled engine whose connections are tested before use: every time (SQLAlchemy's
    pre-ping), or with `ping_idle_after` only those idle that many seconds (`ping_when_idle`)."""
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=10,
        pool_pre_ping=ping_idle_after is None,
    )
    if ping_idle_after is not None:
        ping_when_idle(engine, ping_idle_after)
    return engine


def ping_when_idle(engine: AsyncEngine, seconds: float) -> None:
    """Test a pooled connection before use only when it sat idle `seconds` or more.

    SQLAlchemy's pre-ping costs asyncpg three round trips (BEGIN, an empty query, ROLLBACK)
    on every checkout, as many as a busy API request's own queries. A connection handed back
    a moment ago was working a moment ago; one that sat idle may have been cut (a PostgreSQL
    restart, a dropped network), and is tested as pre-ping would. A failed test invalidates
    the pool, as pre-ping does, and the checkout gets a new connection."""
    sync = engine.sync_engine

    @event.listens_for(sync, "checkin")
    def _checked_in(_dbapi: Any, record: Any) -> None:
        record.info[_RETURNED] = time.monotonic()

    @event.listens_for(sync, "checkout")
    def _checked_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED)  # None: a new connection, nothing to test
        if returned is None or time.monotonic() - returned < seconds:
            return
        try:
            sync.dialect.do_ping(dbapi)
        except Exception as error:  # whatever failed, this connection can't be trusted
            raise exc.InvalidatePoolError(f"an idle connection failed its ping: {error}") from error


async def reads_only(session: AsyncSession) -> None:
    """From here on, run the session's statements each on its own, outside a transaction
    (autocommit): a request that only reads saves the BEGIN and COMMIT round trips, and
    under READ COMMITTED each statement reads its own snapshot either way. A session already
    in a transaction (a token read or touched on this request) stays in it, just as correct."""
    if not session.in_transaction():
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


_RETURNED = "devpush_returned_at"  # a connection record's info: when it was last checked in


def make_sessionmaker(
    engine: AsyncEngine, *, info: dict[str, Any] | None = None
) -> async_sessionmaker[AsyncSession]:
    """Sessions on `engine`; each starts with a copy of `info` in its `Session.info`."""
    return async_sessionmaker(engine, expire_on_commit=False, info=info)


# Session.info: async callables, each run once the session's transaction has committed, by
# session_scope and by the request's session (api/deps.py). auth/token_cache.py adds one.
AFTER_COMMIT = "devpush.after_commit"
AfterCommit = Callable[[dict[str, Any]], Awaitable[None]]


def after_commit(info: dict[str, Any], hook: AfterCommit) -> None:
    """Have `hook(info)` run once the transaction of the session owning `info` commits."""
    hooks = info.setdefault(AFTER_COMMIT, [])
    if hook not in hooks:
        hooks.append(hook)


async def committed(session: AsyncSession) -> None:
    """Run, and forget, the after-commit hooks of a session whose transaction has ended."""
    for hook in session.info.pop(AFTER_COMMIT, []):
        await hook(session.info)


@asynccontextmanager
async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits on success (then runs its after-commit hooks) and
    rolls back on error."""
    async with factory() as session:
        async with session.begin():
            yield session
        await committed(session)
