"""Deployment lists: the API's page (plain tuples, its JSON columns passed through as stored)
and the pages' (ORM objects), newest first, paged by keyset cursor, filtered by branch,
environment or status. The API's list is its busiest read (bench/control_plane.py)."""

from __future__ import annotations

from collections import namedtuple
from functools import lru_cache
from typing import Any, NamedTuple, TypeVarTuple

import orjson
from sqlalchemy import Select, Text, bindparam, cast, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.deployments.models import Conclusion, Deployment, InstanceHealth, Status
from devpush.errors import Invalid
from devpush.pagination import decode_cursor, encode_cursor
from devpush.projects.models import Environment


class EnvironmentRef(NamedTuple):
    id: str
    slug: str
    is_production: bool


# The columns the API shows (DeploymentRead); the list reads only these, without ORM objects.
LISTED_COLUMNS = (
    Deployment.id,
    Deployment.project_id,
    Deployment.environment_id,
    Deployment.branch,
    Deployment.commit_sha,
    Deployment.commit_message,
    Deployment.commit_author,
    Deployment.trigger,
    Deployment.pr_number,
    Deployment.status,
    Deployment.conclusion,
    Deployment.error,
    Deployment.instance_health,
    Deployment.exit_code,
    Deployment.crash_log,
    Deployment.upstream,  # with replicas: how many instances serve it (DeploymentRead)
    Deployment.replicas,
    Deployment.runtime,
    Deployment.config,
    Deployment.created_at,
    Deployment.prepare_started_at,
    Deployment.deploy_started_at,
    Deployment.ready_at,
    Deployment.concluded_at,
    Deployment.timings,
)
# A row of LISTED_COLUMNS as a plain named tuple: reading a field of it costs a tenth of
# reading one of SQLAlchemy's Row, and a page reads about 35 per item.
ListedDeployment = namedtuple(  # type: ignore[misc]  # fields from LISTED_COLUMNS
    "ListedDeployment", [c.key for c in LISTED_COLUMNS]
)

# JSON columns the list copies into its answer as they are stored: read as text and handed to
# orjson as a Fragment, never parsed into dicts only to be encoded again.
STORED_AS_IS = frozenset({"config", "timings", "crash_log"})
_STORED_AT = [i for i, c in enumerate(LISTED_COLUMNS) if c.key in STORED_AS_IS]
_LISTED = select(
    *(cast(c, Text).label(c.key) if c.key in STORED_AS_IS else c for c in LISTED_COLUMNS),
    Environment.slug,
    Environment.is_production.label("is_production"),
).outerjoin(Environment, Environment.id == Deployment.environment_id)
_FULL = select(Deployment)  # the pages' lists: ORM objects

Cols = TypeVarTuple("Cols")


def _page_filter(
    stmt: Select[*Cols],
    *,
    project_id: str,
    limit: int,
    cursor: str | None,
    branch: str | None,
    environment_id: str | None,
    status: str | None,
) -> tuple[Select[*Cols], dict[str, Any]]:
    """The page's statement and its parameters. Statements are built once per shape (which
    filters are set) with bound parameters, so that a request neither builds nor looks up a
    new one: SQLAlchemy keys its compiled form on the statement object."""
    params: dict[str, Any] = {"project_id": project_id, "limit": limit + 1}
    if cursor:
        params["cursor_created"], params["cursor_id"] = decode_cursor(cursor)
    if branch:
        params["branch"] = branch
    if environment_id:
        params["environment_id"] = environment_id
    column = _status_column(status)
    if column is not None:
        params["status"] = status
    shape = (bool(cursor), bool(branch), bool(environment_id), column)
    return _page_statement(stmt, *shape), params


def _status_column(status: str | None) -> str | None:
    """The column a status filter reads, or None without one; Invalid for an unknown one."""
    if status in {h.value for h in InstanceHealth}:
        return "instance_health"
    if status in {c.value for c in Conclusion}:
        return "conclusion"
    if status in {s.value for s in Status}:
        return "status"
    if status:
        raise Invalid(f"unknown status filter {status[:40]!r}")
    return None


@lru_cache(maxsize=64)  # per base statement and shape: a few dozen at most
def _page_statement(
    stmt: Select[*Cols], cursor: bool, branch: bool, environment: bool, status: str | None
) -> Select[*Cols]:
    stmt = stmt.where(Deployment.project_id == bindparam("project_id"))
    if cursor:  # the row comparison of pagination.older_than, with bound parameters
        after = tuple_(
            bindparam("cursor_created", type_=Deployment.created_at.type),
            bindparam("cursor_id", type_=Deployment.id.type),
        )
        stmt = stmt.where(tuple_(Deployment.created_at, Deployment.id) < after)
    if branch:
        stmt = stmt.where(Deployment.branch == bindparam("branch"))
    if environment:
        stmt = stmt.where(Deployment.environment_id == bindparam("environment_id"))
    if status is not None:
        stmt = stmt.where(getattr(Deployment, status) == bindparam("status"))
    ordered = stmt.order_by(Deployment.created_at.desc(), Deployment.id.desc())
    return ordered.limit(bindparam("limit"))


def _cursor_after(rows: list[Deployment] | list[Any], limit: int) -> str | None:
    last = rows[limit - 1] if len(rows) > limit else None
    return encode_cursor(last.created_at, last.id) if last else None


async def list_page(
    *,
    session: AsyncSession,
    project_id: str,
    limit: int = 20,
    cursor: str | None = None,
    branch: str | None = None,
    environment_id: str | None = None,
    status: str | None = None,
) -> tuple[list[Deployment], str | None]:
    stmt, params = _page_filter(
        _FULL,
        project_id=project_id,
        limit=limit,
        cursor=cursor,
        branch=branch,
        environment_id=environment_id,
        status=status,
    )
    rows = list(await session.scalars(stmt, params))
    return rows[:limit], _cursor_after(rows, limit)


async def list_with_environments(
    *,
    session: AsyncSession,
    project_id: str,
    limit: int = 20,
    cursor: str | None = None,
    branch: str | None = None,
    environment_id: str | None = None,
    status: str | None = None,
) -> tuple[list[tuple[Any, EnvironmentRef | None]], str | None]:
    """The API's page: each deployment (a ListedDeployment) with its environment (for the
    alias URLs), in one query. Plain tuples, not ORM objects: the list is the busiest read of
    the API, and building ORM objects was most of its cost (bench/control_plane.py)."""
    stmt, params = _page_filter(
        _LISTED,
        project_id=project_id,
        limit=limit,
        cursor=cursor,
        branch=branch,
        environment_id=environment_id,
        status=status,
    )
    columns = len(LISTED_COLUMNS)
    page = []
    # On the session's connection, not through the ORM: plain rows need none of its
    # per-statement work (a third of the query's client time).
    connection = await session.connection()
    for row in await connection.execute(stmt, params):
        values = list(row[:columns])
        for i in _STORED_AT:
            values[i] = stored_json(values[i])
        deployment: Any = ListedDeployment._make(values)
        slug, is_production = row[columns:]
        environment = EnvironmentRef(deployment.environment_id, slug, is_production)
        page.append((deployment, environment if slug else None))
    return page[:limit], _cursor_after([d for d, _ in page], limit)


def stored_json(text: str | None) -> orjson.Fragment | None:
    """A JSON column's stored text as a Fragment that orjson writes out as it is; None for
    SQL NULL and JSON null, as the ORM reads them. PostgreSQL's `json` type keeps only valid
    JSON, so the text needs no check, and its numbers keep every digit."""
    if text is None or text == "null":
        return None
    return orjson.Fragment(text)
