"""Is an exception "the platform's database or Redis is not there, or refuses us"? The CLI
answers those in one line that says where it looked (cli.main); any other exception is a bug
and keeps its traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

from devpush.settings import Settings

# SQLSTATE classes that mean "not this server": 08 connection, 28 authentication (wrong role or
# password), 3D000 no such database, 57P03 the server is starting or shutting down.
_REFUSED = ("08", "28", "3D000", "57P03")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, getattr(current, "orig", None)]


def reason(exc: BaseException) -> tuple[str, str] | None:
    """("the database" or "Redis", the server's or the socket's one-line answer), or None when
    `exc` is not about reaching either."""
    from asyncpg.exceptions import PostgresError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeout

    for current in _chain(exc):
        text = (str(current).strip().splitlines() or [type(current).__name__])[0]
        if isinstance(current, RedisConnectionError | RedisTimeout):
            return "Redis", text
        if isinstance(current, PostgresError) and str(current.sqlstate).startswith(_REFUSED):
            return "the database", text
        # asyncpg lets the socket's errors through; redis-py wraps its own (above)
        if isinstance(current, ConnectionError | TimeoutError | socket.gaierror):
            return "the database", text
    return None


def _where(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unparsable URL is still shown, without secrets
        return "(an unparsable URL)"
    return f"{parsed.host}:{parsed.port}/{parsed.database}"


def describe(settings: Settings, exc: BaseException) -> str | None:
    """One line: which service failed, where it was looked for, and its answer."""
    from devpush.runstate import database_url, read_state, redis_url, state_path

    found = reason(exc)
    if found is None:
        return None
    service, text = found
    if service == "the database":
        url, variable = database_url(settings), "DEVPUSH_DATABASE_URL"
    else:
        url, variable = redis_url(settings), "DEVPUSH_REDIS_URL"
    configured = settings.database_url if service == "the database" else settings.redis_url
    if configured:
        source = variable
    elif read_state(settings) is not None:
        source = str(state_path(settings))
    else:
        source = f"the embedded default; no {state_path(settings)}"
    return f"cannot reach {service} at {_where(url)} (from {source}): {text}"
