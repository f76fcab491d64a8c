"""Real PostgreSQL and Redis for the tests.

DEVPUSH_TEST_DATABASE_URL / DEVPUSH_TEST_REDIS_URL are used when set (a fresh database is
created on that server for the run); otherwise both are started with the embedded launcher.
Every test gets empty tables and an empty Redis database.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

os.environ.setdefault("DEVPUSH_ENCRYPTION_KEYS", Fernet.generate_key().decode())
os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")

from devpush.bootstrap import build_platform  # noqa: E402
from devpush.platform import Platform
from devpush.runstate import embedded_password  # noqa: E402
from devpush.settings import Settings  # noqa: E402
from devpush.subscribers import delivering_events, dispatcher  # noqa: E402


def all_tables() -> str:
    """Every table of the models, for emptying between tests."""
    from devpush.db import Base
    from devpush.models import all_models

    all_models()
    return ", ".join(t.name for t in Base.metadata.sorted_tables)


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, from 10000-19999: below the kernel's ephemeral range
    (32768+), so an outgoing connection can't take it between this check and the bind, and
    below the process runtime's app ports (20000+)."""
    while True:
        port = random.randint(10000, 19999)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None:
            raise RuntimeError(f"embedded {what} exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"embedded {what} did not start")


@pytest.fixture(scope="session")
def embedded_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded")


@pytest.fixture(scope="session")
def pg_server(embedded_dir: Path) -> Iterator[str]:
    """The tests' PostgreSQL server, as its superuser's URL without a database."""
    from devpush.embedded import services

    external = os.environ.get("DEVPUSH_TEST_DATABASE_URL")
    proc = None
    if external:
        base = external.replace("postgresql+asyncpg://", "postgresql://")
        server, _, _ = base.rpartition("/")
    else:
        port = free_port()
        embedded = Settings(data_dir=embedded_dir, embedded_db_port=port)  # type: ignore[call-arg]
        spec = services.prepare_postgres(embedded)
        spec.log = embedded_dir / "postgres.log"
        proc = subprocess.Popen(
            spec.argv, user=spec.user, stdout=open(spec.log, "ab"), stderr=subprocess.STDOUT
        )
        _wait_port(port, proc, "PostgreSQL")
        server = f"postgresql://postgres:{embedded_password(embedded, 'db')}@127.0.0.1:{port}"
    yield server
    if proc is not None:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="session")
def pg_admin_url(pg_server: str) -> str:
    """The superuser on the server's `postgres` database: what managed databases use."""
    return f"{pg_server}/postgres"


@pytest.fixture(scope="session")
def database_url(pg_server: str, pg_admin_url: str) -> Iterator[str]:
    from devpush.upgrades.migrate import upgrade

    server, admin_url = pg_server, pg_admin_url
    name = f"devpush_test_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        for _ in range(50):
            try:
                conn = await asyncpg.connect(admin_url)
                break
            except (OSError, asyncpg.CannotConnectNowError):
                await asyncio.sleep(0.2)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    url = f"{server.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    upgrade(url)
    yield url

    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    asyncio.run(drop())


@pytest.fixture(scope="session")
def redis_url(embedded_dir: Path) -> Iterator[str]:
    from devpush.embedded import services

    external = os.environ.get("DEVPUSH_TEST_REDIS_URL")
    if external:
        yield external
        return
    port = free_port()
    embedded = Settings(data_dir=embedded_dir, embedded_redis_port=port)  # type: ignore[call-arg]
    spec = services.prepare_redis(embedded)
    proc = subprocess.Popen(spec.argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_port(port, proc, "Redis")
    yield f"redis://:{embedded_password(embedded, 'redis')}@127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str, pg_admin_url: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        database_url=database_url,
        databases_admin_url=pg_admin_url,
        redis_url=redis_url,
        secret_key="test-secret",
        allow_unsandboxed=False,
        allow_file_repos=True,
        runtime="process",
    )


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    p = await build_platform(settings)
    async with p.engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {all_tables()} CASCADE"))
    await p.redis.flushdb()
    await dispatcher(p).ensure_cursors()  # every event from here on reaches the subscribers
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def delivering(platform: Platform) -> AsyncIterator[None]:
    """Domain events delivered in the background during the test, as a worker does."""
    async with delivering_events(platform):
        yield


async def deliver_events(p: Platform) -> int:
    """One round of domain-event delivery, as a worker or monitor runs it."""
    return await dispatcher(p).deliver()
