"""Shapes of the database console: tables, a page of a table's rows, and a SQL statement with
its result. Values are JSON-safe (anything but null, booleans, numbers and text is text)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_SQL = 20_000


class TableRead(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    schema_: str = Field(alias="schema")
    name: str
    key: str = Field(description="What GET .../tables/{table} takes: name, or schema.name")
    kind: str = Field(description="table, view, materialized view, foreign table")
    estimated_rows: int | None = Field(description="postgres: the planner's estimate")


class RowsPage(BaseModel):
    table: str
    columns: list[str]
    rows: list[list[Any]]
    limit: int
    offset: int
    has_more: bool


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(min_length=1, max_length=MAX_SQL, description="One SQL statement")
    environment: str = Field("production", min_length=1, max_length=63)
    write: bool = Field(
        False, description="Run it read-write (admins); otherwise a read-only transaction"
    )


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="More rows than the console returns (500)")
    rowcount: int | None = Field(description="Rows returned, or changed when the status says")
    status: str = Field(description="The database's status of the statement, e.g. INSERT 0 1")
    elapsed_ms: float
