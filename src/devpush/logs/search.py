"""Log search: what a query asks for, and how the newest matching lines are found fast.

query() searches a project's lines newest first, paged backwards with a cursor (see Search
for how it stays fast whether a match is common or rare). A keyword is matched ignoring case:
- with pg_trgm (a system PostgreSQL), anywhere in the line, through the trigram index;
- without it (the embedded PostgreSQL has no contrib), through the full-text index: the
  keyword's words must start words of the line ("timeout" finds "timeouts" and "Timeout:",
  not "ReadTimeout"); the line must still contain the keyword as typed.
`/re/` is a PostgreSQL regular expression (`/re/i` ignores case); no index helps it, so it
reads lines: narrow it with since/until or a deployment on a large project.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, cast, func, literal_column, or_, select, text
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from devpush.errors import Invalid
from devpush.logs.models import LogLine

SCAN_ROWS = 5_000  # newest lines read in order before the indexes are asked
MAX_SCAN = 200_000
DENSE = 0.005  # matches per line above which reading on in order beats fetching every match
FIRST_WINDOW = timedelta(days=1)


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


@dataclass(frozen=True)
class Matcher:
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


class Search:
    """Finds the newest matching lines without trusting the planner's guess of how common a
    keyword is (a wrong guess walks millions of lines, or fetches every match to sort them):

    1. read the newest SCAN_ROWS lines of the scope in order and keep the matches;
    2. if matches were dense there, read on in order, as far as the density says is needed;
    3. otherwise fetch matches through the indexes (bitmap scans only), one time window at a
       time (a day, then doubling) going back, so a common match costs one window, not all.

    Within one deployment the order is its sequence; otherwise timestamp, then id.
    """

    def __init__(
        self, session: AsyncSession, project_id: str, query: LogQuery, matcher: Matcher | None
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


async def check_regex(session: AsyncSession, pattern: str) -> None:
    """PostgreSQL runs the expression, so PostgreSQL judges it (its syntax is not Python's)."""
    try:
        async with session.begin_nested():
            await session.execute(select(literal_column("''").op("~")(pattern)))
    except DBAPIError as exc:
        if sqlstate(exc) == "2201B":
            detail = str(exc.orig).split(":", 1)[-1].strip().splitlines()[0]
            raise Invalid(f"q: invalid regular expression ({detail[:200]})") from None
        raise


def sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)
