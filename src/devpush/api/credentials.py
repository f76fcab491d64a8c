"""The credentials generation: whether an API token an app process resolved earlier may still
be trusted without asking PostgreSQL again.

Every app process keeps the tokens it resolved recently (auth/token_cache.py), each stamped
with the generation it was read under: a random value in Redis. The API middleware reads the
current one in the same round trip as the rate limit. A transaction that changes a token or a
user (revoked, deleted, its user deleted, made admin or not: auth/token_cache.py marks the
session) publishes a new one once it has committed: a request's before its answer leaves
(api/deps.py), a job's or a command's as its `session_scope` ends. The next request, in any
app process on any machine, finds every stamp stale and reads the token again.

The value is random, not a counter: after Redis lost its data a counter could come back to a
number some process still holds; a fresh random value never matches an old stamp.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devpush.db import after_commit
from devpush.platform import SESSION_REDIS

GENERATION_KEY = "devpush:credentials:generation"
# request.state attribute: the generation the middleware read for this request
STATE = "credentials_generation"

log = logging.getLogger("devpush.credentials")


def fresh() -> str:
    return secrets.token_hex(16)


def mark_changed(info: dict[str, Any]) -> None:
    """Flag a session (its `info`) whose transaction changes what a cached token rests on:
    once it has committed, a new generation is published."""
    after_commit(info, publish)


async def publish(info: dict[str, Any]) -> None:
    """Set a new generation, through the Redis of the platform whose session committed (a
    session without one, as in a command run while the platform is stopped, has no app
    process to tell). Redis out of reach is logged, not raised: the change is committed,
    and cached tokens are trusted TTL seconds at most (auth/token_cache.py)."""
    redis: Redis | None = info.get(SESSION_REDIS)
    if redis is None:
        return
    try:
        await redis.set(GENERATION_KEY, fresh())
    except (RedisConnectionError, RedisTimeoutError) as error:
        log.warning("could not publish a new credentials generation: %s", error)
