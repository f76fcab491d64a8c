"""Domain events through the outbox, against real PostgreSQL and Redis: written with the state
change or not at all, delivered at least once and in commit order to each subscriber, a
failing subscriber retried with backoff without holding back the others."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from devpush.audit.models import AuditEvent
from devpush.db import session_scope, utcnow
from devpush.deployments import flows
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Deployment, InstanceHealth
from devpush.events import deployment_stream, project_stream
from devpush.outbox.dispatch import Dispatcher, Subscriber
from devpush.outbox.emit import emit
from devpush.outbox.models import DomainEvent, SubscriberCursor
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.teams.models import Team
from tests.conftest import deliver_events
from tests.factories.auth import Account

pytestmark = pytest.mark.asyncio


async def _project(platform: Platform, alice: Account) -> Project:
    from devpush.projects.schemas import ProjectCreate
    from devpush.projects.service import create_project

    async with session_scope(platform.sessions) as session:
        return await create_project(
            session=session,
            team_id=alice.team_id,
            body=ProjectCreate(name="events-app", repo_url="https://example.com/events.git"),
        )


async def _deploy(platform: Platform, project: Project, branch: str = "main") -> Deployment:
    async with session_scope(platform.sessions) as session:
        row = await session.get(Project, project.id)
        assert row is not None
        deployment, _ = await deployments.create(
            session=session,
            settings=platform.settings,
            project=row,
            branch=branch,
            trigger="api",
            commit_sha=None,
            created_by=None,
        )
        return deployment


async def _events(platform: Platform) -> list[DomainEvent]:
    async with session_scope(platform.sessions) as session:
        return list(await session.scalars(select(DomainEvent).order_by(DomainEvent.id)))


async def test_a_deployments_life_is_written_with_its_changes(
    platform: Platform, alice: Account
) -> None:
    project = await _project(platform, alice)
    deployment = await _deploy(platform, project)
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
        row.prepare_started_at = utcnow()
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
        deployments.conclude(row, Conclusion.failed, "Build failed: exit 2")
    kinds = [(e.type, e.deployment_id, e.team_id) for e in await _events(platform)]
    assert kinds == [
        ("deployment.created", deployment.id, alice.team_id),
        ("deployment.building", deployment.id, alice.team_id),
        ("deployment.failed", deployment.id, alice.team_id),
    ]
    failed = (await _events(platform))[-1]
    assert failed.data["error"] == "Build failed: exit 2" and failed.data["conclusion"] == "failed"


async def test_a_change_rolled_back_leaves_no_event(platform: Platform, alice: Account) -> None:
    project = await _project(platform, alice)
    deployment = await _deploy(platform, project)
    before = len(await _events(platform))
    with pytest.raises(RuntimeError):
        async with session_scope(platform.sessions) as session:
            row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
            deployments.conclude(row, Conclusion.canceled, "by a user")
            await session.flush()  # the event is written here...
            raise RuntimeError("...and goes with the transaction")
    assert len(await _events(platform)) == before


async def test_crashes_and_restarts_are_events(platform: Platform, alice: Account) -> None:
    project = await _project(platform, alice)
    deployment = await _deploy(platform, project)
    for health in (InstanceHealth.restarting, None, InstanceHealth.crashed):
        async with session_scope(platform.sessions) as session:
            row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
            row.instance_health = health
    assert [e.type for e in await _events(platform)][-3:] == [
        "deployment.status",
        "deployment.status",
        "deployment.crashed",
    ]


def _recorder(seen: list[int], fail: set[int] | None = None) -> Subscriber:
    async def handle(event: DomainEvent) -> None:
        if fail and event.id in fail:
            raise ConnectionError("receiver down")
        seen.append(event.id)

    return Subscriber(f"test-{id(seen)}", handle)


async def test_a_failing_subscriber_retries_with_backoff_and_holds_back_only_itself(
    platform: Platform, alice: Account
) -> None:
    project = await _project(platform, alice)
    good: list[int] = []
    bad: list[int] = []
    down: set[int] = set()
    dispatcher = Dispatcher(platform.sessions, [_recorder(good), _recorder(bad, down)])
    await dispatcher.ensure_cursors()
    first = await _deploy(platform, project)
    ids = [e.id for e in await _events(platform) if e.deployment_id == first.id]
    down.update(ids)  # the bad one's receiver is down for these
    await dispatcher.deliver()
    assert good == ids and bad == []
    async with session_scope(platform.sessions) as session:
        cursor = await session.get(SubscriberCursor, f"test-{id(bad)}")
        assert cursor is not None
        assert cursor.failures == 1 and "ConnectionError: receiver down" in (
            cursor.last_error or ""
        )
        assert cursor.retry_at is not None and cursor.retry_at > utcnow()
    second = await _deploy(platform, project, branch="other")
    await dispatcher.deliver()  # within the backoff: the bad one is not called again
    assert bad == [] and len(good) == len(ids) + 1
    down.clear()
    async with session_scope(platform.sessions) as session:  # the backoff ends
        await session.execute(
            update(SubscriberCursor)
            .where(SubscriberCursor.name == f"test-{id(bad)}")
            .values(retry_at=utcnow() - timedelta(seconds=1))
        )
    await dispatcher.deliver()
    assert bad == good  # everything, once, in order
    assert second.id


async def test_a_slow_subscriber_holds_back_no_other(platform: Platform, alice: Account) -> None:
    """A subscriber still busy with an event (within its timeout) delays only itself: in its
    dispatcher the others are not queued behind it, and another dispatcher delivers the events
    written meanwhile to them (the busy one's open transaction does not hold them back)."""
    project = await _project(platform, alice)
    started, release = asyncio.Event(), asyncio.Event()
    slow_seen: list[int] = []
    quick_seen: list[int] = []

    async def slow(event: DomainEvent) -> None:
        started.set()
        await release.wait()
        slow_seen.append(event.id)

    async def quick(event: DomainEvent) -> None:
        quick_seen.append(event.id)

    subscribers = [Subscriber("slow", slow), Subscriber("quick", quick)]
    one, other = (
        Dispatcher(platform.sessions, subscribers),
        Dispatcher(platform.sessions, subscribers),
    )
    await one.ensure_cursors()
    await _deploy(platform, project)
    busy = asyncio.create_task(one.deliver())
    try:
        await asyncio.wait_for(started.wait(), 10)
        for _ in range(100):  # the same dispatcher serves the quick one meanwhile
            if quick_seen:
                break
            await asyncio.sleep(0.05)
        assert quick_seen == [e.id for e in await _events(platform)]
        await _deploy(platform, project, branch="other")
        await other.deliver()  # the slow one is taken by `one`: skipped, not waited for
        ids = [e.id for e in await _events(platform)]
        assert quick_seen == ids and slow_seen == []
    finally:
        release.set()
        await busy
    await one.deliver()
    assert slow_seen == ids


async def test_an_event_committed_late_is_not_skipped(platform: Platform, alice: Account) -> None:
    seen: list[str] = []

    async def handle(event: DomainEvent) -> None:
        seen.append(event.data["name"])

    dispatcher = Dispatcher(platform.sessions, [Subscriber("late", handle)])
    await dispatcher.ensure_cursors()
    slow = platform.sessions()
    await slow.begin()
    await emit(slow, "deployment.status", data={"name": "early-but-slow"})  # not committed
    async with session_scope(platform.sessions) as session:
        await emit(session, "deployment.status", data={"name": "late-but-quick"})
    await dispatcher.deliver()
    assert seen == []  # the quick one waits: an older transaction may still write
    await slow.commit()
    await slow.close()
    await dispatcher.deliver()
    assert seen == ["early-but-slow", "late-but-quick"]


async def test_a_new_subscriber_starts_after_the_newest_event(
    platform: Platform, alice: Account
) -> None:
    project = await _project(platform, alice)
    await _deploy(platform, project)
    seen: list[int] = []
    dispatcher = Dispatcher(platform.sessions, [_recorder(seen)])
    await dispatcher.ensure_cursors()
    assert await dispatcher.deliver() == 0
    await _deploy(platform, project, branch="other")
    await dispatcher.deliver()
    assert len(seen) == 1


async def test_two_dispatchers_deliver_each_event_once(platform: Platform, alice: Account) -> None:
    project = await _project(platform, alice)
    seen: list[int] = []

    async def slow(event: DomainEvent) -> None:
        await asyncio.sleep(0.05)
        seen.append(event.id)

    subscriber = Subscriber("once", slow)
    a, b = Dispatcher(platform.sessions, [subscriber]), Dispatcher(platform.sessions, [subscriber])
    await a.ensure_cursors()
    for n in range(5):
        await _deploy(platform, project, branch=f"b{n}")
    for _ in range(3):
        await asyncio.gather(a.deliver(), b.deliver())
    assert sorted(seen) == [e.id for e in await _events(platform)]  # each once


async def test_the_platform_subscribers_feed_live_views_and_the_audit_log(
    platform: Platform, alice: Account
) -> None:
    project = await _project(platform, alice)
    deployment = await _deploy(platform, project)
    async with session_scope(platform.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
        deployments.conclude(row, Conclusion.failed, "Build failed")
    await deliver_events(platform)
    project_entries = await platform.redis.xrange(project_stream(project.id))
    kinds = [fields[b"type"].decode() for _, fields in project_entries]
    assert kinds == ["deployment.created", "deployment.status"]
    status = json.loads(project_entries[-1][1][b"data"])
    assert status["conclusion"] == "failed"
    assert await platform.redis.xlen(deployment_stream(deployment.id)) == 1
    async with session_scope(platform.sessions) as session:
        audit = list(
            await session.scalars(select(AuditEvent).where(AuditEvent.team_id == alice.team_id))
        )
    actions = sorted(a.action for a in audit if a.resource_id == deployment.id)
    assert "deployment.failed" in actions and "deployment.created" in actions
    # redelivered (a dispatcher died before moving its cursor): no second audit entry
    async with session_scope(platform.sessions) as session:
        await session.execute(update(SubscriberCursor).values(txid=0, event_id=0))
    await deliver_events(platform)
    async with session_scope(platform.sessions) as session:
        again = list(
            await session.scalars(select(AuditEvent).where(AuditEvent.team_id == alice.team_id))
        )
    assert len(again) == len(audit)


async def test_an_event_of_a_deleted_team_is_passed_over(
    platform: Platform, alice: Account
) -> None:
    project = await _project(platform, alice)
    deployment = await _deploy(platform, project)
    async with session_scope(platform.sessions) as session:
        team = await session.get(Team, alice.team_id)
        await session.delete(team)
    await deliver_events(platform)
    async with session_scope(platform.sessions) as session:
        cursors = list(await session.scalars(select(SubscriberCursor)))
        assert all(c.failures == 0 for c in cursors), [(c.name, c.last_error) for c in cursors]
    assert deployment.id
    assert flows  # the flow module imports with no GitHub reference needed
