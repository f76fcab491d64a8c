"""API tokens an app process resolved recently, so that a busy client's calls need no token
query.

Each entry is stamped with the credentials generation it was read under (api/credentials.py)
and trusted only while the request's generation is the same, and for TTL seconds at most.
Unknown, revoked and expired tokens are never kept; expiry is checked again on every use.

An entry rests on what the token query reads (auth/service.py): the token's row and its
user's. The hooks below mark a session whose flush or statement changes either (a token
revoked or deleted, a user deleted, made admin or not), and a new generation is published
once its transaction has committed (api/credentials.py): before a request's answer leaves,
at the end of a job's or a command's `session_scope`. A token's `last_used_at`, which its own
use writes once a minute, is not a change. Memberships and roles are not cached: every
request reads them with its resource (projects/access.py, teams/access.py), so a removed
member is refused on the next request too. A change no hook sees (SQL typed by hand, a
session without the platform's Redis) counts once the entry is TTL seconds old.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

from devpush.api.credentials import mark_changed
from devpush.auth.models import ApiToken, User
from devpush.auth.service import (
    LAST_USED_ONLY,
    Principal,
    ResolvedToken,
    check_expiry,
    resolve_token,
    token_digest,
    touch_token,
)

TTL = 30.0  # seconds: the bound for changes no hook sees
SIZE = 10_000  # tokens per process; the oldest goes first

# What the token query reads, per model: a change to any of these changes credentials.
READ_BY_LOOKUP: dict[type, frozenset[str]] = {
    ApiToken: frozenset(
        {"id", "user_id", "team_id", "token_hash", "scopes", "expires_at", "revoked_at"}
    ),
    User: frozenset({"id", "is_admin", "status"}),
}
TABLES = frozenset(model.__table__.name for model in READ_BY_LOOKUP)  # type: ignore[attr-defined]


@dataclass
class _Entry:
    resolved: ResolvedToken
    generation: str
    stored: float


class TokenCache:
    """Resolved tokens by their hash (never the token itself), per process."""

    def __init__(
        self, *, ttl: float = TTL, size: int = SIZE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.size = size
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str, generation: str) -> ResolvedToken | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry.generation != generation or self._clock() - entry.stored > self.ttl:
            del self._entries[digest]
            return None
        return entry.resolved

    def put(self, digest: str, generation: str, resolved: ResolvedToken) -> None:
        if digest not in self._entries and len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # the oldest stored
        self._entries[digest] = _Entry(resolved, generation, self._clock())

    def used(self, digest: str, last_used_at: datetime | None) -> None:
        """The token's use was recorded now: keep the entry, with its stamp and age."""
        entry = self._entries.get(digest)
        if entry is not None:
            entry.resolved = replace(entry.resolved, last_used_at=last_used_at)


async def authenticate(
    *, session: AsyncSession, token: str, cache: TokenCache, generation: str
) -> Principal:
    """The principal of a bearer token: from the cache while `generation` is the one it was
    read under, else from the database (and then cached). Raises Unauthorized."""
    digest = token_digest(token)
    resolved = cache.get(digest, generation)
    if resolved is None:
        resolved = await resolve_token(session=session, digest=digest)
        cache.put(digest, generation, resolved)
    else:
        check_expiry(resolved.expires_at)
    used = await touch_token(
        session=session, token_id=resolved.token_id, last_used_at=resolved.last_used_at
    )
    if used != resolved.last_used_at:
        cache.used(digest, used)
    return resolved.principal


# ---- what changes credentials ------------------------------------------------------------
def _changes_credentials(obj: object) -> bool:
    watched = READ_BY_LOOKUP.get(type(obj))
    if watched is None:
        return False
    attrs = inspect(obj).attrs
    return any(attrs[key].history.has_changes() for key in watched)


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    deleted = any(type(obj) in READ_BY_LOOKUP for obj in session.deleted)
    if deleted or any(_changes_credentials(obj) for obj in session.dirty):
        mark_changed(session.info)


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    """UPDATE and DELETE statements (ORM or Core) on the tokens' and users' tables."""
    if not (state.is_update or state.is_delete):
        return
    if state.execution_options.get(LAST_USED_ONLY):
        return
    table = getattr(state.statement, "table", None)
    if getattr(table, "name", None) in TABLES:
        mark_changed(state.session.info)
