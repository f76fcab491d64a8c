"""`GET /health`: 200 only when PostgreSQL and Redis both answer, 503 with the reason if not."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from devpush.api.deps import PlatformDep

router = APIRouter(tags=["health"])

# How long a probe may take before its service counts as down. A busy moment (every pooled
# connection checked out, or a loaded machine starting containers during `devpush update`)
# can hold an answer for a few seconds: that is slow, not down. It stays under the 8 s the
# compose healthcheck gives the whole request.
PROBE_SECONDS = 5.0


async def _check_db(platform: PlatformDep) -> str | None:
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            async with platform.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason is reported
        return f"PostgreSQL does not answer: {type(exc).__name__}: {exc}"[:300]


async def _check_redis(platform: PlatformDep) -> str | None:
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            await platform.redis.ping()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "down"; the reason is reported
        return f"Redis does not answer: {type(exc).__name__}: {exc}"[:300]


@router.get("/health")
async def health(platform: PlatformDep) -> JSONResponse:
    db, redis = await asyncio.gather(_check_db(platform), _check_redis(platform))
    reasons = [r for r in (db, redis) if r]
    if reasons:
        return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "redis": "ok"})
