"""Who may have an account, and the one-time email links around accounts.

- The sign-up allowlist: exact emails, whole domains, or patterns (`*@eng.example.com`),
  managed by platform admins. An address with a pending team invite may sign up as well.
  Everyone else needs an admin (`devpush user create`).
- Requesting a sign-in link: a known address gets a sign-in link, an allowed new one a sign-up
  link, any other nothing (the page says the same in every case, so it reveals no accounts).
  Requests are rate-limited per address and per client address in Redis.
- Email change: a link mailed to the new address; the change happens when it is opened.

The allowlist's JSON API (`/api/v1/admin/signup-rules`) is here too.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth import mail
from devpush.auth.deps import PrincipalDep
from devpush.auth.models import EmailToken, SignupRule, User
from devpush.auth.service import (
    Principal,
    create_sign_in_link,
    create_user,
    get_user_by_email,
    hash_secret,
    normalize_email,
)
from devpush.db import utcnow
from devpush.errors import Conflict, Forbidden, Invalid, NotFound, RateLimited, Unauthorized
from devpush.settings import Settings
from devpush.teams.models import TeamInvite

RuleKind = Literal["email", "domain", "pattern"]
LINK_TTL = timedelta(minutes=30)
RATE_WINDOW = 15 * 60  # seconds
RATE_PER_EMAIL = 5
RATE_PER_IP = 30
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# ---- the allowlist ----------------------------------------------------------------------------
def normalize_rule(kind: str, value: str) -> str:
    value = value.strip().lower()
    if kind == "email":
        return normalize_email(value)
    if kind == "domain":
        value = value.removeprefix("@")
        if not _DOMAIN.match(value) or len(value) > 253:
            raise Invalid(f"{value[:80]!r} is not a domain name (like example.com)")
        return value
    if kind == "pattern":
        if not value or len(value) > 320 or any(c.isspace() for c in value) or "@" not in value:
            raise Invalid("a pattern matches whole addresses, like *@eng.example.com")
        return value
    raise Invalid("kind must be email, domain or pattern")


def rule_matches(rule: SignupRule, email: str) -> bool:
    domain = email.rpartition("@")[2]
    if rule.kind == "email":
        return email == rule.value
    if rule.kind == "domain":
        return domain == rule.value
    return fnmatch.fnmatchcase(email, rule.value)


async def list_rules(*, session: AsyncSession) -> list[SignupRule]:
    rows = await session.scalars(select(SignupRule).order_by(SignupRule.kind, SignupRule.value))
    return list(rows)


async def add_rule(
    *, session: AsyncSession, kind: str, value: str, created_by: str | None
) -> SignupRule:
    value = normalize_rule(kind, value)
    if await session.scalar(
        select(SignupRule.id).where(SignupRule.kind == kind, SignupRule.value == value)
    ):
        raise Conflict(f"the allowlist already has {kind} {value}")
    rule = SignupRule(kind=kind, value=value, created_by=created_by)
    session.add(rule)
    await session.flush()
    return rule


async def remove_rule(*, session: AsyncSession, rule_id: str) -> SignupRule:
    rule = await session.get(SignupRule, rule_id) if len(rule_id) <= 32 else None
    if rule is None:
        raise NotFound("no such allowlist entry")
    await session.delete(rule)
    await session.flush()
    return rule


async def has_pending_invite(*, session: AsyncSession, email: str) -> bool:
    found = await session.scalar(
        select(TeamInvite.id).where(
            TeamInvite.email == email,
            TeamInvite.accepted_at.is_(None),
            TeamInvite.revoked_at.is_(None),
            TeamInvite.expires_at > utcnow(),
        )
    )
    return found is not None


async def may_sign_up(*, session: AsyncSession, email: str) -> bool:
    email = normalize_email(email)
    if any(rule_matches(rule, email) for rule in await list_rules(session=session)):
        return True
    return await has_pending_invite(session=session, email=email)


# ---- rate limits --------------------------------------------------------------------------------
def _bucket(kind: str, value: str) -> str:
    return f"devpush:signin:{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


async def limit_sign_in_requests(redis: Redis, *, email: str, ip: str | None) -> None:
    """Count one request for the address and the client; raise RateLimited past the limit."""
    checks = [(_bucket("email", email), RATE_PER_EMAIL)]
    if ip:
        checks.append((_bucket("ip", ip), RATE_PER_IP))
    for key, limit in checks:
        async with redis.pipeline(transaction=True) as pipe:
            pipe.set(key, 0, ex=RATE_WINDOW, nx=True)  # the window starts with the first request
            pipe.incr(key)
            pipe.ttl(key)
            _, count, ttl = await pipe.execute()
        if count > limit:
            raise RateLimited(
                "too many sign-in requests; wait a few minutes and try again",
                retry_after=max(int(ttl), 1),
            )


# ---- sign-in and sign-up links ------------------------------------------------------------------
async def _email_token(
    session: AsyncSession, *, purpose: str, email: str, user_id: str | None
) -> str:
    plaintext = secrets.token_urlsafe(32)
    session.add(
        EmailToken(
            purpose=purpose,
            email=email,
            user_id=user_id,
            token_hash=hash_secret(plaintext),
            expires_at=utcnow() + LINK_TTL,
        )
    )
    await session.flush()
    return plaintext


async def _use_email_token(session: AsyncSession, *, purpose: str, token: str) -> EmailToken:
    row = await session.scalar(
        select(EmailToken)
        .where(EmailToken.token_hash == hash_secret(token), EmailToken.purpose == purpose)
        .with_for_update()
    )
    if row is None or row.used_at is not None or row.expires_at <= utcnow():
        raise Unauthorized("this link is invalid, used or expired; request a new one")
    row.used_at = utcnow()
    return row


async def request_sign_in(
    *, session: AsyncSession, settings: Settings, email: str
) -> mail.Mail | None:
    """The mail to send for a sign-in request: a sign-in link for a user, a sign-up link for
    an address that may sign up, or None."""
    email = normalize_email(email)
    user = await get_user_by_email(session=session, email=email)
    if user is not None:
        if user.status != "active":
            return None
        token = await create_sign_in_link(session=session, user_id=user.id, ttl=LINK_TTL)
        return mail.sign_in(settings, email, f"{settings.app_url}/auth/link/{token}")
    if not await may_sign_up(session=session, email=email):
        return None
    token = await _email_token(session, purpose="sign_up", email=email, user_id=None)
    return mail.sign_up(settings, email, f"{settings.app_url}/auth/sign-up/{token}")


async def ensure_personal_team(*, session: AsyncSession, user: User) -> None:
    """A user's first sign-in gives them a personal team (if no team has them yet)."""
    from devpush.teams import service as teams

    if not await teams.list_teams(session=session, user_id=user.id):
        await teams.create_team(session=session, owner_id=user.id, name=user.name, personal=True)


async def create_account(*, session: AsyncSession, email: str, name: str = "") -> User:
    """A new user (allowed by the allowlist or an invite) with a personal team."""
    if not await may_sign_up(session=session, email=email):
        raise Forbidden("this address may not create an account here; ask an admin of this devpush")
    user = await create_user(session=session, email=email, name=name)
    await ensure_personal_team(session=session, user=user)
    return user


async def consume_sign_up(*, session: AsyncSession, token: str) -> User:
    row = await _use_email_token(session, purpose="sign_up", token=token)
    existing = await get_user_by_email(session=session, email=row.email)
    if existing is not None:  # signed up meanwhile (another link, OAuth, an admin)
        if existing.status != "active":
            raise Unauthorized("this account is being deleted")
        return existing
    return await create_account(session=session, email=row.email)


# ---- email change -------------------------------------------------------------------------------
async def request_email_change(
    *, session: AsyncSession, settings: Settings, user: User, new_email: str
) -> mail.Mail:
    new_email = normalize_email(new_email)
    if new_email == user.email:
        raise Invalid("that is already your email address")
    if await get_user_by_email(session=session, email=new_email):
        raise Conflict("another account uses that address")
    token = await _email_token(session, purpose="email_change", email=new_email, user_id=user.id)
    return mail.email_change(settings, new_email, f"{settings.app_url}/account/email/{token}")


async def consume_email_change(*, session: AsyncSession, token: str) -> User:
    row = await _use_email_token(session, purpose="email_change", token=token)
    user = await session.get(User, row.user_id) if row.user_id else None
    if user is None or user.status != "active":
        raise Unauthorized("this link's account no longer exists")
    if await get_user_by_email(session=session, email=row.email):
        raise Conflict("another account uses that address now")
    user.email = row.email
    await session.flush()
    return user


# ---- API: the allowlist -------------------------------------------------------------------------
router = APIRouter(prefix="/admin/signup-rules", tags=["admin"])


class SignupRuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: RuleKind
    value: str = Field(min_length=1, max_length=320)


class SignupRuleRead(BaseModel):
    id: str
    kind: str
    value: str


def require_platform_admin(principal: Principal) -> None:
    if not principal.is_admin or "admin" not in principal.scopes:
        raise Forbidden("only platform admins (with an 'admin' token) manage the allowlist")


@router.get("", response_model=list[SignupRuleRead])
async def api_list_rules(session: SessionDep, principal: PrincipalDep) -> list[SignupRuleRead]:
    require_platform_admin(principal)
    return [
        SignupRuleRead(id=r.id, kind=r.kind, value=r.value)
        for r in await list_rules(session=session)
    ]


@router.post("", response_model=SignupRuleRead, status_code=201)
async def api_add_rule(
    body: SignupRuleCreate, request: Request, session: SessionDep, principal: PrincipalDep
) -> SignupRuleRead:
    require_platform_admin(principal)
    rule = await add_rule(
        session=session, kind=body.kind, value=body.value, created_by=principal.user_id
    )
    await record(
        session=session,
        principal=principal,
        action="signup_rule.add",
        resource_type="signup_rule",
        resource_id=rule.id,
        team_id=None,
        ip=client_ip(request),
        data={"kind": rule.kind, "value": rule.value},
    )
    return SignupRuleRead(id=rule.id, kind=rule.kind, value=rule.value)


@router.delete("/{rule_id}", status_code=204)
async def api_remove_rule(
    rule_id: Annotated[str, PathParam(max_length=32)],
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
) -> Response:
    require_platform_admin(principal)
    rule = await remove_rule(session=session, rule_id=rule_id)
    await record(
        session=session,
        principal=principal,
        action="signup_rule.remove",
        resource_type="signup_rule",
        resource_id=rule.id,
        team_id=None,
        ip=client_ip(request),
        data={"kind": rule.kind, "value": rule.value},
    )
    return Response(status_code=204)
