"""The log store protocol and its PostgreSQL implementation (the default).

append() writes a batch and assigns per-deployment sequence numbers (the SSE event ids) in
the same transaction that advances the deployment's counters. A shipper passes the runtime
offsets it expects and the ones it reaches, so a batch is stored exactly once even when the
shipper restarts, a commit's outcome was lost, or two shippers race.

query() searches a project's lines newest first, paged backwards with a cursor (see _Search
for how it stays fast whether a match is common or rare). A keyword is matched ignoring case:
- with pg_trgm (a system PostgreSQL), anywhere in the line, through the trigram index;
- without it (the embedded PostgreSQL has no contrib), through the full-text index: the
  keyword's words must start words of the line ("timeout" finds "timeouts" and "Timeout:",
  not "ReadTimeout"); the line must still contain the keyword as typed.
`/re/` is a PostgreSQL regular expression (`/re/i` ignores case); no index helps it, so it
reads lines: narrow it with since/until or a deployment on a large project.

follow() reads stored lines after a sequence number, then tails the deployment's Redis
Stream (written after every commit: `status`, `log` and `logs` batch entries), deduplicating
by sequence number and filling any gap (a trimmed stream, a lost publish) from PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import (
    ColumnElement,
    and_,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from devpush import events
from devpush.deployments.models import Deployment
from devpush.errors import Invalid
from devpush.logs.models import LogLine
from devpush.settings import Settings

MAX_LINE = 16_384
FOLLOW_PAGE = 5_000
LEVELS = ("debug", "info", "warn", "error", "fatal")
SEARCH_TIMEOUT_MS = 10_000


# ---- data ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NewLine:
    ts: datetime
    stream: str
    phase: str
    message: str


@dataclass(frozen=True)
class StoredLine:
    seq: int
    ts: datetime
    deployment_id: str
    stream: str
    phase: str
    level: str | None
    message: str
    environment_id: str | None = None
    branch: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "ts": self.ts.isoformat(),
            "deployment_id": self.deployment_id,
            "environment_id": self.environment_id,
            "branch": self.branch,
            "stream": self.stream,
            "phase": self.phase,
            "level": self.level,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredLine:
        return cls(
            seq=int(data["seq"]),
            ts=datetime.fromisoformat(data["ts"]),
            deployment_id=data["deployment_id"],
            stream=data["stream"],
            phase=data["phase"],
            level=data.get("level"),
            message=data["message"],
            environment_id=data.get("environment_id"),
            branch=data.get("branch"),
        )


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


@dataclass(frozen=True)
class Cursor:
    """A position in search results: the last line of a page."""

    ts: datetime
    id: int
    seq: int

    def encode(self) -> str:
        raw = f"{self.ts.isoformat()}|{self.id}|{self.seq}"
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            ts, ident, seq = raw.split("|")
            parsed = datetime.fromisoformat(ts)
            if parsed.tzinfo is None:
                raise ValueError("naive timestamp")
            return cls(ts=parsed, id=int(ident), seq=int(seq))
        except (ValueError, UnicodeDecodeError):
            raise Invalid(
                "before_cursor is malformed; pass next_cursor from the previous page"
            ) from None


@dataclass(frozen=True)
class Pattern:
    """What `q` asks for: a keyword, or a regular expression written `/re/` or `/re/i`."""

    text: str
    regex: bool = False
    ignore_case: bool = True

    @classmethod
    def parse(cls, q: str) -> Pattern | None:
        if q.startswith("/") and len(q) >= 2 and (q.endswith("/") or q.endswith("/i")):
            ignore_case = q.endswith("/i") and len(q) >= 3
            body = q[1:-2] if ignore_case else q[1:-1]
            if not body:
                raise Invalid("q: the regular expression is empty")
            return cls(text=body, regex=True, ignore_case=ignore_case)
        keyword = q.strip()
        if "\x00" in keyword:
            raise Invalid("q: must not contain NUL")
        return cls(text=keyword) if keyword else None


@dataclass(frozen=True)
class LogQuery:
    q: str | None = None
    levels: tuple[str, ...] = ()
    deployment_id: str | None = None
    environment_id: str | None = None
    branch: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: Cursor | None = None
    limit: int = 100


@dataclass
class LogPage:
    items: list[StoredLine] = field(default_factory=list)
    next_cursor: str | None = None


# Followed events: a stored line, or a deployment status payload (see flows.status_payload).
@dataclass(frozen=True)
class StatusChange:
    payload: dict[str, Any]


Followed = StoredLine | StatusChange


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
        stmt = update(Deployment).where(Deployment.id == deployment_id)
        values: dict[str, Any] = {"log_seq": Deployment.log_seq + len(lines)}
        if offsets is not None:
            stmt = stmt.where(Deployment.log_offset == offsets[0].packed())
            values["log_offset"] = offsets[1].packed()
        row = (
            await session.execute(
                stmt.values(**values).returning(
                    Deployment.log_seq,
                    Deployment.project_id,
                    Deployment.environment_id,
                    Deployment.branch,
                )
            )
        ).one_or_none()
        if row is None:
            if offsets is not None:
                current = await session.scalar(
                    select(Deployment.log_offset).where(Deployment.id == deployment_id)
                )
                if current is not None:
                    raise OffsetConflict(Offsets.unpack(current))
            return []  # the deployment is gone, and its lines with it
        last, project_id, environment_id, branch = row
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
            rows = await _Search(session, project_id, query, matcher).run()
        except DBAPIError as exc:
            if _sqlstate(exc) == "57014":
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

    async def _matcher(self, session: AsyncSession, pattern: Pattern) -> _Matcher:
        if pattern.regex:
            await _check_regex(session, pattern.text)
            return _Matcher("iregex" if pattern.ignore_case else "regex", pattern.text)
        if await self._has_trigram(session):
            return _Matcher("like", pattern.text)
        words = await session.scalar(
            select(
                func.tsvector_to_array(func.to_tsvector(literal_column("'simple'"), pattern.text))
            )
        )
        if not words:  # punctuation only: nothing the full-text index knows
            return _Matcher("contains", pattern.text)
        tsquery = " & ".join(
            "'" + w.replace("\\", "\\\\").replace("'", "''") + "':*" for w in sorted(words)
        )
        return _Matcher("words", pattern.text, tsquery)

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
        tail = _Tail(self, sessions, deployment_id, after_seq)
        async for batch in tail.drain():
            yield batch
        key = events.deployment_stream(deployment_id)
        while True:
            result = await redis.xread({key: position}, block=int(idle * 1000), count=1000)
            if result:
                entries = result[0][1]
                position = _text(entries[-1][0])
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
        return _Tail(self, sessions, deployment_id, after_seq).drain()


class _Tail:
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
        kind = _text(fields.get(b"type", b""))
        data = json.loads(fields.get(b"data", b"null"))
        if kind == "status":
            items.append(StatusChange(data))
        elif kind == "log":
            items.append(data)
        elif kind == "logs":
            items.extend(data)
    return items


# ---- search strategy --------------------------------------------------------------------
SCAN_ROWS = 5_000  # newest lines read in order before the indexes are asked
MAX_SCAN = 200_000
DENSE = 0.005  # matches per line above which reading on in order beats fetching every match
FIRST_WINDOW = timedelta(days=1)


@dataclass(frozen=True)
class _Matcher:
    """The keyword or expression condition, for the table or for a subquery over it."""

    kind: str  # like | words | contains | regex | iregex
    text: str
    tsquery: str = ""

    def conditions(self, t: Any) -> list[ColumnElement[bool]]:
        if self.kind == "regex":
            return [t.message.op("~")(self.text)]
        if self.kind == "iregex":  # on lower(): the trigram index, where there is one, applies
            return [func.lower(t.message).op("~*")(self.text)]
        if self.kind == "like":
            like = "%" + re.sub(r"([\\%_])", r"\\\1", self.text) + "%"
            return [func.lower(t.message).like(func.lower(like), escape="\\")]
        contains = func.strpos(func.lower(t.message), func.lower(self.text)) > 0
        if self.kind == "contains":
            return [contains]
        document = func.to_tsvector(literal_column("'simple'::regconfig"), t.message)
        return [contains, document.op("@@")(cast(self.tsquery, TSQUERY))]


class _Search:
    """Finds the newest matching lines without trusting the planner's guess of how common a
    keyword is (a wrong guess walks millions of lines, or fetches every match to sort them):

    1. read the newest SCAN_ROWS lines of the scope in order and keep the matches;
    2. if matches were dense there, read on in order, as far as the density says is needed;
    3. otherwise fetch matches through the indexes (bitmap scans only), one time window at a
       time (a day, then doubling) going back, so a common match costs one window, not all.

    Within one deployment the order is its sequence; otherwise timestamp, then id.
    """

    def __init__(
        self, session: AsyncSession, project_id: str, query: LogQuery, matcher: _Matcher | None
    ) -> None:
        self.session, self.project_id, self.query, self.matcher = (
            session,
            project_id,
            query,
            matcher,
        )
        self.by_seq = query.deployment_id is not None
        self.want = query.limit + 1

    def scope(self, t: Any) -> list[ColumnElement[bool]]:
        """Conditions that keep the ordered index walk the natural plan."""
        q = self.query
        where: list[ColumnElement[bool]] = [t.project_id == self.project_id]
        if q.deployment_id:
            where.append(t.deployment_id == q.deployment_id)
        if q.since:
            where.append(t.ts >= q.since)
        if q.until:
            where.append(t.ts <= q.until)
        if q.before:
            where += self.older_than(t, q.before)
        return where

    def filters(self, t: Any) -> list[ColumnElement[bool]]:
        q = self.query
        where: list[ColumnElement[bool]] = []
        if q.levels:
            where.append(t.level.in_(q.levels))
        if q.environment_id:
            where.append(t.environment_id == q.environment_id)
        if q.branch:
            where.append(t.branch == q.branch)
        if self.matcher:
            where += self.matcher.conditions(t)
        return where

    def order(self, t: Any) -> list[Any]:
        return [t.seq.desc()] if self.by_seq else [t.ts.desc(), t.id.desc()]

    def older_than(self, t: Any, c: Cursor) -> list[ColumnElement[bool]]:
        if self.by_seq:
            return [t.seq < c.seq]
        # the plain `ts <=` lets PostgreSQL skip newer partitions
        return [t.ts <= c.ts, or_(t.ts < c.ts, and_(t.ts == c.ts, t.id < c.id))]

    async def run(self) -> list[LogLine]:
        rows, edge = await self._read_in_order(SCAN_ROWS, [])
        if len(rows) >= self.want or edge is None:
            return rows
        density = len(rows) / SCAN_ROWS
        bound = self.older_than(LogLine, edge)
        if density >= DENSE:
            size = min(int((self.want - len(rows)) / density * 2) + 1, MAX_SCAN)
            more, edge = await self._read_in_order(size, bound)
            rows += more
            if len(rows) >= self.want or edge is None:
                return rows
            bound = self.older_than(LogLine, edge)
        return rows + await self._fetch_matches(bound, self.want - len(rows))

    async def _read_in_order(
        self, size: int, bound: list[ColumnElement[bool]]
    ) -> tuple[list[LogLine], Cursor | None]:
        """Matches among the `size` newest lines of the scope (past `bound`), and the last of
        those lines (None when there were fewer: the scope is exhausted)."""
        scope = [*self.scope(LogLine), *bound]
        edge_row = (
            await self.session.execute(
                select(LogLine.ts, LogLine.id, LogLine.seq)
                .where(*scope)
                .order_by(*self.order(LogLine))
                .offset(size - 1)
                .limit(1)
            )
        ).one_or_none()
        newest = select(LogLine).where(*scope).order_by(*self.order(LogLine)).limit(size)
        recent = aliased(LogLine, newest.subquery())
        rows = await self.session.scalars(
            select(recent)
            .where(*self.filters(recent))
            .order_by(*self.order(recent))
            .limit(self.want)
        )
        edge = Cursor(*edge_row) if edge_row else None
        return list(rows), edge

    async def _fetch_matches(self, bound: list[ColumnElement[bool]], need: int) -> list[LogLine]:
        scope = [*self.scope(LogLine), *bound]
        where = [*scope, *self.filters(LogLine)]
        if self.by_seq:
            return await self._bitmap(where, need)
        # the time span left to search (both ends read off the time index at once)
        oldest = await self.session.scalar(select(func.min(LogLine.ts)).where(*scope))
        newest = await self.session.scalar(select(func.max(LogLine.ts)).where(*scope))
        if oldest is None or newest is None:
            return []
        rows: list[LogLine] = []
        hi, width, window = newest, FIRST_WINDOW, [LogLine.ts <= newest]
        while len(rows) < need:
            lo = hi - width
            if lo <= oldest:
                return rows + await self._bitmap([*where, *window], need - len(rows))
            rows += await self._bitmap([*where, *window, LogLine.ts >= lo], need - len(rows))
            hi, width, window = lo, width * 2, [LogLine.ts < lo]
        return rows

    async def _bitmap(self, where: list[ColumnElement[bool]], need: int) -> list[LogLine]:
        """Rows through bitmap scans of the indexes (keyword, deployment), sorted: never a walk
        of the time index hoping to meet matches early."""
        await self.session.execute(text("SET LOCAL enable_indexscan = off"))
        stmt = select(LogLine).where(*where).order_by(*self.order(LogLine)).limit(need)
        rows = list(await self.session.scalars(stmt))
        await self.session.execute(text("SET LOCAL enable_indexscan = on"))
        return rows


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
]


async def _copy(session: AsyncSession, records: list[tuple[Any, ...]]) -> None:
    """Bulk-insert with COPY on the session's own connection (so in its transaction): several
    times faster than an INSERT per line, which the shipper feels at high volume."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    await driver.copy_records_to_table("log_lines", records=records, columns=_COPY_COLUMNS)


async def stream_position(redis: Redis, key: str) -> str:
    """The id of the last entry of a Redis Stream ("0-0" when empty): read from there on to
    get everything published after this call."""
    entries = await redis.xrevrange(key, count=1)
    return _text(entries[0][0]) if entries else "0-0"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    )


async def _check_regex(session: AsyncSession, pattern: str) -> None:
    """PostgreSQL runs the expression, so PostgreSQL judges it (its syntax is not Python's)."""
    try:
        async with session.begin_nested():
            await session.execute(select(literal_column("''").op("~")(pattern)))
    except DBAPIError as exc:
        if _sqlstate(exc) == "2201B":
            detail = str(exc.orig).split(":", 1)[-1].strip().splitlines()[0]
            raise Invalid(f"q: invalid regular expression ({detail[:200]})") from None
        raise


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def utc(value: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
