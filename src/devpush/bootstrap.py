"""Building a process's Platform: every models module registered (and the deployment-events
hook with them), the database, Redis, runtimes and log store opened, and the integrations that
the low layers reach only through the Platform plugged in."""

from __future__ import annotations

from arq import create_pool

from devpush.db import make_engine, make_sessionmaker
from devpush.github.service import installation_token
from devpush.logs.store import open_log_store
from devpush.models import all_models
from devpush.platform import JOB_SERIALIZERS, SESSION_REDIS, Platform, arq_redis_settings
from devpush.runstate import database_url
from devpush.runtime import Runtimes
from devpush.settings import Settings


async def build_platform(
    settings: Settings, *, pool_size: int = 5, ping_idle_after: float | None = None
) -> Platform:
    all_models()
    engine = make_engine(
        database_url(settings), pool_size=pool_size, ping_idle_after=ping_idle_after
    )
    redis = await create_pool(arq_redis_settings(settings), **JOB_SERIALIZERS)
    return Platform(
        settings=settings,
        engine=engine,
        sessions=make_sessionmaker(engine, info={SESSION_REDIS: redis}),
        redis=redis,
        runtimes=Runtimes(settings),
        log_store=open_log_store(settings),
        installation_token=installation_token,
    )
