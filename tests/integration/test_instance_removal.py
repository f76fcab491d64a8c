"""Removing a deployment's instance (cleanup, failure, delete): its route goes first, so no
request is sent to an instance while it disappears, then it is stopped (SIGTERM, a grace
period) before it is removed, and a retired instance answers the requests already sent to it
(real PostgreSQL, Traefik files, a real HTTP server as the instance)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, delete, select, text

import devpush
from devpush.db import session_scope
from devpush.deployments import retire, routing
from devpush.deployments import service as deployments
from devpush.deployments.models import Alias, Conclusion, Deployment, Status
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.runtime.base import InstanceState, InstanceStatus, LogRecord, Phase, RuntimeHandle
from tests.factories.auth import Account
from tests.integration.test_monitor_reconcile import stale_deployment


class RecordingRuntime:
    """Notes which hostnames Traefik's files still route when an instance is stopped and when
    it is removed, and in which order."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.calls: list[str] = []
        self.routed_at_stop: list[str] | None = None
        self.routed_at_removal: list[str] | None = None

    async def status(self, handle: RuntimeHandle) -> InstanceStatus:
        return InstanceStatus(InstanceState.running, phase=Phase.runtime)

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        self.calls.append(f"stop {timeout:g}")
        self.routed_at_stop = routed_hostnames(self.platform)

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        return
        yield

    async def remove(self, handle: RuntimeHandle) -> None:
        self.calls.append("remove")
        self.routed_at_removal = routed_hostnames(self.platform)


def routed_hostnames(platform: Platform) -> list[str]:
    files = traefik.read_dynamic(platform.settings).values()
    routers = [r for f in files for r in (f.get("http") or {}).get("routers", {}).values()]
    return [r["rule"] for r in routers]


async def serving_deployment(
    client: httpx.AsyncClient, platform: Platform, alice: Account, upstream: str = "127.0.0.1:9"
) -> str:
    """A concluded deployment with an instance, an upstream and its own routed hostname."""
    deployment_id = await stale_deployment(client, platform, alice)
    async with session_scope(platform.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id)
        project = await session.get(Project, deployment.project_id)
        assert project is not None
        deployment.status = Status.completed
        deployment.runtime_handle = RuntimeHandle(
            backend="fake", id="instance", deployment_id=deployment_id
        ).to_json()
        deployment.upstream = upstream
        own = [s for s in deployments.alias_specs(project, deployment, None) if "-id-" in s.value]
        await deployments.point_aliases(
            session=session, project_id=project.id, specs=own, deployment_id=deployment_id
        )
        await routing.sync_project(
            session=session, settings=platform.settings, project_id=project.id
        )
    return deployment_id


async def test_the_route_is_gone_before_the_instance_is_removed(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment_id = await serving_deployment(client, platform, alice)
    assert any(deployment_id[:7] in rule for rule in routed_hostnames(platform))
    runtime = RecordingRuntime(platform)
    monkeypatch.setattr(platform.runtimes, "get", lambda name: runtime)

    monkeypatch.setattr(platform.settings, "drain_seconds", 7)

    assert await retire.remove_instance(platform, deployment_id)
    # SIGTERM with the grace period once the route is gone, and only then the removal.
    assert runtime.calls == ["stop 7", "remove"]
    assert runtime.routed_at_stop is not None and runtime.routed_at_removal is not None
    assert not any(deployment_id[:7] in rule for rule in runtime.routed_at_stop)
    async with session_scope(platform.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id)
        assert deployment.runtime_handle is None and deployment.upstream is None
    assert not await retire.remove_instance(platform, deployment_id)  # idempotent


class SlowInstance:
    """An instance whose app answers after `delay`; removing it cuts every open connection,
    as removing a container does."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.writers: list[asyncio.StreamWriter] = []
        self.removed = False
        self.stopped = False

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(self.delay)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def status(self, handle: RuntimeHandle) -> InstanceStatus:
        return InstanceStatus(InstanceState.running, phase=Phase.runtime)

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        """As an app shutting down on SIGTERM: no new connections, the open ones answered
        (within `timeout`)."""
        self.stopped = True
        self.server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not all(writer.is_closing() for writer in self.writers):
                    await asyncio.sleep(0.01)

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        return
        yield

    async def remove(self, handle: RuntimeHandle) -> None:
        assert self.stopped, "removed without being stopped first"
        self.removed = True
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


async def test_cleanup_answers_the_requests_already_sent(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instance = SlowInstance(delay=0.5)
    upstream = await instance.start()
    deployment_id = await serving_deployment(client, platform, alice, upstream=upstream)
    monkeypatch.setattr(platform.runtimes, "get", lambda name: instance)
    monkeypatch.setattr(platform.settings, "drain_seconds", 1.5)

    async with httpx.AsyncClient() as http:
        in_flight = asyncio.create_task(http.get(f"http://{upstream}/"))
        await asyncio.sleep(0.1)  # sent before the route goes
        assert await retire.cleanup_inactive(platform) == [deployment_id]
        response = await in_flight
    assert response.status_code == 200 and response.text == "ok"
    assert instance.removed
    async with session_scope(platform.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id)
        assert deployment.runtime_handle is None and deployment.upstream is None
    assert await retire.cleanup_inactive(platform) == []


async def test_a_retiring_deployment_is_not_served_again(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    deployment_id = await serving_deployment(client, platform, alice)
    async with session_scope(platform.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id)
        deployment.conclusion = Conclusion.succeeded
        deployment.upstream = None  # unrouted, its instance still draining
    refused = await client.post(
        f"/api/v1/deployments/{deployment_id}/promote", headers=alice.headers
    )
    assert refused.status_code == 409, refused.text
    assert "not running any more" in refused.json()["error"]["message"]
    async with session_scope(platform.sessions) as session:
        warm = await deployments.warm_deployment_ids(session=session)
    assert deployment_id not in warm  # no environment alias was moved to it


async def test_a_deployment_deleted_while_its_instance_drains(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    instance = SlowInstance(delay=0)
    deployment_id = await serving_deployment(
        client, platform, alice, upstream=await instance.start()
    )
    monkeypatch.setattr(platform.runtimes, "get", lambda name: instance)
    monkeypatch.setattr(platform.settings, "drain_seconds", 0.5)

    cleanup = asyncio.create_task(retire.cleanup_inactive(platform))
    await asyncio.sleep(0.2)
    async with session_scope(platform.sessions) as session:  # its project was deleted meanwhile
        await session.execute(delete(Alias).where(Alias.deployment_id == deployment_id))
        await session.execute(delete(Deployment).where(Deployment.id == deployment_id))
    assert await cleanup == [deployment_id]
    assert instance.removed


class ShutdownTakes(RecordingRuntime):
    """Instances whose app takes `seconds` to shut down once stopped."""

    def __init__(self, platform: Platform, seconds: float) -> None:
        super().__init__(platform)
        self.seconds = seconds

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        await asyncio.sleep(min(self.seconds, timeout))
        self.calls.append(f"stopped {handle.deployment_id}")


async def test_retiring_instances_shut_down_side_by_side(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    bob: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await serving_deployment(client, platform, alice)
    second = await serving_deployment(client, platform, bob)
    runtime = ShutdownTakes(platform, seconds=1.0)
    monkeypatch.setattr(platform.runtimes, "get", lambda name: runtime)
    monkeypatch.setattr(platform.settings, "drain_seconds", 10)

    loop = asyncio.get_running_loop()
    started = loop.time()
    assert sorted(await retire.cleanup_inactive(platform)) == sorted([first, second])
    assert loop.time() - started < 1.8  # one shutdown's time, not two
    assert sorted(runtime.calls) == sorted(
        ["remove", "remove", f"stopped {first}", f"stopped {second}"]
    )


async def test_a_removed_instance_leaves_no_handle_for_cleanup_to_visit_again(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    bob: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handle of a removed instance is SQL NULL, so the ten-minute cleanup (and every
    other query for deployments with an instance) no longer reads each retired deployment
    again; migration 0015 turns the JSON nulls earlier removals left into SQL NULL."""
    removed = await serving_deployment(client, platform, alice)
    old = await serving_deployment(client, platform, bob)
    monkeypatch.setattr(platform.runtimes, "get", lambda name: RecordingRuntime(platform))
    assert sorted(await retire.cleanup_inactive(platform)) == sorted([removed, old])
    async with session_scope(platform.sessions) as session:
        # `old` as an earlier version stored it: JSON null
        await session.execute(
            text("UPDATE deployments SET runtime_handle = 'null'::json WHERE id = :id"),
            {"id": old},
        )

    async def handle_is_sql_null(deployment_id: str) -> bool:
        async with session_scope(platform.sessions) as session:
            stmt = select(Deployment.runtime_handle.is_(None)).where(Deployment.id == deployment_id)
            return bool(await session.scalar(stmt))

    assert await handle_is_sql_null(removed)
    assert not await handle_is_sql_null(old)
    async with platform.engine.begin() as conn:
        await conn.run_sync(_run_migration, "0015_runtime_handle_sql_null.py")
    assert await handle_is_sql_null(old)

    visited: list[str] = []
    unroute = retire._unroute

    async def counted(p: Platform, deployment_id: str, **kwargs: bool) -> object:
        visited.append(deployment_id)
        return await unroute(p, deployment_id, **kwargs)

    monkeypatch.setattr(retire, "_unroute", counted)
    assert await retire.cleanup_inactive(platform) == []
    assert visited == []


def _run_migration(connection: Connection, filename: str) -> None:
    path = Path(devpush.__file__).parent / "migrations" / "versions" / filename
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with Operations.context(MigrationContext.configure(connection)):
        module.upgrade()
