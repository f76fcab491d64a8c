"""Run Alembic migrations programmatically (used by `devpush migrate`, `up` and the tests).

After the schema, the log partitions for the coming days are made, so that no process starts
inserting lines while the worker's retention job creates today's partition; then the pending
upgrade steps run (devpush.upgrades).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(
    url: str | None = None, revision: str = "head", say: Callable[[str], None] = print
) -> None:
    """Migrate the schema, then (at head) prepare the log partitions and run the pending
    upgrade steps (devpush.upgrades); on a database this call created, the steps are recorded
    as baseline instead of run."""
    fresh = asyncio.run(_current_revision(url)) is None
    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        asyncio.run(_after_schema(url, fresh=fresh, say=say))


async def _current_revision(url: str | None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from devpush.db import make_engine

    engine = make_engine(_url(url), pool_size=1)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()


def _url(url: str | None) -> str:
    from devpush.runstate import database_url
    from devpush.settings import get_settings

    return url or database_url(get_settings())


async def _after_schema(url: str | None, *, fresh: bool, say: Callable[[str], None]) -> None:
    from devpush.db import make_engine
    from devpush.logs import retention
    from devpush.settings import get_settings
    from devpush.upgrades.service import apply_pending

    settings = get_settings()
    engine = make_engine(_url(url), pool_size=1)
    try:
        await retention.run(engine, default_days=settings.log_retention_days)
        await apply_pending(engine, settings, fresh=fresh, say=say)
    finally:
        await engine.dispose()
