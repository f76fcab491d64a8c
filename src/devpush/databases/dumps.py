"""Copying a managed database to and from a file: pg_dump/pg_restore (custom format) for
PostgreSQL, SQLite's online backup API for SQLite. Every failure is a DumpFailed with one line
for people; the admin password travels in PGPASSWORD, never in argv."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from devpush import pgtools
from devpush.databases import server, service

PAGES = 256  # SQLite pages copied per step, between checks of the deadline


class DumpFailed(Exception):
    """A backup or restore did not complete; the message is one line for people."""


def one_line(text: str, limit: int = 300) -> str:
    """The line of a tool's output that says what went wrong (its `error:` line, or the
    last), whitespace collapsed and cut to `limit`."""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    chosen = next((line for line in lines if "error:" in line.lower()), lines[-1] if lines else "")
    return chosen[:limit] or "no output"


def libpq(admin_url: str, database: str) -> tuple[str, dict[str, str]]:
    """The admin's URL on `database`, without the password (which goes in the env)."""
    parts = urlsplit(admin_url)
    user = quote(unquote(parts.username or "postgres"), safe="")
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    url = f"postgresql://{user}@{host}:{parts.port or 5432}/{quote(database, safe='')}"
    if parts.query:
        url += f"?{parts.query}"
    env = {"PGCONNECT_TIMEOUT": "10"}
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    return url, env


async def _run(argv: list[str], env: dict[str, str], timeout: float, what: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise DumpFailed(f"{what} took longer than {timeout:.0f}s and was stopped") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise DumpFailed(f"{what} failed: {one_line(stderr.decode(errors='replace'))}")


async def _tool(admin_url: str, name: str, path_first: bool) -> str:
    async with server.connect(admin_url) as conn:
        version = int(await conn.fetchval("SHOW server_version_num"))
    return await asyncio.to_thread(pgtools.find, name, version // 10000, path_first=path_first)


async def pg_dump(
    admin_url: str, db_name: str, dest: Path, *, timeout: float, path_first: bool
) -> None:
    """The copy's database, as the admin, into `dest` (made 0600 first, pg_dump keeps it)."""
    async with server.connect(admin_url) as conn:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", db_name):
            raise DumpFailed(f"the database {db_name} is missing from the server")
    tool = await _tool(admin_url, "pg_dump", path_first)
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    url, env = libpq(admin_url, db_name)
    argv = [tool, "--format=custom", "--no-password", f"--file={dest}", f"--dbname={url}"]
    await _run(argv, env, timeout, "pg_dump")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def pg_restore(
    admin_url: str, db_name: str, dump: Path, *, timeout: float, path_first: bool
) -> None:
    """Replace the copy's schemas with the dump's, in one transaction (on any error the
    database is left as it was), as the copy's role so that it owns what is restored."""
    async with server.connect(admin_url, db_name) as conn:
        schemas = list(
            await conn.fetchval(
                "SELECT coalesce(array_agg(nspname ORDER BY nspname), '{}') FROM pg_namespace n "
                "JOIN pg_roles r ON r.oid = n.nspowner WHERE r.rolname = $1",
                db_name,
            )
        )
    pg_restore_bin = await _tool(admin_url, "pg_restore", path_first)
    psql = await _tool(admin_url, "psql", path_first)
    url, env = libpq(admin_url, db_name)
    prepare = [f"SET ROLE {_quoted(db_name)};"]
    if schemas:
        prepare.append(f"DROP SCHEMA {', '.join(_quoted(s) for s in schemas)} CASCADE;")
    prepare.append("CREATE SCHEMA IF NOT EXISTS public;")
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=dump.parent) as tmp:
        script = Path(tmp) / "restore.sql"
        argv = [pg_restore_bin, "--no-owner", "--no-acl", f"--file={script}", str(dump)]
        await _run(argv, env, timeout, "pg_restore (reading the backup)")
        argv = [
            psql,
            "--no-psqlrc",
            "--quiet",
            "--no-password",
            "--single-transaction",
            "--set=ON_ERROR_STOP=1",
            f"--command={' '.join(prepare)}",
            f"--file={script}",
            f"--dbname={url}",
        ]
        await _run(argv, env, timeout, "restoring the backup")


def _copy_sqlite(source: sqlite3.Connection, target: sqlite3.Connection, timeout: float) -> None:
    deadline = time.monotonic() + timeout

    def progress(status: int, remaining: int, total: int) -> None:
        if time.monotonic() > deadline:
            raise DumpFailed(f"copying the SQLite file took longer than {timeout:.0f}s")

    source.backup(target, pages=PAGES, progress=progress)


def _refuse_links(live: Path) -> None:
    link = service.sqlite_link(live)
    if link is not None:
        raise DumpFailed(f"{link} is a symbolic link; backups read and write only files")


def sqlite_dump(live: Path, dest: Path, *, timeout: float) -> None:
    """A consistent copy of the live file, even while the app writes to it."""
    _refuse_links(live)
    if not live.is_file():
        raise DumpFailed(f"there is no SQLite file at {live} yet")
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    try:
        with contextlib.closing(sqlite3.connect(f"{live.as_uri()}?mode=ro", uri=True)) as src:
            with contextlib.closing(sqlite3.connect(dest)) as dst:
                _copy_sqlite(src, dst, timeout)
    except sqlite3.Error as exc:
        raise DumpFailed(f"copying the SQLite file failed: {one_line(str(exc))}") from None


def sqlite_restore(backup: Path, live: Path, *, timeout: float) -> None:
    """The backup's pages into the live file, under SQLite's locks (apps see the old or the
    new database, never a mix). A file made here is given the volume directory's owner."""
    _refuse_links(live)
    existed = live.exists()
    try:
        with contextlib.closing(sqlite3.connect(f"{backup.as_uri()}?mode=ro", uri=True)) as src:
            with contextlib.closing(sqlite3.connect(live)) as dst:
                _copy_sqlite(src, dst, timeout)
    except sqlite3.Error as exc:
        raise DumpFailed(f"restoring the SQLite file failed: {one_line(str(exc))}") from None
    if not existed and os.geteuid() == 0:
        owner = live.parent.stat()
        os.chown(live, owner.st_uid, owner.st_gid)
