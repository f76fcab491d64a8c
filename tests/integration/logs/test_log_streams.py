"""The SSE streams over a real HTTP server, PostgreSQL and Redis: a deployment's status and
lines (stored, then live, gap-free and without duplicates), resuming from Last-Event-ID,
closing when the deployment goes; a project's events; access."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import delete

from devpush.db import session_scope
from devpush.deployments import flows, sse
from devpush.deployments.domain_events import status_payload
from devpush.deployments.models import Deployment
from devpush.outbox.emit import emit
from devpush.outbox.names import STATUS
from devpush.platform import Platform
from tests.factories.auth import Account
from tests.integration.logs.helpers import (
    EventStream,
    MakeDeployment,
    ProjectRefs,
    append,
    lines_of,
)


@pytest.fixture(autouse=True)
def quick_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter intervals than production, so closing and heartbeats show within a test."""
    monkeypatch.setattr(sse, "CHECK_SECONDS", 0.5)
    monkeypatch.setattr(sse, "IDLE_SECONDS", 0.3)
    monkeypatch.setattr(sse, "CLOSE_GRACE_SECONDS", 1.0)


@contextlib.asynccontextmanager
async def open_stream(
    server: str, path: str, account: Account, last_event_id: str | None = None
) -> AsyncIterator[EventStream]:
    headers = dict(account.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    async with (
        httpx.AsyncClient(base_url=server, timeout=30) as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield EventStream(response)


def is_line(n: int) -> object:
    return lambda e: e.event == "log" and e.json()["message"] == f"line {n}"


async def test_status_then_stored_lines_then_live_lines_in_order(
    server: str, platform: Platform, alice: Account, make_deployment: MakeDeployment
) -> None:
    deployment_id = await make_deployment()
    await append(platform, deployment_id, [f"line {i}" for i in range(1, 51)])
    path = f"/api/v1/deployments/{deployment_id}/events"
    async with open_stream(server, path, alice) as stream:
        first = await stream.next()
        assert first.event == "status" and first.id is None
        assert first.json()["status"] == "prepare"
        stored = await stream.until(is_line(50))
        for i in range(51, 101):
            await append(platform, deployment_id, [f"line {i}"])
        live = await stream.until(is_line(100))
    lines = lines_of(stored + live)
    assert [line["message"] for line in lines] == [f"line {i}" for i in range(1, 101)]
    assert [int(e.id or 0) for e in stored + live if e.event == "log"] == list(range(1, 101))
    assert {"ts", "stream", "phase", "deployment_id", "level", "seq"} <= set(lines[0])


async def test_reconnect_with_last_event_id_continues_exactly(
    server: str, platform: Platform, alice: Account, make_deployment: MakeDeployment
) -> None:
    deployment_id = await make_deployment()
    await append(platform, deployment_id, [f"line {i}" for i in range(1, 31)])
    path = f"/api/v1/deployments/{deployment_id}/events"
    async with open_stream(server, path, alice) as stream:
        seen = await stream.until(is_line(20))
    last_id = [e.id for e in seen if e.event == "log"][-1]
    assert last_id == "20"
    # lines keep coming while the client is away, and after it is back
    await append(platform, deployment_id, [f"line {i}" for i in range(31, 41)])
    async with open_stream(server, path, alice, last_event_id=last_id) as stream:
        assert (await stream.next()).event == "status"
        again = await stream.until(is_line(40))
        await append(platform, deployment_id, [f"line {i}" for i in range(41, 46)])
        again += await stream.until(is_line(45))
    resumed = [line["message"] for line in lines_of(again)]
    assert resumed == [f"line {i}" for i in range(21, 46)]


async def test_lines_stored_but_never_published_still_reach_the_stream(
    server: str, platform: Platform, alice: Account, make_deployment: MakeDeployment
) -> None:
    """A lost publish (Redis hiccup) or a trimmed stream leaves a gap: PostgreSQL fills it."""
    deployment_id = await make_deployment()
    path = f"/api/v1/deployments/{deployment_id}/events"
    async with open_stream(server, path, alice) as stream:
        assert (await stream.next()).event == "status"
        await append(platform, deployment_id, ["line 1", "line 2"], publish=False)
        await append(platform, deployment_id, ["line 3"])
        seen = await stream.until(is_line(3))
        await append(platform, deployment_id, ["line 4"], publish=False)  # no line after it
        seen += await stream.until(is_line(4), timeout=5)
    assert [line["seq"] for line in lines_of(seen)] == [1, 2, 3, 4]


async def test_connecting_while_lines_pour_in_loses_and_repeats_nothing(
    server: str, platform: Platform, alice: Account, make_deployment: MakeDeployment
) -> None:
    """The seam between the stored lines and the live ones: clients connect at random moments
    while a writer stores and publishes lines in small batches."""
    deployment_id = await make_deployment()
    total = 600

    async def writer() -> None:
        for start in range(1, total + 1, 3):
            await append(platform, deployment_id, [f"line {i}" for i in range(start, start + 3)])
            await asyncio.sleep(0.002)

    async def reader(delay: float) -> list[int]:
        await asyncio.sleep(delay)
        path = f"/api/v1/deployments/{deployment_id}/events"
        async with open_stream(server, path, alice) as stream:
            seen = await stream.until(is_line(total), timeout=30)
        return [line["seq"] for line in lines_of(seen)]

    results = await asyncio.gather(writer(), *(reader(d * 0.05) for d in range(8)))
    for seqs in results[1:]:
        assert seqs == list(range(1, total + 1))


async def test_status_changes_stream_and_a_failed_deployment_closes_after_its_last_lines(
    delivering: None,
    server: str,
    platform: Platform,
    alice: Account,
    make_deployment: MakeDeployment,
) -> None:
    deployment_id = await make_deployment()
    path = f"/api/v1/deployments/{deployment_id}/events"
    async with open_stream(server, path, alice) as stream:
        assert (await stream.next()).json()["status"] == "prepare"
        await flows.fail_deployment(platform, deployment_id, "Build failed: exit code 2")
        await append(platform, deployment_id, ["a late line"])
        seen = await stream.until(lambda e: e.event == "end", timeout=15)
        with pytest.raises(EOFError):
            await stream.next()
    statuses = [(e.json()["status"], e.json()["conclusion"]) for e in seen if e.event == "status"]
    assert statuses == [("fail", None), ("completed", "failed")]
    messages = [line["message"] for line in lines_of(seen)]
    assert messages == ["Build failed: exit code 2", "a late line"]
    assert seen[-1].json() == {"reason": "concluded"}
    # a failed deployment's stream, opened later, replays everything and closes at once
    async with open_stream(server, path, alice) as stream:
        replay = await stream.until(lambda e: e.event == "end", timeout=5)
    assert [e.event for e in replay] == ["status", "log", "log", "end"]


async def test_stream_ends_when_the_deployment_is_deleted(
    server: str, platform: Platform, alice: Account, make_deployment: MakeDeployment
) -> None:
    deployment_id = await make_deployment()
    path = f"/api/v1/deployments/{deployment_id}/events"
    async with open_stream(server, path, alice) as stream:
        assert (await stream.next()).event == "status"
        async with session_scope(platform.sessions) as session:
            await session.execute(delete(Deployment).where(Deployment.id == deployment_id))
        seen = await stream.until(lambda e: e.event == "end", timeout=10)
        assert seen[-1].json() == {"reason": "gone"}
        with pytest.raises(EOFError):
            await stream.next()


async def test_heartbeats_keep_an_idle_stream_open(
    server: str, alice: Account, make_deployment: MakeDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "HEARTBEAT_SECONDS", 0.2)
    deployment_id = await make_deployment()
    async with open_stream(server, f"/api/v1/deployments/{deployment_id}/events", alice) as s:
        assert (await s.next()).event == "status"
        with pytest.raises(TimeoutError):
            await s.next(timeout=1.0)
        assert any(c.startswith("ping") for c in s.comments), s.comments


async def test_project_stream_sends_created_status_and_alias_events_and_resumes(
    delivering: None,
    server: str,
    platform: Platform,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
) -> None:
    path = f"/api/v1/projects/{project.id}/events"
    async with (
        open_stream(server, path, alice) as stream,
        httpx.AsyncClient(base_url=server, headers=alice.headers) as api,
    ):
        ready = await stream.next()
        assert ready.event == "ready" and ready.id
        created = await api.post(f"/api/v1/projects/{project.id}/deployments", json={})
        assert created.status_code == 201, created.text
        deployment_id = created.json()["id"]
        event = (await stream.until(lambda e: e.event == "deployment.created"))[-1]
        assert event.json()["id"] == deployment_id
        await flows.fail_deployment(platform, deployment_id, "stopped")
        status = (await stream.until(lambda e: e.event == "deployment.status"))[-1]
        assert status.json()["status"] == "fail"
    resume_from = status.id
    assert resume_from is not None
    async with session_scope(platform.sessions) as session:  # one more status event
        row = await session.get(Deployment, deployment_id)
        assert row is not None
        payload = status_payload(row)
        await emit(session, STATUS, project_id=row.project_id, deployment_id=row.id, data=payload)
    async with open_stream(server, path, alice, last_event_id=resume_from) as stream:
        assert (await stream.next()).id == resume_from
        after = (await stream.until(lambda e: e.event == "deployment.status"))[-1]
        assert after.json()["conclusion"] == "failed"
        assert after.id is not None and after.id != resume_from


async def _deployment(platform: Platform, deployment_id: str) -> Deployment:
    async with session_scope(platform.sessions) as session:
        row = await session.get(Deployment, deployment_id)
        assert row is not None
        return row


async def test_other_teams_get_404_on_every_stream_and_search(
    server: str,
    alice: Account,
    bob: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
) -> None:
    deployment_id = await make_deployment()
    async with httpx.AsyncClient(base_url=server, timeout=10) as client:
        for path in (
            f"/api/v1/deployments/{deployment_id}/events",
            f"/api/v1/projects/{project.id}/events",
            f"/api/v1/projects/{project.id}/logs",
            f"/api/v1/projects/{project.id}/logs?q=secret",
        ):
            response = await client.get(path, headers=bob.headers)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found"
            assert (await client.get(path)).status_code == 401
        missing = await client.get("/api/v1/deployments/nope/events", headers=alice.headers)
        assert missing.status_code == 404


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "9" * 40])
async def test_malformed_last_event_id_is_422(
    server: str,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
    last_event_id: str,
) -> None:
    deployment_id = await make_deployment()
    async with httpx.AsyncClient(base_url=server, timeout=10, headers=alice.headers) as client:
        for path in (
            f"/api/v1/deployments/{deployment_id}/events",
            f"/api/v1/projects/{project.id}/events",
        ):
            response = await client.get(path, headers={"Last-Event-ID": last_event_id})
            assert response.status_code == 422, (path, response.text)
            assert "Last-Event-ID" in response.json()["error"]["message"]
