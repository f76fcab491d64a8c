"""The log store protocol and its PostgreSQL implementation (the default).

append() writes a batch and assigns per-deployment sequence numbers (the SSE event ids) in
the same transaction that advances the deployment's counters. A shipper passes the runtime
offsets it expects and the ones it reaches, so a batch is stored exactly once even when the
shipper restarts, a commit's outcome was lost, or two shippers race.

How query() finds matches is told in logs/search.py, how follow() tails in logs/follow.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import BigInteger, String, column, func, literal_column, select, table, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devpush import events
from devpush.errors import Invalid
from devpush.logs.follow import Tail, as_str
from devpush.logs.lines import Followed, StoredLine
from devpush.logs.models import LogLine
from devpush.logs.search import Cursor, LogQuery, Matcher, Pattern, Search, check_regex, sqlstate
from devpush.settings import Settings

MAX_LINE = 16_384
LEVELS = ("debug", "info", "warn", "error", "fatal")
SEARCH_TIMEOUT_MS = 10_000


# ---- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewLine:
    ts: datetime
    stream: str
    phase: str
    message: str
    replica: int | None = None  # which replica wrote it (None: a platform line)


@dataclass(frozen=True)
class Offsets:
    """How many runtime lines of each stream are stored (or deliberately dropped).

    Counted per stream because a runtime re-read from the start interleaves stdout and stderr
    differently; each stream on its own is always read in the same order. Packed into the
    deployment's `log_offset` column: stdout in the high 32 bits, stderr in the low 32.
    """

    stdout: int = 0
    stderr: int = 0

    def packed(self) -> int:
        return (self.stdout << 32) | self.stderr

    @classmethod
    def unpack(cls, value: int) -> Offsets:
        return cls(stdout=value >> 32, stderr=value & 0xFFFF_FFFF)

    def get(self, stream: str) -> int:
        return self.stderr if stream == "stderr" else self.stdout

    def plus(self, stream: str, n: int = 1) -> Offsets:
        if stream == "stderr":
            return Offsets(self.stdout, self.stderr + n)
        return Offsets(self.stdout + n, self.stderr)


class OffsetConflict(Exception):
    """The deployment's runtime offsets are not the ones the shipper expected: the batch (or
    part of it) was stored already. `current` says how far the store is."""

    def __init__(self, current: Offsets) -> None:
        super().__init__(f"log offsets moved to {current}")
        self.current = current


@dataclass
class LogPage:
    items: list[StoredLine] = field(default_factory=list)
    next_cursor: str | None = None


class LogStore(Protocol):
    """Where log lines live. Every implementation keeps this contract:

    - append(): store a batch for one deployment, giving each line the next sequence number of
      that deployment; with `offsets=(expected, reached)`, store it only if the deployment's
      runtime offsets are `expected` (else raise OffsetConflict) and move them to `reached`.
    - since(): a deployment's lines after a sequence number, in order.
    - tail(): a deployment's last lines of some phases, in order.
    - query(): a project's lines matching filters, newest first, one page and the cursor of
      the next (older) page.
    - follow(): since(), then the lines (and status changes) published after `position`, in
      sequence order without duplicates; an empty batch after `idle` seconds of silence.
    - stored_after(): every stored line after a sequence number, in pages.
    """

    async def append(
        self,
        *,
        session: AsyncSession,
        deployment_id: str,
        lines: list[NewLine],
        offsets: tuple[Offsets, Offsets] | None = None,
    ) -> list[StoredLine]: ...

    async def since(
        self, *, session: AsyncSession, deployment_id: str, after_seq: int, limit: int = 5000
    ) -> list[StoredLine]: ...

    async def tail(
        self, *, session: AsyncSession, deployment_id: str, phases: tuple[str, ...], limit: int
    ) -> list[StoredLine]: ...

    async def query(
        self, *, session: AsyncSession, project_id: str, query: LogQuery
    ) -> LogPage: ...

    def follow(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        deployment_id: str,
        after_seq: int,
        position: str,
        idle: float = 5.0,
    ) -> AsyncGenerator[list[Followed], None]: ...

    def stored_after(
        self, *, sessions: async_sessionmaker[AsyncSession], deployment_id: str, after_seq: int
    ) -> AsyncIterator[list[Followed]]: ...


def open_log_store(settings: Settings) -> LogStore:
    """The log store this platform uses, chosen once when the platform is built and handed on
    from there. PostgreSQL is the only implementation so far, so every setting picks it."""
    del settings
    return PostgresLogStore()


# ---- line hygiene ---------------------------------------------------------------------------
_TEXT_LEVEL = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|FATAL|PANIC)\b", re.I
)
_LEVELS = {
    "warning": "warn",
    "err": "error",
    "critical": "fatal",
    "panic": "fatal",
    "notice": "info",
    "trace": "debug",
}


def parse_level(message: str) -> str | None:
    """The level of a JSON log line (`level`/`severity`/`lvl`) or of a common text format."""
    text = message.lstrip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("level", "severity", "lvl", "levelname"):
                value = data.get(key)
                if isinstance(value, str) and value:
                    low = value.lower()
                    return _LEVELS.get(low, low)[:8]
    match = _TEXT_LEVEL.search(text[:120])
    if match:
        low = match.group(1).lower()
        return _LEVELS.get(low, low)
    return None


def cut(message: str) -> str:
    if len(message) <= MAX_LINE:
        return message
    return message[:MAX_LINE] + f" … [line cut: {len(message) - MAX_LINE} more characters]"


def clean(message: str) -> str:
    """Storable text: NUL and lone surrogates (undecodable bytes) become U+FFFD, never an
    error that would block the batch; over-long lines are cut, saying so."""
    message = message.replace("\x00", "\ufffd")
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        try:  # undecodable bytes carried as surrogate escapes: decode them as a runtime would
            raw = message.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raw = message.encode("utf-8", "surrogatepass")
        message = raw.decode("utf-8", "replace")
    return cut(message)


# The deployment columns the store keeps its counters in (log_seq, log_offset: updated with
# the lines they count) and copies onto each line. Named here as a plain table, so that the
# log storage does not import the deployments domain.
DEPLOYMENTS = table(
    "deployments",
    column("id", String),
    column("project_id", String),
    column("environment_id", String),
    column("branch", String),
    column("log_seq", BigInteger),
    column("log_offset", BigInteger),
)


# ---- the PostgreSQL store ---------------------------------------------------------------
class PostgresLogStore:
    def __init__(self) -> None:
        self._trigram: bool | None = None  # which keyword index exists; looked up once

    async def append(
        self,
        *,
        session: AsyncSession,
        deployment_id: str,
        lines: list[NewLine],
        offsets: tuple[Offsets, Offsets] | None = None,
    ) -> list[StoredLine]:
        if not lines and offsets is None:
            return []
        stmt = update(DEPLOYMENTS).where(DEPLOYMENTS.c.id == deployment_id)
        values: dict[str, Any] = {"log_seq": DEPLOYMENTS.c.log_seq + len(lines)}
        if offsets is not None:
            stmt = stmt.where(DEPLOYMENTS.c.log_offset == offsets[0].packed())
            values["log_offset"] = offsets[1].packed()
        row = (
            await session.execute(
                stmt.values(**values).returning(
                    DEPLOYMENTS.c.log_seq,
                    DEPLOYMENTS.c.project_id,
                    DEPLOYMENTS.c.environment_id,
                    DEPLOYMENTS.c.branch,
                )
            )
        ).one_or_none()
        if row is None:
            if offsets is not None:
                current = await session.scalar(
                    select(DEPLOYMENTS.c.log_offset).where(DEPLOYMENTS.c.id == deployment_id)
                )
                if current is not None:
                    raise OffsetConflict(Offsets.unpack(current))
            return []  # the deployment is gone, and its lines with it
        last, project_id, environment_id, branch = (
            int(row[0]),
            str(row[1]),
            None if row[2] is None else str(row[2]),
            None if row[3] is None else str(row[3]),
        )
        first = last - len(lines) + 1
        stored = []
        for i, line in enumerate(lines):
            message = clean(line.message)
            stored.append(
                StoredLine(
                    seq=first + i,
                    ts=line.ts,
                    deployment_id=deployment_id,
                    stream=line.stream,
                    phase=line.phase,
                    level=parse_level(message),
                    message=message,
                    environment_id=environment_id,
                    branch=branch,
                    replica=line.replica,
                )
            )
        if stored:
            await _copy(
                session,
                [
                    (
                        x.ts,
                        project_id,
                        deployment_id,
                        environment_id,
                        branch,
                        x.seq,
                        x.stream,
                        x.phase,
                        x.level,
                        x.message,
                        x.replica,
                    )
                    for x in stored
                ],
            )
        return stored

    async def since(
        self, *, session: AsyncSession, deployment_id: str, after_seq: int, limit: int = 5000
    ) -> list[StoredLine]:
        rows = await session.scalars(
            select(LogLine)
            .where(LogLine.deployment_id == deployment_id, LogLine.seq > after_seq)
            .order_by(LogLine.seq)
            .limit(limit)
        )
        return [_stored(r) for r in rows]

    async def tail(
        self, *, session: AsyncSession, deployment_id: str, phases: tuple[str, ...], limit: int
    ) -> list[StoredLine]:
        rows = await session.scalars(
            select(LogLine)
            .where(LogLine.deployment_id == deployment_id, LogLine.phase.in_(phases))
            .order_by(LogLine.seq.desc())
            .limit(limit)
        )
        return [_stored(r) for r in reversed(list(rows))]

    # ---- search ---------------------------------------------------------------------------
    async def query(self, *, session: AsyncSession, project_id: str, query: LogQuery) -> LogPage:
        """One page of a project's matching lines, newest first (within one deployment: in
        its own order). Raises Invalid for a bad regular expression, or for a search running
        longer than SEARCH_TIMEOUT_MS."""
        await session.execute(text(f"SET LOCAL statement_timeout = {SEARCH_TIMEOUT_MS}"))
        # Plan each statement with its actual keyword and bounds.
        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
        pattern = Pattern.parse(query.q) if query.q else None
        matcher = await self._matcher(session, pattern) if pattern else None
        try:
            rows = await Search(session, project_id, query, matcher).run()
        except DBAPIError as exc:
            if sqlstate(exc) == "57014":
                raise Invalid(
                    "the search took too long; narrow it with since/until, a deployment or a "
                    "more specific keyword"
                ) from None
            raise
        page = LogPage(items=[_stored(r) for r in rows[: query.limit]])
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            page.next_cursor = Cursor(ts=last.ts, id=last.id, seq=last.seq).encode()
        return page

    async def _matcher(self, session: AsyncSession, pattern: Pattern) -> Matcher:
        if pattern.regex:
            await check_regex(session, pattern.text)
            return Matcher("iregex" if pattern.ignore_case else "regex", pattern.text)
        if await self._has_trigram(session):
            return Matcher("like", pattern.text)
        words = await session.scalar(
            select(
                func.tsvector_to_array(func.to_tsvector(literal_column("'simple'"), pattern.text))
            )
        )
        if not words:  # punctuation only: nothing the full-text index knows
            return Matcher("contains", pattern.text)
        tsquery = " & ".join(
            "'" + w.replace("\\", "\\\\").replace("'", "''") + "':*" for w in sorted(words)
        )
        return Matcher("words", pattern.text, tsquery)

    async def _has_trigram(self, session: AsyncSession) -> bool:
        if self._trigram is None:
            found = await session.scalar(
                text(
                    "SELECT 1 FROM pg_indexes WHERE tablename = 'log_lines' "
                    "AND indexname = 'ix_log_lines_message_trgm'"
                )
            )
            self._trigram = found is not None
        return self._trigram

    # ---- follow ---------------------------------------------------------------------------
    async def follow(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        redis: Redis,
        deployment_id: str,
        after_seq: int,
        position: str,
        idle: float = 5.0,
    ) -> AsyncGenerator[list[Followed], None]:
        """Stored lines after `after_seq`, then what is published after `position` (a stream
        id taken with `stream_position()` *before* anything was read from PostgreSQL, so
        nothing committed in between is missed). Yields batches; an empty batch means
        `idle` seconds passed with nothing new (PostgreSQL is checked again then)."""
        tail = Tail(self, sessions, deployment_id, after_seq)
        async for batch in tail.drain():
            yield batch
        key = events.deployment_stream(deployment_id)
        while True:
            result = await redis.xread({key: position}, block=int(idle * 1000), count=1000)
            if result:
                entries = result[0][1]
                position = as_str(entries[-1][0])
                async for batch in tail.receive(entries):
                    yield batch
                continue
            quiet = [batch async for batch in tail.drain()]  # in case a publish failed
            for batch in quiet:
                yield batch
            if not quiet:
                yield []

    def stored_after(
        self, *, sessions: async_sessionmaker[AsyncSession], deployment_id: str, after_seq: int
    ) -> AsyncIterator[list[Followed]]:
        """Every stored line after `after_seq`, in pages: what a follower that stops (its
        deployment concluded) had not been brought yet."""
        return Tail(self, sessions, deployment_id, after_seq).drain()


_COPY_COLUMNS = [
    "ts",
    "project_id",
    "deployment_id",
    "environment_id",
    "branch",
    "seq",
    "stream",
    "phase",
    "level",
    "message",
    "replica",
]


async def _copy(session: AsyncSession, records: list[tuple[Any, ...]]) -> None:
    """Bulk-insert with COPY on the session's own connection (so in its transaction): several
    times faster than an INSERT per line, which the shipper feels at high volume."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table("log_lines", records=records, columns=_COPY_COLUMNS)


def _stored(r: LogLine) -> StoredLine:
    return StoredLine(
        seq=r.seq,
        ts=r.ts,
        deployment_id=r.deployment_id,
        stream=r.stream,
        phase=r.phase,
        level=r.level,
        message=r.message,
        environment_id=r.environment_id,
        branch=r.branch,
        replica=r.replica,
    )


def utc(value: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
