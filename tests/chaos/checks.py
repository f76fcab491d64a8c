"""The one checker every chaos scenario ends with: after the fault, the platform must be sound.

- every deployment reached a conclusion within the timeout;
- every runtime instance belongs to a succeeded deployment that still holds it, and every
  deployment a branch, environment or PR alias points at has its instance;
- the Traefik files are exactly what the database renders, and Traefik has loaded every router;
- the request loops that ran through the fault saw no failure.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
from sqlalchemy import select

from devpush.bootstrap import build_platform
from devpush.deployments import routing
from devpush.deployments.models import Alias, AliasType, Conclusion, Deployment, Status
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.runtime.base import InstanceState
from devpush.settings import Settings
from devpush.signing import traefik_api_auth
from tests.e2e.platform import RunningPlatform

T = TypeVar("T")
CONCLUSIONS = {"succeeded", "failed", "canceled", "skipped"}


def settings_of(platform: RunningPlatform) -> Settings:
    """The running platform's settings, as its own processes read them."""
    values: dict[str, Any] = {
        key.removeprefix("DEVPUSH_").lower(): value
        for key, value in platform.env.items()
        if key.startswith("DEVPUSH_")
    }
    return Settings.model_validate(values)


def with_platform(platform: RunningPlatform, fn: Callable[[Platform], Awaitable[T]]) -> T:
    """Run `fn` against the running platform's own database, Redis and runtimes."""

    async def main() -> T:
        p = await build_platform(settings_of(platform), pool_size=2)
        try:
            return await fn(p)
        finally:
            await p.close()

    return asyncio.run(main())


# ---- request loops ------------------------------------------------------------------------
@dataclass
class TrafficLoop:
    """Requests hostnames through Traefik at about `rate` requests a second (spread over
    `threads` keep-alive clients) and records every failure: anything but a 200 counts."""

    proxy_url: str
    hosts: list[str]
    rate: float = 20
    threads: int = 2
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = 0.0
    _stopped: float = 0.0

    def _run(self, index: int) -> None:
        interval = self.threads / self.rate
        next_at = time.monotonic() + index * interval / self.threads
        with httpx.Client(base_url=self.proxy_url, timeout=10) as client:
            n = index
            while not self._stop.is_set():
                host = self.hosts[n % len(self.hosts)]
                n += 1
                try:
                    response = client.get("/", headers={"Host": host})
                    result = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    result = repr(exc)
                with self._lock:
                    if result is None:
                        self.ok += 1
                    else:
                        self.failures.append(f"{time.strftime('%X')} {host}: {result}")
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.monotonic()  # behind: go on at once, don't burst

    def __enter__(self) -> TrafficLoop:
        self._started = time.monotonic()
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(15)
        self._stopped = time.monotonic()

    def summary(self) -> str:
        elapsed = (self._stopped or time.monotonic()) - self._started
        return (
            f"{self.total} requests in {elapsed:.0f}s ({self.total / elapsed:.0f}/s), "
            f"{len(self.failures)} failed"
        )

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


# ---- the checks ------------------------------------------------------------------------------
async def unconcluded(p: Platform) -> list[tuple[str, str]]:
    async with p.sessions() as session:
        rows = await session.execute(
            select(Deployment.id, Deployment.status).where(Deployment.status != Status.completed)
        )
        return [(dep_id, status.value) for dep_id, status in rows]


async def instance_problems(p: Platform) -> list[str]:
    """Instances with no live deployment, and aliased deployments with no instance."""
    async with p.sessions() as session:
        rows: list[tuple[str, Conclusion | None, dict[str, Any] | None]] = [
            (row.id, row.conclusion, row.runtime_handle)
            for row in await session.execute(
                select(Deployment.id, Deployment.conclusion, Deployment.runtime_handle)
            )
        ]
        aliased = set(
            await session.scalars(
                select(Alias.deployment_id)
                .join(Project, Project.id == Alias.project_id)
                .where(
                    Alias.deployment_id.is_not(None),
                    Alias.type != AliasType.deployment,  # its own -id- alias: may be cleaned up
                    Project.status != "deleting",
                )
            )
        )
    conclusions = {dep_id: (c.value if c else None) for dep_id, c, _ in rows}
    holding = {
        dep_id for dep_id, _, handle in rows if handle and conclusions[dep_id] == "succeeded"
    }
    problems = []
    found: set[str] = set()
    for name in p.runtimes.available():
        runtime = p.runtimes.get(name)
        for handle in await runtime.list():
            found.add(handle.deployment_id)
            if handle.deployment_id in aliased:
                status = await runtime.status(handle)
                if status.state != InstanceState.running:
                    problems.append(
                        f"aliased deployment {handle.deployment_id} is {status.state.value}"
                    )
            if handle.deployment_id not in holding:
                problems.append(
                    f"{name} instance {handle.id} of deployment {handle.deployment_id} "
                    f"({conclusions.get(handle.deployment_id, 'unknown')}) has no live deployment"
                )
    problems += stray_processes(p.settings.data_path / "runtime" / "process", found)
    for dep_id in sorted({a for a in aliased if a} - found):
        problems.append(f"deployment {dep_id} is aliased but has no runtime instance")
    return problems


def stray_processes(root: Path, instances: set[str]) -> list[str]:
    """Processes working inside the process runtime's directory that belong to no listed
    instance (a removed instance's app that survived)."""
    inside = str(root) + os.sep
    strays = []
    for proc in psutil.process_iter(["cwd", "cmdline"]):
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(inside):
            instance = cwd.removeprefix(inside).split(os.sep)[0]
            if instance not in instances:
                strays.append(f"process {proc.pid} {proc.info.get('cmdline')} works in {cwd}")
    return strays


async def proxy_problems(p: Platform) -> list[str]:
    """Differences between the Traefik files and what the database renders, and routers that
    Traefik has not loaded."""
    settings = p.settings
    expected: dict[str, dict[str, Any]] = {}
    async with p.sessions() as session:
        for project in await session.scalars(select(Project).where(Project.status != "deleting")):
            routes = await routing.project_routes(
                session=session, settings=settings, project=project
            )
            rendered = traefik.render_project(routes, settings)
            if rendered:
                expected[project.slug] = rendered
    on_disk = traefik.read_dynamic(settings)
    problems = [
        f"Traefik file of {slug}: on disk {on_disk.get(slug)!r}, from the database "
        f"{expected.get(slug)!r}"
        for slug in sorted(set(expected) | set(on_disk))
        if expected.get(slug) != on_disk.get(slug)
    ]
    async with httpx.AsyncClient(timeout=5, auth=traefik_api_auth(settings)) as client:
        response = await client.get(
            f"http://127.0.0.1:{settings.traefik_api_port}/api/http/routers",
            params={"per_page": 1000},
        )
    loaded = {r["name"]: r for r in response.json()}
    for config in expected.values():
        for name, router in config.get("http", {}).get("routers", {}).items():
            live = loaded.get(f"{name}@file")
            if live is None or live.get("rule") != router["rule"]:
                problems.append(f"Traefik has not loaded router {name} ({router['rule']})")
            elif live.get("status") != "enabled":
                problems.append(f"Traefik router {name} is {live.get('status')}")
    return problems


def wait_until_sound(
    platform: RunningPlatform,
    *,
    loops: Iterable[TrafficLoop] = (),
    conclude_timeout: float = 240,
    settle_timeout: float = 120,
) -> None:
    """Assert every invariant, waiting for eventual ones (the monitor reconciles every
    DEVPUSH_RECONCILE_INTERVAL seconds)."""

    async def check(p: Platform) -> None:
        deadline = time.monotonic() + conclude_timeout
        while pending := await unconcluded(p):
            assert time.monotonic() < deadline, (
                f"{len(pending)} deployments never concluded: {pending[:10]}\n"
                f"{platform.text()[-3000:]}"
            )
            await asyncio.sleep(1)
        deadline = time.monotonic() + settle_timeout
        while problems := await instance_problems(p) + await proxy_problems(p):
            assert time.monotonic() < deadline, "\n".join(problems)
            await asyncio.sleep(1)

    with_platform(platform, check)
    assert_served(loops)


def assert_served(loops: Iterable[TrafficLoop]) -> None:
    for loop in loops:
        assert loop.total > 0, "the request loop never ran"
        assert loop.failures == [], (
            f"{len(loop.failures)} of {loop.total} requests failed during the fault: "
            f"{loop.failures[:10]}"
        )
