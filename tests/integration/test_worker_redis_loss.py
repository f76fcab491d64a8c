"""The worker survives losing Redis: a poll that cannot reach it is logged and retried, where
arq's own worker would exit (abandoning the jobs it runs)."""

from __future__ import annotations

import pytest
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker
from redis.exceptions import ConnectionError as RedisConnectionError

from devpush.workers.jobs import ResilientWorker, cleanup_all
from tests.conftest import free_port


async def test_a_poll_without_redis_is_retried_not_fatal() -> None:
    port = free_port()  # nothing listens there: Redis is down
    worker = ResilientWorker(
        functions=[cleanup_all],
        redis_settings=RedisSettings(host="127.0.0.1", port=port),
        handle_signals=False,
    )
    worker._pool = ArqRedis(host="127.0.0.1", port=port)
    try:
        with pytest.raises(RedisConnectionError):
            await Worker._poll_iteration(worker)  # arq's own poll: fatal to the worker
        await worker._poll_iteration()  # ours: logged, waited, and the worker goes on
    finally:
        await worker._pool.aclose()
