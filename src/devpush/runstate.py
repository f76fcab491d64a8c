"""Where a running embedded platform says what it started: URLs, ports and child pids.

`devpush up` writes `<data dir>/run/state.json`; server-side CLI commands run with the same
DEVPUSH_DATA_DIR read it, so they reach the same database and Redis. The URLs carry the
passwords of the platform's database role and of Redis, so the file is a secret: mode 0600 in
a 0700 directory, like everything under the data directory (SECURITY.md).

A core module (it needs only the settings): the platform, the runtimes and the CLI all find
the database and Redis through `database_url`/`redis_url` here.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devpush.settings import Settings


@dataclass
class PlatformState:
    database_url: str
    redis_url: str
    supervisor_pid: int | None = None
    children: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)


def state_path(settings: Settings) -> Path:
    return settings.data_path / "run" / "state.json"


def read_state(settings: Settings) -> PlatformState | None:
    path = state_path(settings)
    try:
        return PlatformState(**json.loads(path.read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def write_state(settings: Settings, state: PlatformState) -> None:
    path = state_path(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a .tmp left by an older version may have been 0644
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(asdict(state), indent=2))
    os.replace(tmp, path)


def embedded_password(settings: Settings, service: str) -> str:
    """The generated password of an embedded service (secrets/<service>_password, 0600):
    `db` is PostgreSQL's superuser (the launcher, to set the database up, and managed
    databases, to make their databases and roles),
    `db_app` the platform's own role, `redis` Redis's."""
    path = settings.data_path / "secrets" / f"{service}_password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(24))
    return path.read_text().strip()


# The platform's role in the embedded PostgreSQL: it owns the database and its schema, and is
# no superuser (a superuser runs programs on the host through `COPY … FROM PROGRAM`).
APP_ROLE = "devpush"
APP_DATABASE = "devpush"
# The group of every managed database's role (databases/server.py), named in pg_hba.conf.
TENANTS_ROLE = "devpush_tenants"


def embedded_database_url(settings: Settings) -> str:
    """What the platform uses: its own role, never the superuser."""
    password = embedded_password(settings, "db_app")
    port = settings.embedded_db_port
    return f"postgresql+asyncpg://{APP_ROLE}:{password}@127.0.0.1:{port}/{APP_DATABASE}"


def embedded_redis_url(settings: Settings) -> str:
    password = embedded_password(settings, "redis")
    return f"redis://:{password}@127.0.0.1:{settings.embedded_redis_port}/0"


def database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    state = read_state(settings)
    return state.database_url if state else embedded_database_url(settings)


def redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    state = read_state(settings)
    return state.redis_url if state else embedded_redis_url(settings)


def _embedded_database(settings: Settings) -> bool:
    """Whether the platform's PostgreSQL is the embedded one (`up` hands its children the
    embedded URL as DEVPUSH_DATABASE_URL)."""
    if not settings.database_url:
        return True
    return (settings.data_path / "secrets" / "db_app_password").is_file() and (
        settings.database_url == embedded_database_url(settings)
    )


def databases_admin_url(settings: Settings) -> str | None:
    """Where projects' managed PostgreSQL databases are made, as a role that may create
    databases and roles: DEVPUSH_DATABASES_ADMIN_URL, or the embedded PostgreSQL's superuser
    (None: neither, as in compose mode without the setting)."""
    if settings.databases_admin_url:
        return settings.databases_admin_url
    if not _embedded_database(settings):
        return None
    password = embedded_password(settings, "db")
    return f"postgresql://postgres:{password}@127.0.0.1:{settings.embedded_db_port}/postgres"


def databases_endpoint(settings: Settings) -> tuple[str, int] | None:
    """(host, port) at which apps reach their managed PostgreSQL; host "" is this machine
    (each runtime knows its own address for it)."""
    from urllib.parse import urlsplit

    if settings.databases_admin_url:
        url = urlsplit(settings.databases_admin_url)
        host, port = settings.databases_host or url.hostname or "", url.port or 5432
    elif not _embedded_database(settings):
        return None
    else:
        host, port = settings.databases_host or "", settings.embedded_db_port
    if host in ("localhost", "127.0.0.1", "::1"):
        host = ""
    return host, port
