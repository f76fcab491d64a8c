"""The calling principal, a FastAPI dependency: an API token (through the app's token cache,
auth/token_cache.py), or the signed-in session (whose API calls carry the CSRF check)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from devpush.api.credentials import STATE
from devpush.api.csrf import check_session_api_request
from devpush.api.deps import SessionDep
from devpush.auth.models import User
from devpush.auth.service import SCOPES, Principal, authenticate_token
from devpush.auth.token_cache import authenticate
from devpush.errors import Unauthorized

bearer = HTTPBearer(auto_error=False, description="An API token from `devpush token create`")


async def get_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is not None:
        # The generation the API middleware read for this call; without it (a route outside
        # /api/), the token is read from the database.
        generation = getattr(request.state, STATE, None)
        cache = getattr(request.app.state, "token_cache", None)
        if generation is None or cache is None:
            return await authenticate_token(session=session, token=credentials.credentials)
        return await authenticate(
            session=session, token=credentials.credentials, cache=cache, generation=generation
        )
    user_id = request.session.get("user_id") if "session" in request.scope else None
    if user_id:
        check_session_api_request(request)
        user = await session.get(User, user_id)
        if user is not None and user.status == "active":
            return Principal(user_id=user.id, is_admin=user.is_admin, scopes=frozenset(SCOPES))
    raise Unauthorized("sign in, or send an API token as 'Authorization: Bearer <token>'")


PrincipalDep = Annotated[Principal, Depends(get_principal)]
