"""FastAPI dependencies: the per-request session and typed access to the services the lifespan
built. The calling principal is auth/deps.py; resource loaders chain on both (teams/access.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import committed
from devpush.platform import Platform


async def get_platform(request: Request) -> Platform:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hop per request
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def get_session(platform: PlatformDep) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the route returns, rolled back on error.
    A route may commit earlier itself (before enqueuing jobs that read its rows).

    The after-commit hooks (db.py) run before the answer leaves: a transaction that changed
    a token or a user has published a new credentials generation (api/credentials.py), so the
    next request finds no cached token it could wrongly trust, whichever app process it
    reaches."""
    async with platform.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            # the route may have committed before the error (a token revoked, then a failure)
            await committed(session)
            raise
        await session.commit()
        await committed(session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def no_store(response: Response) -> None:
    """For answers that carry a secret (a new token, a revealed value, a one-time link): no
    cache keeps them, the idempotency replay store included (api/middleware.py)."""
    response.headers["Cache-Control"] = "no-store"


SecretAnswer = Depends(no_store)
