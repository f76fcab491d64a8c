"""Environment variables: one at a time (list without values, set, unset, reveal), a whole
set at once (project create/update), and the resolved values a deployment snapshots.

Values are Fernet-encrypted at rest; a variable is global (environment None) or scoped to one
environment, which overrides the global one for deployments of that environment.

Who gets what: a deployment with an environment (production or a named one) gets every global
variable plus its environment's. A preview (no environment: a pull request, or a branch that
matches no environment) gets the plain global variables, and a global secret only when that
secret is marked `previews`: code from a branch or a fork never sees production secrets
unless the project asked for it. `previews` means nothing for plain variables (they reach every
deployment) and is stored false for them; an environment-scoped variable can't be marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import crypto
from devpush.errors import Invalid, NotFound
from devpush.projects.models import Environment, EnvVar
from devpush.projects.schemas import ENV_KEY


@dataclass(frozen=True)
class EnvVarInfo:
    key: str
    environment: str | None  # environment slug; None = every environment
    secret: bool
    previews: bool  # a global secret also given to preview deployments
    updated_at: datetime


async def environment_id(
    *, session: AsyncSession, project_id: str, environment: str | None
) -> str | None:
    if environment is None:
        return None
    env_id = await session.scalar(
        select(Environment.id).where(
            Environment.project_id == project_id, Environment.slug == environment
        )
    )
    if env_id is None:
        raise Invalid(f"this project has no environment named {environment[:40]!r}")
    return env_id


async def list_vars(*, session: AsyncSession, project_id: str) -> list[EnvVarInfo]:
    rows = await session.execute(
        select(EnvVar, Environment.slug)
        .outerjoin(Environment, Environment.id == EnvVar.environment_id)
        .where(EnvVar.project_id == project_id)
        .order_by(EnvVar.key, Environment.slug.nulls_first())
    )
    return [_info(v, slug) for v, slug in rows]


def _info(row: EnvVar, environment: str | None) -> EnvVarInfo:
    return EnvVarInfo(
        key=row.key,
        environment=environment,
        secret=row.secret,
        previews=row.previews,
        updated_at=row.updated_at,
    )


async def _find(
    session: AsyncSession, project_id: str, key: str, env_id: str | None
) -> EnvVar | None:
    scope = EnvVar.environment_id.is_(None) if env_id is None else EnvVar.environment_id == env_id
    return await session.scalar(
        select(EnvVar).where(EnvVar.project_id == project_id, EnvVar.key == key, scope)
    )


def _check(key: str, value: str | None = None) -> None:
    if not ENV_KEY.match(key):
        raise Invalid(f"{key[:40]!r} is not a valid variable name (letters, digits, _)")
    if value is not None and ("\x00" in value or len(value) > 65536):
        raise Invalid(f"the value of {key} must be under 64 KiB with no NUL bytes")


async def set_var(
    *,
    session: AsyncSession,
    project_id: str,
    key: str,
    value: str,
    environment: str | None = None,
    secret: bool = False,
    previews: bool = False,
) -> EnvVarInfo:
    _check(key, value)
    if previews and environment is not None:
        raise Invalid(
            "previews never get a variable scoped to an environment; 'previews' is for "
            "project-wide secrets"
        )
    previews = previews and secret  # plain variables reach previews anyway
    env_id = await environment_id(session=session, project_id=project_id, environment=environment)
    row = await _find(session, project_id, key, env_id)
    if row is None:
        row = EnvVar(
            project_id=project_id,
            environment_id=env_id,
            key=key,
            value_enc=crypto.encrypt(value),
            secret=secret,
            previews=previews,
        )
        session.add(row)
    else:
        row.value_enc = crypto.encrypt(value)
        row.secret = secret
        row.previews = previews
    await session.flush()
    await session.refresh(row)
    return _info(row, environment)


async def unset_var(
    *, session: AsyncSession, project_id: str, key: str, environment: str | None = None
) -> None:
    _check(key)
    env_id = await environment_id(session=session, project_id=project_id, environment=environment)
    row = await _find(session, project_id, key, env_id)
    if row is None:
        raise NotFound(f"no variable {key} here")
    await session.delete(row)
    await session.flush()


async def reveal(
    *, session: AsyncSession, project_id: str, key: str, environment: str | None = None
) -> str:
    _check(key)
    env_id = await environment_id(session=session, project_id=project_id, environment=environment)
    row = await _find(session, project_id, key, env_id)
    if row is None:
        raise NotFound(f"no variable {key} here")
    return crypto.decrypt(row.value_enc)


async def set_env_vars(
    *,
    session: AsyncSession,
    project_id: str,
    values: dict[str, str],
    environment_id: str | None = None,
    secret: bool = False,
    replace: bool = True,
) -> None:
    """Set variables (encrypted). With `replace`, variables not in `values` are removed."""
    scope = (EnvVar.project_id == project_id) & (
        EnvVar.environment_id.is_(None)
        if environment_id is None
        else EnvVar.environment_id == environment_id
    )
    existing = {v.key: v for v in await session.scalars(select(EnvVar).where(scope))}
    if replace:
        stale = [k for k in existing if k not in values]
        if stale:
            await session.execute(delete(EnvVar).where(scope, EnvVar.key.in_(stale)))
    for key, value in values.items():
        row = existing.get(key)
        if row is None:
            session.add(
                EnvVar(
                    project_id=project_id,
                    environment_id=environment_id,
                    key=key,
                    value_enc=crypto.encrypt(value),
                    secret=secret,
                )
            )
        else:
            row.value_enc = crypto.encrypt(value)
            row.secret = secret or row.secret


async def env_var_keys(*, session: AsyncSession, project_id: str) -> list[str]:
    rows = await session.scalars(
        select(EnvVar.key).where(EnvVar.project_id == project_id).distinct().order_by(EnvVar.key)
    )
    return list(rows)


async def resolve_env(
    *, session: AsyncSession, project_id: str, environment_id: str | None, preview: bool
) -> tuple[dict[str, str], list[str]]:
    """Decrypted variables for a deployment: global ones, overridden by the environment's.
    A `preview` (no environment: a pull request or an unmatched branch) gets a global secret
    only when it is marked `previews`. Returns (values, keys marked secret)."""
    rows = list(await session.scalars(select(EnvVar).where(EnvVar.project_id == project_id)))
    values: dict[str, str] = {}
    secret: set[str] = set()
    for row in sorted(rows, key=lambda r: r.environment_id is not None):
        if row.environment_id not in (None, environment_id):
            continue
        if preview and row.environment_id is None and row.secret and not row.previews:
            continue
        values[row.key] = crypto.decrypt(row.value_enc)
        if row.secret:
            secret.add(row.key)
    return values, sorted(secret)
