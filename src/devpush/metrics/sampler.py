"""The sampler, run by every monitor beside its watches: each DEVPUSH_METRICS_INTERVAL it stores
one row per live deployment (CPU, memory and restarts of its instance, and its requests from
Traefik's metrics). Of several monitors, the one that claims the interval's Redis key samples
it; the rows' primary key (deployment, resolution, slot) keeps a slot single anyway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from devpush.db import session_scope
from devpush.deployments.crashes import is_live
from devpush.deployments.models import Conclusion, Deployment, Status
from devpush.errors import DevpushError
from devpush.metrics import requests, service
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy.traefik import router_name
from devpush.runtime.base import InstanceStats, RuntimeHandle

log = logging.getLogger("devpush.metrics")
SLOT_KEY = "devpush:metrics:slot:{slot}"
LAST_SCRAPE_KEY = "devpush:metrics:traefik"  # the previous scrape's counters, for deltas
STATS_TIMEOUT = 8.0


@dataclass(frozen=True)
class Live:
    deployment_id: str
    project_id: str
    router: str
    handle: RuntimeHandle  # replica 0
    crashes: tuple[float, ...]
    replicas: tuple[RuntimeHandle, ...] = ()  # the others: the deployment's use is the sum


@dataclass
class Sampler:
    p: Platform
    owner: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=3.0))
    scrape_failing: bool = False
    # Instances asked at once (the engine's one-shot stats take about a second each).
    concurrency: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(8))

    @property
    def interval(self) -> int:
        return max(round(self.p.settings.metrics_interval), 1)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                slot = int(time.time() // self.interval)
                try:
                    if await self.claim(slot):
                        await self.sample(datetime.fromtimestamp(slot * self.interval, UTC))
                except (OSError, RedisError, SQLAlchemyError, DevpushError) as exc:
                    log.warning("metrics sample failed", extra={"error": str(exc)[:200]})
                except Exception:  # a bug here must not stop the monitor: said loudly
                    log.exception("metrics sample failed")
                wait = (slot + 1) * self.interval - time.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(wait, 0.05))
        finally:
            await self.http.aclose()

    async def claim(self, slot: int) -> bool:
        key = SLOT_KEY.format(slot=slot)
        return bool(await self.p.redis.set(key, self.owner, nx=True, ex=self.interval * 3))

    async def sample(self, ts: datetime) -> int:
        """Store this slot's rows; returns how many were stored."""
        live = await self.live()
        traffic = await self.traffic()
        async with session_scope(self.p.sessions) as session:
            before = await service.previous(
                session=session,
                deployment_ids=[d.deployment_id for d in live],
                resolution=self.interval,
            )
        usage = await asyncio.gather(*(self.stats(d) for d in live))
        rows = [
            self.row(d, ts, stats, before.get(d.deployment_id), traffic.get(d.router))
            for d, stats in zip(live, usage, strict=True)
        ]
        async with session_scope(self.p.sessions) as session:
            return await service.store(session=session, rows=rows)

    async def live(self) -> list[Live]:
        async with session_scope(self.p.sessions) as session:
            rows = await session.execute(
                select(Deployment, Project.slug)
                .join(Project, Project.id == Deployment.project_id)
                .where(
                    Deployment.status == Status.completed,
                    Deployment.conclusion == Conclusion.succeeded,
                    Deployment.runtime_handle.is_not(None),
                )
            )
            return [
                Live(
                    deployment_id=d.id,
                    project_id=d.project_id,
                    router=router_name(slug, d.id),
                    handle=RuntimeHandle.from_json(d.runtime_handle or {}),
                    crashes=tuple(float(t) for t in d.crashes or []),
                    replicas=tuple(RuntimeHandle.from_json(r["handle"]) for r in d.replicas or []),
                )
                for d, slug in rows.all()
                if is_live(d)
            ]

    async def stats(self, d: Live) -> InstanceStats | None:
        """The deployment's use: its replicas' summed (a replica replaced meanwhile makes the
        CPU total drop, and that one sample's CPU percent is left out)."""
        each = await asyncio.gather(*(self.instance_stats(d, h) for h in (d.handle, *d.replicas)))
        known = [s for s in each if s is not None]
        if not known:
            return None
        cpu = [s.cpu_seconds for s in known if s.cpu_seconds is not None]
        memory = [s.memory_bytes for s in known if s.memory_bytes is not None]
        return InstanceStats(
            cpu_seconds=sum(cpu) if cpu else None, memory_bytes=sum(memory) if memory else None
        )

    async def instance_stats(self, d: Live, handle: RuntimeHandle) -> InstanceStats | None:
        try:
            runtime = self.p.runtimes.get(handle.backend)
            async with self.concurrency:
                return await asyncio.wait_for(runtime.stats(handle), STATS_TIMEOUT)
        except (DevpushError, OSError, TimeoutError) as exc:
            log.warning(
                "cannot read an instance's stats",
                extra={"deployment_id": d.deployment_id, "error": str(exc)[:200]},
            )
            return None

    async def traffic(self) -> dict[str, requests.RequestStats]:
        """This interval's requests per router, from Traefik's counters less those of the
        previous scrape (kept in Redis, so whichever monitor samples next has them)."""
        text = await self.scrape()
        if text is None:
            return {}
        try:
            current = requests.parse(text)
        except ValueError as exc:
            log.warning("cannot parse Traefik's metrics", extra={"error": str(exc)[:200]})
            return {}
        raw = await self.p.redis.get(LAST_SCRAPE_KEY)
        state = {"at": time.time(), "routers": {k: v.to_json() for k, v in current.items()}}
        await self.p.redis.set(LAST_SCRAPE_KEY, json.dumps(state), ex=self.interval * 3)
        previous = _previous(raw, max_age=self.interval * 3)
        if previous is None:  # the first scrape (or one long ago) only sets the baseline
            return {}
        return {
            router: requests.stats(requests.delta(previous.get(router), counters))
            for router, counters in current.items()
            if router in previous
        } | {
            router: requests.stats(counters)  # made since the last scrape: all of it is new
            for router, counters in current.items()
            if router not in previous
        }

    async def scrape(self) -> str | None:
        s = self.p.settings
        url = s.metrics_url or f"{s.traefik_api}/metrics"
        try:
            response = await self.http.get(url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            if not self.scrape_failing:  # said once, until it works again
                log.warning(
                    "cannot read Traefik's metrics: requests are not counted",
                    extra={"url": url, "error": str(exc)[:200] or type(exc).__name__},
                )
            self.scrape_failing = True
            return None
        self.scrape_failing = False
        return response.text

    def row(
        self,
        d: Live,
        ts: datetime,
        stats: InstanceStats | None,
        before: service.Previous | None,
        traffic: requests.RequestStats | None,
    ) -> dict[str, Any]:
        cpu = stats.cpu_seconds if stats else None
        start = ts.timestamp() - self.interval
        row: dict[str, Any] = {
            "deployment_id": d.deployment_id,
            "project_id": d.project_id,
            "resolution": self.interval,
            "ts": ts,
            "cpu_seconds": cpu,
            "cpu_percent": cpu_percent(cpu, ts, before, self.interval),
            "memory_bytes": stats.memory_bytes if stats else None,
            "restarts": sum(1 for t in d.crashes if start <= t < ts.timestamp()),
            "requests": 0,
            "p50_ms": None,
            "p95_ms": None,
            "p99_ms": None,
        } | {f"status_{c}": 0 for c in requests.CLASSES}
        if traffic is not None:
            row |= {
                "requests": traffic.requests,
                "p50_ms": traffic.p50_ms,
                "p95_ms": traffic.p95_ms,
                "p99_ms": traffic.p99_ms,
            } | {f"status_{c}": n for c, n in traffic.classes.items()}
        return row


def cpu_percent(
    cpu: float | None, ts: datetime, before: service.Previous | None, interval: int
) -> float | None:
    """Percent of one core since the previous sample (none when it is missing, older than
    three intervals, or the counter went back: a restarted instance)."""
    if cpu is None or before is None or before.cpu_seconds is None:
        return None
    elapsed = (ts - before.ts).total_seconds()
    if elapsed <= 0 or elapsed > interval * 3 or cpu < before.cpu_seconds:
        return None
    return round((cpu - before.cpu_seconds) / elapsed * 100, 2)


def _previous(
    raw: bytes | str | None, *, max_age: float
) -> dict[str, requests.RouterCounters] | None:
    if raw is None:
        return None
    try:
        state = json.loads(raw)
        if time.time() - float(state["at"]) > max_age:
            return None
        return {k: requests.RouterCounters.from_json(v) for k, v in state["routers"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


async def downsample(p: Platform) -> None:
    """The cleanup job's part: roll week-old samples into 5-minute rows, drop expired ones."""
    async with session_scope(p.sessions) as session:
        rolled, deleted = await service.downsample(session=session)
    if rolled or deleted:
        log.info("metrics rolled up", extra={"rolled_up": rolled, "deleted": deleted})
