"""Run Alembic migrations programmatically (used by `devpush migrate`, `up` and the tests).

After the schema, the log partitions for the coming days are made, so that no process starts
inserting lines while the worker's retention job creates today's partition.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(MIGRATIONS / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        asyncio.run(_prepare_log_partitions(url))


async def _prepare_log_partitions(url: str | None) -> None:
    from devpush.db import make_engine
    from devpush.embedded.state import database_url
    from devpush.logs import retention
    from devpush.settings import get_settings

    settings = get_settings()
    engine = make_engine(url or database_url(settings), pool_size=1)
    try:
        await retention.run(engine, default_days=settings.log_retention_days)
    finally:
        await engine.dispose()
