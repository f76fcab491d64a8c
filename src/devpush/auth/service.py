"""Users, API tokens and one-time sign-in links. Secrets are stored as SHA-256 hashes only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.models import ApiToken, SignInLink, User
from devpush.db import utcnow
from devpush.errors import Conflict, Invalid, NotFound, Unauthorized

SCOPES = ("read", "deploy", "admin")
TOKEN_PREFIX = "dp_"
# An execution option: this UPDATE of api_tokens only records a use (auth/token_cache.py).
LAST_USED_ONLY = "devpush_last_used_only"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, through an API token (with scopes) or a browser session."""

    user_id: str
    is_admin: bool
    scopes: frozenset[str]
    token_id: str | None = None
    token_team_id: str | None = None


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain or any(c.isspace() for c in email) or len(email) > 320:
        raise Invalid(f"{email!r} is not a valid email address")
    return email


async def get_user_by_email(*, session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == normalize_email(email)))


async def create_user(
    *, session: AsyncSession, email: str, name: str = "", is_admin: bool = False
) -> User:
    email = normalize_email(email)
    if await get_user_by_email(session=session, email=email):
        raise Conflict(f"a user with email {email} already exists")
    user = User(email=email, name=name or email.split("@")[0], is_admin=is_admin)
    session.add(user)
    await session.flush()
    return user


async def create_token(
    *,
    session: AsyncSession,
    user_id: str,
    name: str = "",
    scopes: list[str] | None = None,
    team_id: str | None = None,
    expires_days: int | None = None,
) -> tuple[ApiToken, str]:
    """Create an API token; the plaintext is returned once and never stored."""
    scopes = scopes or list(SCOPES)
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise Invalid(f"unknown token scopes {sorted(unknown)}; use read, deploy or admin")
    if expires_days is not None and expires_days <= 0:
        raise Invalid("expires_days must be a positive number of days")
    prefix = secrets.token_hex(4)
    plaintext = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        user_id=user_id,
        team_id=team_id,
        name=name[:100],
        prefix=prefix,
        token_hash=hash_secret(plaintext),
        scopes=sorted(set(scopes)),
        expires_at=utcnow() + timedelta(days=expires_days) if expires_days else None,
    )
    session.add(token)
    await session.flush()
    return token, plaintext


# Built once: every API request with a token runs it (unless auth/token_cache.py holds the
# token). Plain columns, not ORM objects.
_TOKEN_LOOKUP = (
    select(
        ApiToken.id,
        ApiToken.revoked_at,
        ApiToken.expires_at,
        ApiToken.last_used_at,
        ApiToken.scopes,
        ApiToken.team_id,
        User.id.label("user_id"),
        User.is_admin,
        User.status,
    )
    .outerjoin(User, User.id == ApiToken.user_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)
# How often a token's last_used_at is written: not on every request.
LAST_USED_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class ResolvedToken:
    """A token found valid: who it acts for, and what decides it later (auth/token_cache.py
    keeps these; expiry is checked again on every use)."""

    token_id: str
    principal: Principal
    expires_at: datetime | None
    last_used_at: datetime | None


def token_digest(token: str) -> str:
    """The stored hash of a bearer token; Unauthorized for one that can't be ours."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthorized("the API token is malformed; create one with `devpush token create`")
    return hash_secret(token)


async def resolve_token(*, session: AsyncSession, digest: str) -> ResolvedToken:
    """Read a token (by its hash) and its user from the database, or raise Unauthorized."""
    row = (await session.execute(_TOKEN_LOOKUP, {"token_hash": digest})).first()
    if row is None or row.revoked_at is not None:
        raise Unauthorized("the API token is unknown or revoked; create a new one")
    check_expiry(row.expires_at)
    if row.user_id is None or row.status != "active":
        raise Unauthorized("the API token's user no longer exists")
    principal = Principal(
        user_id=row.user_id,
        is_admin=row.is_admin,
        scopes=frozenset(row.scopes),
        token_id=row.id,
        token_team_id=row.team_id,
    )
    return ResolvedToken(row.id, principal, row.expires_at, row.last_used_at)


def check_expiry(expires_at: datetime | None) -> None:
    if expired(expires_at):
        raise Unauthorized("the API token has expired; create a new one")


async def touch_token(
    *, session: AsyncSession, token_id: str, last_used_at: datetime | None
) -> datetime | None:
    """Record the token's use when its last_used_at is older than LAST_USED_EVERY; returns
    the value it has now. Not a change of credentials (auth/token_cache.py ignores it)."""
    now = utcnow()
    if last_used_at is not None and now - last_used_at <= LAST_USED_EVERY:
        return last_used_at
    await session.execute(
        update(ApiToken)
        .where(ApiToken.id == token_id)
        .values(last_used_at=now)
        .execution_options(**{LAST_USED_ONLY: True})
    )
    return now


async def authenticate_token(*, session: AsyncSession, token: str) -> Principal:
    """Resolve a bearer token from the database, or raise Unauthorized."""
    resolved = await resolve_token(session=session, digest=token_digest(token))
    await touch_token(
        session=session, token_id=resolved.token_id, last_used_at=resolved.last_used_at
    )
    return resolved.principal


async def list_tokens(*, session: AsyncSession, user_id: str) -> list[ApiToken]:
    rows = await session.scalars(
        select(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .order_by(ApiToken.created_at.desc())
    )
    return list(rows)


async def revoke_token(*, session: AsyncSession, user_id: str, token_id: str) -> ApiToken:
    token = await session.get(ApiToken, token_id)
    if token is None or token.user_id != user_id:
        raise NotFound("no such token")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
    return token


async def create_sign_in_link(
    *, session: AsyncSession, user_id: str, ttl: timedelta = timedelta(minutes=30)
) -> str:
    plaintext = secrets.token_urlsafe(32)
    session.add(
        SignInLink(user_id=user_id, token_hash=hash_secret(plaintext), expires_at=utcnow() + ttl)
    )
    await session.flush()
    return plaintext


async def consume_sign_in_link(*, session: AsyncSession, token: str) -> User:
    """Use a sign-in link once; expired or used links are refused."""
    link = await session.scalar(
        select(SignInLink).where(SignInLink.token_hash == hash_secret(token)).with_for_update()
    )
    if link is None or link.used_at is not None or link.expires_at <= utcnow():
        raise Unauthorized("this sign-in link is invalid, used or expired; request a new one")
    link.used_at = utcnow()
    user = await session.get(User, link.user_id)
    if user is None:
        raise Unauthorized("this sign-in link's user no longer exists")
    return user


def expired(moment: datetime | None) -> bool:
    return moment is not None and moment <= utcnow()
