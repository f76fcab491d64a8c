"""FastAPI dependencies: the per-request session, the calling principal, and typed access to
the services the lifespan built. Resource loaders chain on these (see auth/authz.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.models import User
from devpush.auth.service import SCOPES, Principal, authenticate_token
from devpush.errors import Unauthorized
from devpush.platform import Platform


async def get_platform(request: Request) -> Platform:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a hop per request
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(get_platform)]


async def get_session(platform: PlatformDep) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the route returns, rolled back on error.
    A route may commit earlier itself (before enqueuing jobs that read its rows)."""
    async with platform.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]

bearer = HTTPBearer(auto_error=False, description="An API token from `devpush token create`")


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is not None:
        return await authenticate_token(session=session, token=credentials.credentials)
    user_id = request.session.get("user_id") if "session" in request.scope else None
    if user_id:
        from devpush.web.csrf import check_session_api_request

        check_session_api_request(request)
        user = await session.get(User, user_id)
        if user is not None and user.status == "active":
            return Principal(user_id=user.id, is_admin=user.is_admin, scopes=frozenset(SCOPES))
    raise Unauthorized("sign in, or send an API token as 'Authorization: Bearer <token>'")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def no_store(response: Response) -> None:
    """For answers that carry a secret (a new token, a revealed value, a one-time link): no
    cache keeps them, the idempotency replay store included (api/middleware.py)."""
    response.headers["Cache-Control"] = "no-store"


SecretAnswer = Depends(no_store)
