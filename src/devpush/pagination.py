"""Keyset cursors over (created_at, id), newest first: opaque to clients, stable under inserts."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import tuple_
from sqlalchemy.sql.elements import ColumnElement

from devpush.errors import Invalid


def encode_cursor(created_at: datetime, ident: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{ident}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, ident = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), ident
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the cursor is malformed; use next_cursor from the previous page") from None


def older_than(cursor: str, created_col: Any, id_col: Any) -> ColumnElement[bool]:
    """The WHERE clause for rows after `cursor` in (created_at desc, id desc) order.

    A row comparison, not `created < c OR (created = c AND id < i)`: PostgreSQL turns the row
    form into an index range on (…, created_at), so a deep page reads ~limit rows; the OR form
    made it bitmap-scan and sort every older row (EXPLAIN ANALYZE, 10,000 deployments)."""
    created, ident = decode_cursor(cursor)
    return tuple_(created_col, id_col) < tuple_(created, ident)
