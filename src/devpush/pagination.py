"""Keyset cursors over (created_at, id), newest first: opaque to clients, stable under inserts."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_
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
    """The WHERE clause for rows after `cursor` in (created_at desc, id desc) order."""
    created, ident = decode_cursor(cursor)
    return or_(created_col < created, and_(created_col == created, id_col < ident))
