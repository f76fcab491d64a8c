"""Live deployments whose app exits on demand, on the real process runtime (bubblewrap, its own
network namespace), with the real monitor: shared by the crash tests of tests/integration and
tests/security."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from devpush import builds
from devpush.db import session_scope
from devpush.deployments import finalize, flows
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment, Status
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.runtime.base import RuntimeHandle
from devpush.workers.monitor import Monitor
from tests.factories.auth import Account

# Serves "tenant <project>" on $HOST:$PORT. When the file `exit-now` appears in its directory it
# exits with the code written there, removing the file first unless `sticky` is there too (then
# every restart exits again: a crash loop).
APP = r"""
import os, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = ("tenant " + os.environ["DEVPUSH_PROJECT"]).encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def watch():
    while True:
        if os.path.exists("exit-now"):
            code = int(open("exit-now").read().strip() or "3")
            if not os.path.exists("sticky"):
                os.unlink("exit-now")
            print(f"exiting with {code}", flush=True)
            os._exit(code)
        time.sleep(0.05)


threading.Thread(target=watch, daemon=True).start()
print("serving", flush=True)
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""


def fast_restarts(settings: Any) -> Any:
    return settings.model_copy(
        update={
            "restart_backoff_min": 0.2,
            "restart_backoff_max": 0.4,
            "restart_max_crashes": 3,
            "crash_log_lines": 5,
        }
    )


async def live_deployment(
    client: httpx.AsyncClient, platform: Platform, account: Account, source: Path, name: str
) -> str:
    """A project `name` whose deployment runs APP on the process runtime and is live (its
    aliases point at it, Traefik's file routes them), as finalize leaves it."""
    project = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": name, "start_command": "python3 app.py"},
        headers=account.headers,
    )
    assert project.status_code == 201, project.text
    created = await client.post(
        f"/api/v1/projects/{project.json()['id']}/deployments", json={}, headers=account.headers
    )
    deployment_id = str(created.json()["id"])
    plan = builds.Plan(stack="custom", start="python3 app.py")
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id)
        row.config = {**row.config, "plan": plan.to_json()}
        row.status = Status.deploy
        found = await session.get(Project, row.project_id)
        assert found is not None
        spec = await flows.restart_spec(platform, session, row, found)
    runtime = platform.runtimes.get("process")
    spec = dataclasses.replace(spec, source_dir=source)
    handle = await runtime.start(await runtime.create(spec))
    assert handle.upstream
    await get_body(handle.upstream)
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id)
        row.runtime_handle, row.upstream = handle.to_json(), handle.upstream
    await finalize.finalize_deployment(platform, deployment_id)
    return deployment_id


async def get_body(upstream: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                return (await client.get(f"http://{upstream}/")).text
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def row_of(platform: Platform, deployment_id: str) -> Deployment:
    async with session_scope(platform.sessions) as session:
        return await deployments.get(session=session, deployment_id=deployment_id)


def instance_dir(row: Deployment) -> Path:
    assert row.runtime_handle
    return Path(RuntimeHandle.from_json(row.runtime_handle).data["dir"])


def make_exit(row: Deployment, code: int, *, sticky: bool = False) -> None:
    app = instance_dir(row) / "app"
    if sticky:
        (app / "sticky").write_text("")
    (app / "exit-now").write_text(str(code))


def routed_upstreams(platform: Platform, slug: str) -> list[str]:
    """The upstreams the project's Traefik file sends traffic to."""
    data = traefik.read_dynamic(platform.settings).get(slug, {})
    services = (data.get("http") or {}).get("services") or {}
    return [
        server["url"].removeprefix("http://")
        for service in services.values()
        for server in service["loadBalancer"]["servers"]
    ]


async def until(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> float:
    """Polls `check` every 20 ms; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def running_monitor(platform: Platform) -> AsyncIterator[Monitor]:
    stop = asyncio.Event()
    monitor = Monitor(platform)
    task = asyncio.create_task(monitor.run(stop))
    try:
        yield monitor
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def remove_instances(platform: Platform) -> None:
    runtime = platform.runtimes.get("process")
    for handle in await runtime.list():
        await runtime.remove(handle)
