"""Removing a deployment's instance (cleanup, failure, delete): its route goes first, so no
request is sent to an instance while it disappears (real PostgreSQL, Traefik files)."""

from __future__ import annotations

import httpx
import pytest

from devpush.db import session_scope
from devpush.deployments import flows
from devpush.deployments import service as deployments
from devpush.deployments.models import Status
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.proxy import sync as proxy_sync
from devpush.proxy import traefik
from devpush.runtime.base import RuntimeHandle
from tests.factories.auth import Account
from tests.integration.test_monitor_reconcile import stale_deployment


class RecordingRuntime:
    """Notes which hostnames Traefik's files still route when an instance is removed."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.routed_at_removal: list[str] | None = None

    async def remove(self, handle: RuntimeHandle) -> None:
        self.routed_at_removal = routed_hostnames(self.platform)


def routed_hostnames(platform: Platform) -> list[str]:
    files = traefik.read_dynamic(platform.settings).values()
    routers = [r for f in files for r in (f.get("http") or {}).get("routers", {}).values()]
    return [r["rule"] for r in routers]


async def serving_deployment(client: httpx.AsyncClient, platform: Platform, alice: Account) -> str:
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
        deployment.upstream = "127.0.0.1:9"
        own = [s for s in deployments.alias_specs(project, deployment, None) if "-id-" in s.value]
        await deployments.point_aliases(
            session=session, project_id=project.id, specs=own, deployment_id=deployment_id
        )
        await proxy_sync.sync_project(
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

    assert await flows.remove_instance(platform, deployment_id)
    assert runtime.routed_at_removal is not None, "the runtime was not asked to remove it"
    assert not any(deployment_id[:7] in rule for rule in runtime.routed_at_removal)
    async with session_scope(platform.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id)
        assert deployment.runtime_handle is None and deployment.upstream is None
    assert not await flows.remove_instance(platform, deployment_id)  # idempotent
