"""The services one process needs (settings, database, Redis, runtimes, log store), built once
at start (bootstrap.py) by the app's lifespan, the worker's on_startup or the monitor, and
handed on explicitly. It sits below every domain: what a domain adds (a GitHub App's tokens)
is plugged in by bootstrap as a plain callable."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from arq.connections import ArqRedis, RedisSettings
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from devpush.logs.store import LogStore
from devpush.runstate import redis_url
from devpush.runtime import Runtimes
from devpush.settings import Settings


class InstallationTokens(Protocol):
    """A GitHub App installation's access token (github/service.py)."""

    async def __call__(self, *, p: Platform, installation_id: int) -> str: ...


# Session.info of the platform's sessions: its Redis, for hooks run after a commit (db.py).
SESSION_REDIS = "devpush.redis"


@dataclass
class Platform:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    runtimes: Runtimes
    log_store: LogStore
    # A GitHub App installation's access token, for fetching code (github/service.py); None
    # where no GitHub App is wired in.
    installation_token: InstallationTokens | None = None

    async def warm(self, connections: int) -> None:
        """Open `connections` to PostgreSQL and as many to Redis now, and keep them pooled.

        A new connection resolves its host's name first, and Podman's DNS server (aardvark-dns)
        can stall for seconds while containers join or leave its networks, as they do during
        `devpush update`. Connected beforehand, a handful of concurrent requests (a healthcheck
        next to a user's request) reuse these instead of waiting on that lookup."""
        async with contextlib.AsyncExitStack() as held:
            for _ in range(connections):
                await held.enter_async_context(self.engine.connect())
        pool = self.redis.connection_pool
        redis = [await pool.get_connection() for _ in range(connections)]
        for connection in redis:
            await pool.release(connection)

    async def close(self) -> None:
        await self.runtimes.close()
        await self.redis.aclose()
        await self.engine.dispose()


def arq_redis_settings(settings: Settings) -> RedisSettings:
    rs = RedisSettings.from_dsn(redis_url(settings))
    rs.conn_timeout = 2
    # Up to ~30 s of attempts (each says "retries remaining"), so that a process starting while
    # Redis restarts, or while Podman's DNS server stalls after containers were recreated (as
    # right after `devpush update`), waits it out: a push's hook, a worker, the CLI.
    rs.conn_retries = 10
    return rs


def serialize_job(value: dict[str, Any]) -> bytes:
    """arq's jobs and results as JSON, never pickle: whoever can write to Redis can queue a
    job, but not run code in the worker by unpickling it. Job arguments are ids (strings);
    a result that JSON can't hold is stored as its text."""
    return json.dumps(value, default=str, separators=(",", ":")).encode()


def deserialize_job(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("a job is a JSON object")
    return value


JOB_SERIALIZERS: dict[str, Any] = {
    "job_serializer": serialize_job,
    "job_deserializer": deserialize_job,
}
