"""Token routes (list, create, revoke) and `whoami`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from devpush.accounts.account import start_deletion
from devpush.api.deps import PlatformDep, SecretAnswer, SessionDep, client_ip
from devpush.api.schemas import DeletionAccepted
from devpush.audit.service import record
from devpush.auth import service
from devpush.auth.deps import PrincipalDep
from devpush.auth.models import ApiToken, User
from devpush.auth.schemas import TokenCreate, TokenCreated, TokenRead, UserRead
from devpush.errors import Forbidden, NotFound
from devpush.queue import enqueue_delete_user
from devpush.teams.access import Action, authorize_team

router = APIRouter(tags=["tokens"])


def _read(token: ApiToken) -> TokenRead:
    return TokenRead(
        id=token.id,
        name=token.name,
        prefix=token.prefix,
        scopes=token.scopes,
        team_id=token.team_id,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        created_at=token.created_at,
    )


@router.get("/user", response_model=UserRead, tags=["users"])
async def whoami(session: SessionDep, principal: PrincipalDep) -> UserRead:
    user = await _me(session, principal)
    return UserRead(id=user.id, email=user.email, name=user.name, is_admin=user.is_admin)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class EmailChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=320)


def _may_change_account(principal: service.Principal, what: str) -> None:
    """Changing the account itself needs an 'admin' token for no one team: a read token that
    could set the email address would let whoever holds it take the account over."""
    if "admin" not in principal.scopes or principal.token_team_id is not None:
        raise Forbidden(f"{what} needs a token with the 'admin' scope, for no one team")


@router.patch("/user", response_model=UserRead, tags=["users"])
async def update_me(body: UserUpdate, session: SessionDep, principal: PrincipalDep) -> UserRead:
    _may_change_account(principal, "renaming yourself")
    user = await _me(session, principal)
    user.name = body.name.strip() or user.name
    return UserRead(id=user.id, email=user.email, name=user.name, is_admin=user.is_admin)


@router.post("/user/email", status_code=202, tags=["users"])
async def change_email(
    body: EmailChange, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> dict[str, str]:
    """Send a confirmation link to the new address; the change happens when it is opened."""
    from devpush.accounts import signup
    from devpush.auth import mail

    _may_change_account(principal, "changing the email address")
    user = await _me(session, principal)
    message = await signup.request_email_change(
        session=session, settings=platform.settings, user=user, new_email=body.email
    )
    await session.commit()
    await mail.send(platform.settings, message)
    return {"status": "confirmation sent", "to": message.to}


@router.delete("/user", status_code=202, response_model=DeletionAccepted, tags=["users"])
async def delete_me(
    request: Request, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> DeletionAccepted:
    """Delete your account (a job), with the teams you are the only member of."""
    _may_change_account(principal, "deleting the account")
    user = await _me(session, principal)
    await start_deletion(session=session, user=user)
    await record(
        session=session,
        principal=principal,
        action="user.delete",
        resource_type="user",
        resource_id=user.id,
        team_id=None,
        ip=client_ip(request),
    )
    await session.commit()
    await enqueue_delete_user(platform.redis, user.id)
    return DeletionAccepted(id=user.id)


async def _me(session: SessionDep, principal: PrincipalDep) -> User:
    user = await session.get(User, principal.user_id)
    if user is None:
        raise NotFound("no such user")
    return user


@router.get("/tokens", response_model=list[TokenRead])
async def list_tokens(session: SessionDep, principal: PrincipalDep) -> list[TokenRead]:
    return [_read(t) for t in await service.list_tokens(session=session, user_id=principal.user_id)]


@router.post("/tokens", response_model=TokenCreated, status_code=201, dependencies=[SecretAnswer])
async def create_token(
    body: TokenCreate, request: Request, session: SessionDep, principal: PrincipalDep
) -> TokenCreated:
    if "admin" not in principal.scopes:
        raise Forbidden("only a token with the 'admin' scope may create tokens")
    if principal.token_team_id and body.team_id != principal.token_team_id:
        raise Forbidden("a team-limited token may only create tokens for its own team")
    if body.team_id:
        await authorize_team(
            session=session, principal=principal, team_id=body.team_id, action=Action.read
        )
    token, plaintext = await service.create_token(
        session=session,
        user_id=principal.user_id,
        name=body.name,
        scopes=list(body.scopes),
        team_id=body.team_id,
        expires_days=body.expires_days,
    )
    await record(
        session=session,
        principal=principal,
        action="token.create",
        resource_type="token",
        resource_id=token.id,
        team_id=body.team_id,
        ip=client_ip(request),
    )
    return TokenCreated(**_read(token).model_dump(), token=plaintext)


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(
    token_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> Response:
    """Revoke a token of yours. Any token may revoke itself; others need the 'admin' scope
    (and a team-limited token reaches only its own team's tokens)."""
    if token_id != principal.token_id:
        if "admin" not in principal.scopes:
            raise Forbidden("only a token with the 'admin' scope may revoke other tokens")
        row = await session.get(ApiToken, token_id) if len(token_id) <= 32 else None
        if principal.token_team_id and (row is None or row.team_id != principal.token_team_id):
            raise NotFound("no such token")
    token = await service.revoke_token(
        session=session, user_id=principal.user_id, token_id=token_id
    )
    await record(
        session=session,
        principal=principal,
        action="token.revoke",
        resource_type="token",
        resource_id=token.id,
        team_id=token.team_id,
        ip=client_ip(request),
    )
    return Response(status_code=204)
