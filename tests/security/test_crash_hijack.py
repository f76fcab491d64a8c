"""The crash-then-bind hijack: tenant A's live app exits; tenant B's new instance must never be
given A's old upstream (address and port) while A's route may still point there, so A's
hostnames never serve B's app (real process runtime in its network namespaces, PostgreSQL,
Redis, the monitor, Traefik's files and the app's catch-all).

Address and port choices are made deterministic here (the runtime's random start is pinned to
the first candidate), so a released upstream *would* be handed straight to B: the test passes
only because A's crashed instance keeps its claim until its route is gone."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import httpx
import pytest

from devpush.platform import Platform
from devpush.runtime.base import InstanceState, RuntimeHandle
from devpush.settings import Settings
from tests.factories.auth import make_account
from tests.integration.crashing import (
    APP,
    fast_restarts,
    get_body,
    live_deployment,
    make_exit,
    remove_instances,
    routed_upstreams,
    row_of,
    running_monitor,
    until,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return fast_restarts(settings)  # type: ignore[no-any-return]


@pytest.fixture
async def source(tmp_path: Path, platform: Platform) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "app.py").write_text(APP)
    yield directory  # type: ignore[misc]
    await remove_instances(platform)


async def test_a_crashed_tenants_upstream_is_never_given_to_another_while_routed(
    client: httpx.AsyncClient,
    platform: Platform,
    source: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "randrange", lambda n: 0)  # first free address and port
    alice = await make_account(platform, "alice@example.com")
    bob = await make_account(platform, "bob@example.com")
    a_id = await live_deployment(client, platform, alice, source, "tenant-a")
    a = await row_of(platform, a_id)
    a_slug, old = "tenant-a", a.upstream
    assert old and routed_upstreams(platform, a_slug) == [old]

    # A exits; no monitor has noticed yet, so A's route still points at its old upstream
    make_exit(a, 3, sticky=True)
    runtime = platform.runtimes.get("process")
    handle = RuntimeHandle.from_json(a.runtime_handle or {})

    async def a_exited() -> bool:
        return (await runtime.status(handle)).state == InstanceState.exited

    await until(a_exited, what="A exited")
    assert routed_upstreams(platform, a_slug) == [old]
    b_id = await live_deployment(client, platform, bob, source, "tenant-b")
    b = await row_of(platform, b_id)
    assert b.upstream and b.upstream != old, "B was given A's upstream while A's route held it"
    assert old.rsplit(":", 1)[0] != b.upstream.rsplit(":", 1)[0]

    # the monitor pulls A's route, restarts it (exits again) until crashed; A's file, sampled
    # all along, never routes to B; A's hostname answers 503, never B's body
    seen: set[str] = set()

    async def sample() -> None:
        while True:
            seen.update(routed_upstreams(platform, a_slug))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        async with running_monitor(platform):

            async def crashed() -> bool:
                return (await row_of(platform, a_id)).instance_health == "crashed"

            await until(crashed, what="A crashed")
            # B deployed again after A's route is gone: still never on A's hostnames
            c_id = await live_deployment(client, platform, bob, source, "tenant-c")
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    c = await row_of(platform, c_id)
    assert seen == {old}
    assert b.upstream not in seen and c.upstream not in seen
    assert routed_upstreams(platform, a_slug) == []
    host = {"Host": f"{a_slug}.{platform.settings.deploy_domain}"}
    page = await client.get("/", headers=host)
    assert page.status_code == 503 and "tenant-b" not in page.text
    assert await get_body(b.upstream) == "tenant tenant-b"
