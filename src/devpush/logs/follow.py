"""Following a deployment's log: stored lines first, then its Redis Stream, without gaps or
duplicates.

follow() reads stored lines after a sequence number, then tails the deployment's Redis
Stream (written after every commit: `status`, `log` and `logs` batch entries), deduplicating
by sequence number and filling any gap (a trimmed stream, a lost publish) from PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devpush.logs.lines import Followed, StatusChange, StoredLine

if TYPE_CHECKING:
    from devpush.logs.store import PostgresLogStore

FOLLOW_PAGE = 5_000


class Tail:
    """One follower's place: the last sequence number it passed on."""

    def __init__(
        self,
        store: PostgresLogStore,
        sessions: async_sessionmaker[AsyncSession],
        deployment_id: str,
        last: int,
    ) -> None:
        self.store, self.sessions, self.deployment_id, self.last = (
            store,
            sessions,
            deployment_id,
            last,
        )

    async def drain(self) -> AsyncIterator[list[Followed]]:
        """Every stored line after the last one passed on, in pages."""
        while True:
            async with self.sessions() as session:
                lines = await self.store.since(
                    session=session,
                    deployment_id=self.deployment_id,
                    after_seq=self.last,
                    limit=FOLLOW_PAGE,
                )
            if lines:
                self.last = lines[-1].seq
                yield list(lines)
            if len(lines) < FOLLOW_PAGE:
                return

    async def receive(self, entries: list[Any]) -> AsyncIterator[list[Followed]]:
        """Stream entries in order: status changes as they are, lines not passed on yet; a
        line past a gap first brings the gap's lines from PostgreSQL (they are committed:
        sequence numbers are taken under the deployment's row lock, in commit order)."""
        out: list[Followed] = []
        for item in _unpack(entries):
            if isinstance(item, StatusChange):
                out.append(item)
                continue
            seq = int(item["seq"])
            if seq > self.last + 1:
                if out:
                    yield out
                    out = []
                async for batch in self.drain():
                    yield batch
            if seq > self.last:
                out.append(StoredLine.from_json(item))
                self.last = seq
        if out:
            yield out


def _unpack(entries: list[Any]) -> list[StatusChange | dict[str, Any]]:
    """Deployment stream entries as status changes and line payloads: `status`, `log` (one
    line) and `logs` (a batch of lines, as the shipper publishes them)."""
    items: list[StatusChange | dict[str, Any]] = []
    for _, fields in entries:
        kind = as_str(fields.get(b"type", b""))
        data = json.loads(fields.get(b"data", b"null"))
        if kind == "status":
            items.append(StatusChange(data))
        elif kind == "log":
            items.append(data)
        elif kind == "logs":
            items.extend(data)
    return items


async def stream_position(redis: Redis, key: str) -> str:
    """The id of the last entry of a Redis Stream ("0-0" when empty): read from there on to
    get everything published after this call."""
    entries = await redis.xrevrange(key, count=1)
    return as_str(entries[0][0]) if entries else "0-0"


def as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
