"""Server-side operations behind the CLI (`user`, `token`, `keys rotate`, `up`'s first admin).
Each opens a short-lived engine on the platform's database and calls the domain services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import crypto
from devpush.auth import service as auth
from devpush.db import make_engine, make_sessionmaker, session_scope
from devpush.errors import NotFound
from devpush.platform import SESSION_REDIS
from devpush.runstate import database_url, redis_url
from devpush.settings import Settings
from devpush.teams import service as teams


@asynccontextmanager
async def transaction(settings: Settings) -> AsyncIterator[AsyncSession]:
    """One transaction on the platform's database. With the platform's Redis in its session,
    so that a change of credentials (`user create --admin` on an existing user) reaches the
    running app processes' token caches at once (api/credentials.py); Redis is only dialled
    then, and a stopped platform's is not missed (it has no app process to tell)."""
    from devpush.auth import token_cache  # noqa: F401  (its hooks mark credential changes)

    engine = make_engine(database_url(settings), pool_size=1)
    redis = Redis.from_url(redis_url(settings), socket_connect_timeout=2, socket_timeout=5)
    try:
        async with session_scope(make_sessionmaker(engine, info={SESSION_REDIS: redis})) as s:
            yield s
    finally:
        await redis.aclose()
        await engine.dispose()


async def _create(session: AsyncSession, email: str, is_admin: bool) -> str:
    user = await auth.create_user(session=session, email=email, is_admin=is_admin)
    await teams.create_team(session=session, owner_id=user.id, name=user.name, personal=True)
    return user.id


async def create_account(settings: Settings, email: str, *, is_admin: bool = False) -> str:
    """A user with a personal team."""
    async with transaction(settings) as session:
        return await _create(session, email, is_admin)


async def ensure_admin(settings: Settings, email: str) -> str:
    async with transaction(settings) as session:
        user = await auth.get_user_by_email(session=session, email=email)
        if user is None:
            return await _create(session, email, True)
        user.is_admin = True
        return user.id


async def sign_in_link(settings: Settings, user_id: str) -> str:
    async with transaction(settings) as session:
        token = await auth.create_sign_in_link(session=session, user_id=user_id)
    return f"{settings.app_url}/auth/link/{token}"


async def _user_id(session: AsyncSession, email: str) -> str:
    user = await auth.get_user_by_email(session=session, email=email)
    if user is None:
        raise NotFound(f"no user with email {email}; create one with `devpush user create`")
    return user.id


async def sign_in_link_for_email(settings: Settings, email: str) -> str:
    async with transaction(settings) as session:
        user_id = await _user_id(session, email)
    return await sign_in_link(settings, user_id)


async def create_token_for_email(
    settings: Settings, email: str, *, name: str, scopes: list[str], expires_days: int | None
) -> str:
    async with transaction(settings) as session:
        user_id = await _user_id(session, email)
        _, plaintext = await auth.create_token(
            session=session, user_id=user_id, name=name, scopes=scopes, expires_days=expires_days
        )
        return plaintext


def _encrypted_columns() -> list[tuple[type, str]]:
    from devpush.deployments.models import Deployment
    from devpush.github.models import GithubInstallation
    from devpush.projects.models import EnvVar, Project

    return [
        (EnvVar, "value_enc"),
        (Deployment, "env_enc"),
        (Project, "repo_credentials_enc"),
        (GithubInstallation, "token_enc"),
    ]


async def rotate_keys(settings: Settings) -> int:
    """Re-encrypt every secret that is not under the newest key; return how many were.

    File-held keys: a new key is generated and put first (written before the rows change, so
    no row is ever under a key that was not stored). DEVPUSH_ENCRYPTION_KEYS: the operator's
    first key is the newest; none is added, and 0 means there was nothing to do."""
    keys = crypto.load_keys(settings)
    if not settings.encryption_keys:
        keys = [Fernet.generate_key().decode(), *keys]
    crypto.fernets(keys)  # an invalid key fails here, before anything changes
    count = 0
    async with transaction(settings) as session:
        found = []
        for model, column in _encrypted_columns():
            col = getattr(model, column)
            rows = (await session.execute(select(model.id, col).where(col.is_not(None)))).all()  # type: ignore[attr-defined]
            found += [(model, column, row_id, token) for row_id, token in rows]
        if not settings.encryption_keys:
            crypto.write_keys(settings, keys)
        for model, column, row_id, token in found:
            rotated = crypto.reencrypt(keys, token)
            if rotated is None:
                continue
            await session.execute(
                update(model).where(model.id == row_id).values({column: rotated})  # type: ignore[attr-defined]
            )
            count += 1
    crypto.get_fernet.cache_clear()
    return count
