"""pg_dump and psql get the database's address in argv, where every local user can read it in
the process list; its password must travel only in PGPASSWORD."""

from __future__ import annotations

from devpush.backup.postgres import libpq_url


def test_the_password_leaves_the_url_for_the_environment() -> None:
    url, env = libpq_url("postgresql+asyncpg://devpush:s3cret@db.local:5433/devpush")
    assert url == "postgresql://devpush@db.local:5433/devpush"
    assert "s3cret" not in url and env == {"PGPASSWORD": "s3cret"}


def test_a_url_without_a_password_needs_no_environment() -> None:
    assert libpq_url("postgresql+asyncpg://postgres@127.0.0.1:5432/x") == (
        "postgresql://postgres@127.0.0.1:5432/x",
        {},
    )
