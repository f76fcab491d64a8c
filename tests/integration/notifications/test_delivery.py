"""Notifications from real domain events: the subscriber records one delivery per matching
channel (none twice), and the worker sends them to real local receivers (webhook, Slack,
Discord, SMTP), retrying one that is down without holding back the others."""

from __future__ import annotations

import email
import threading
from collections.abc import Iterator
from email.message import Message
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from arq.constants import default_queue_name
from arq.worker import Worker
from sqlalchemy import select

from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion
from devpush.notifications import service
from devpush.notifications.models import NotificationChannel, NotificationDelivery
from devpush.outbox.models import DomainEvent, SubscriberCursor
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.workers.jobs import worker_settings
from tests.conftest import deliver_events, free_port
from tests.factories.auth import Account
from tests.integration.notifications.receiver import (
    Receiver,
    discord_content,
    slack_text,
    verify,
)
from tests.integration.notifications.test_api import create, make_project


async def run_worker(platform: Platform) -> None:
    """A real arq worker in burst mode: it runs every job, deferred retries included."""
    settings = worker_settings(platform.settings)
    worker = Worker(**{**settings, "burst": True, "handle_signals": False, "poll_delay": 0.01})
    try:
        await worker.main()
    finally:
        await worker.close()


async def fail_deployment(
    platform: Platform, project_id: str, branch: str = "main", error: str = "Build failed: exit 2"
) -> str:
    """A real deployment, concluded failed: the flush writes deployment.created and failed."""
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        deployment, _ = await deployments.create(
            session=session,
            settings=platform.settings,
            project=project,
            branch=branch,
            trigger="api",
            commit_sha="0123456789abcdef0123456789abcdef01234567",
            created_by=None,
        )
        await session.flush()
        deployments.conclude(deployment, Conclusion.failed, error)
        return deployment.id


async def deliveries(platform: Platform) -> list[NotificationDelivery]:
    async with session_scope(platform.sessions) as session:
        return list(
            await session.scalars(
                select(NotificationDelivery).order_by(NotificationDelivery.created_at)
            )
        )


async def test_one_delivery_per_matching_channel_and_none_twice(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account, receiver: Receiver
) -> None:
    site = await make_project(client, alice, "site")
    await make_project(client, alice, "other")
    url = receiver.url("/h")
    ids = {}
    for name, body in {
        "all": {},
        "site": {"projects": [site]},
        "production": {"environments": ["production"]},
        "live-only": {"events": ["deployment.live"]},
        "other": {"projects": ["other"]},
        "staging": {"environments": ["staging"]},
        "disabled": {"enabled": False},
    }.items():
        made = await create(client, alice, url=url, **body)
        assert made.status_code == 201, made.text
        ids[made.json()["id"]] = name
    await create(client, bob, url=url)  # another team's channel hears nothing of alice's

    deployment_id = await fail_deployment(platform, site)
    await deliver_events(platform)
    made = await deliveries(platform)
    assert sorted(ids[d.channel_id] for d in made) == ["all", "production", "site"]
    assert {d.event_type for d in made} == {"deployment.failed"}
    assert all(d.status == "pending" and d.attempts == 0 for d in made)
    queued = await platform.redis.zrange(default_queue_name, 0, -1)
    assert sorted(q.decode() for q in queued) == sorted(f"notify:{d.id}:0" for d in made)

    # The same event delivered again (a dispatcher that died before moving its cursor).
    async with session_scope(platform.sessions) as session:
        event = await session.scalar(
            select(DomainEvent).where(
                DomainEvent.type == "deployment.failed",
                DomainEvent.deployment_id == deployment_id,
            )
        )
        cursor = await session.get(SubscriberCursor, "notifications")
        assert event is not None and cursor is not None
        cursor.txid, cursor.event_id = event.txid, event.id - 1
    await deliver_events(platform)
    assert sorted(d.id for d in await deliveries(platform)) == sorted(d.id for d in made)
    assert receiver.at("/h") == []  # nothing is sent by the subscriber itself


async def test_webhook_slack_and_discord_receive_their_shapes(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    site = await make_project(client, alice, "site")
    webhook = (await create(client, alice, url=receiver.url("/webhook"))).json()
    await create(client, alice, channel="slack", url=receiver.url("/slack"))
    await create(client, alice, channel="discord", url=receiver.url("/discord"))
    # Build output that Slack or Discord would act on if it were not escaped.
    error = "Build failed: <!channel> @everyone <https://evil.example|click> & exit 2"
    deployment_id = await fail_deployment(platform, site, branch="feature/x", error=error)
    await deliver_events(platform)
    await run_worker(platform)

    (hook,) = receiver.at("/webhook")
    assert verify(webhook["secret"], hook)
    assert not verify(webhook["secret"] + "x", hook)
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["x-devpush-event"] == "deployment.failed"
    body: dict[str, Any] = hook.json()
    assert hook.headers["x-devpush-delivery"] == body["delivery"]
    assert body["event"] == "deployment.failed"
    assert body["project"]["id"] == site and body["project"]["name"] == "site"
    assert body["team"]["id"] == alice.team_id
    deployment = body["deployment"]
    assert deployment["id"] == deployment_id
    assert deployment["conclusion"] == "failed" and deployment["error"] == error
    assert deployment["branch"] == "feature/x"
    assert deployment["url"] == deployment["urls"]["deployment"]
    assert f"-id-{deployment_id[:7]}." in deployment["url"]
    assert body["url"] == deployment["url"]

    (slack,) = receiver.at("/slack")
    text = slack_text(slack)  # Slack's documented format, `&`, `<` and `>` escaped
    assert "site: deployment" in text and "failed" in text
    assert error in text and deployment["url"] in text
    assert "x-devpush-signature" not in slack.headers
    (discord,) = receiver.at("/discord")
    assert discord_content(discord) == text  # Discord's, with no mention parsed
    assert {d.status for d in await deliveries(platform)} == {"succeeded"}


async def test_a_receiver_that_is_down_is_retried_then_failed_without_delaying_others(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "BACKOFF", (0.2, 0.2, 0.2, 0.2))
    receiver.status["/down"] = 500
    site = await make_project(client, alice, "site")
    down = (await create(client, alice, url=receiver.url("/down"))).json()
    up = (await create(client, alice, url=receiver.url("/up"))).json()
    # A receiver that is not running at all: nothing listens on its port.
    gone = (await create(client, alice, url=f"http://127.0.0.1:{free_port()}/gone")).json()
    await fail_deployment(platform, site)
    await deliver_events(platform)
    await run_worker(platform)

    assert len(receiver.at("/down")) == 5  # the first attempt and 4 retries
    assert len(receiver.at("/up")) == 1
    by_channel = {d.channel_id: d for d in await deliveries(platform)}
    failed, sent = by_channel[down["id"]], by_channel[up["id"]]
    assert failed.status == "failed" and failed.attempts == 5
    assert failed.response_code == 500 and "HTTP 500" in (failed.last_error or "")
    unreachable = by_channel[gone["id"]]
    assert (unreachable.status, unreachable.attempts) == ("failed", 5)
    assert "could not reach the receiver" in (unreachable.last_error or "")
    assert sent.status == "succeeded" and sent.attempts == 1
    # The working channel was served at once, not after the other's retries.
    assert sent.last_attempt_at and failed.last_attempt_at
    first_down = receiver.at("/down")[0]
    assert sent.last_attempt_at < failed.last_attempt_at and first_down is not None
    channels = (
        await client.get(f"/api/v1/teams/{alice.team_slug}/notifications", headers=alice.headers)
    ).json()
    state = {c["id"]: (c["state"], c["consecutive_failures"]) for c in channels}
    assert state == {down["id"]: ("failing", 5), up["id"]: ("ok", 0), gone["id"]: ("failing", 5)}
    log = (
        await client.get(f"/api/v1/notifications/{down['id']}/deliveries", headers=alice.headers)
    ).json()
    assert [(d["status"], d["attempts"]) for d in log["items"]] == [("failed", 5)]

    # It keeps receiving new events, and a success makes it ok again.
    receiver.status["/down"] = 200
    await fail_deployment(platform, site)
    await deliver_events(platform)
    await run_worker(platform)
    again = (await client.get(f"/api/v1/notifications/{down['id']}", headers=alice.headers)).json()
    assert again["state"] == "ok" and again["consecutive_failures"] == 0


async def test_a_job_run_twice_sends_once(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    from devpush.notifications.delivery import attempt

    site = await make_project(client, alice, "site")
    await create(client, alice, url=receiver.url("/h"))
    await fail_deployment(platform, site)
    await deliver_events(platform)
    (delivery,) = await deliveries(platform)
    assert await attempt(platform, delivery.id, 0) is not None
    assert await attempt(platform, delivery.id, 0) is None
    assert len(receiver.at("/h")) == 1


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def mailbox(platform: Platform) -> Iterator[Mailbox]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    platform.settings.smtp_url = f"smtp://127.0.0.1:{port}"
    try:
        yield box
    finally:
        controller.stop()


async def test_email_channel_sends_a_mail(
    client: httpx.AsyncClient, platform: Platform, alice: Account, mailbox: Mailbox
) -> None:
    site = await make_project(client, alice, "site")
    made = await create(client, alice, channel="email", email="ops@example.com")
    assert made.status_code == 201, made.text
    await fail_deployment(platform, site)
    await deliver_events(platform)
    await run_worker(platform)
    (message,) = mailbox.messages
    assert message["To"] == "ops@example.com"
    assert "site: deployment" in message["Subject"] and "failed" in message["Subject"]
    text = message.get_payload(decode=True)
    assert isinstance(text, bytes) and b"Build failed: exit 2" in text
    tested = await client.post(
        f"/api/v1/notifications/{made.json()['id']}/test", headers=alice.headers
    )
    assert tested.json()["status"] == "succeeded" and len(mailbox.messages) == 2


async def test_a_deleted_channel_takes_its_deliveries(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    site = await make_project(client, alice, "site")
    channel = (await create(client, alice, url=receiver.url("/h"))).json()
    await fail_deployment(platform, site)
    await deliver_events(platform)
    await client.delete(f"/api/v1/notifications/{channel['id']}", headers=alice.headers)
    await run_worker(platform)  # the queued job finds nothing to send
    assert receiver.at("/h") == [] and await deliveries(platform) == []
    async with session_scope(platform.sessions) as session:
        assert list(await session.scalars(select(NotificationChannel))) == []


async def test_a_lost_job_is_enqueued_again_by_the_sweep(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    from datetime import timedelta

    from devpush.db import utcnow
    from devpush.notifications.sweep import sweep

    site = await make_project(client, alice, "site")
    await create(client, alice, url=receiver.url("/h"))
    await fail_deployment(platform, site)
    await deliver_events(platform)
    await platform.redis.flushdb()  # Redis lost its queue
    assert await sweep(platform) == 0
    assert await platform.redis.zcard(default_queue_name) == 0  # not overdue yet
    async with session_scope(platform.sessions) as session:
        (delivery,) = await session.scalars(select(NotificationDelivery))
        delivery.next_attempt_at = utcnow() - timedelta(minutes=5)
    assert await sweep(platform) == 1
    await run_worker(platform)
    assert len(receiver.at("/h")) == 1
    assert [d.status for d in await deliveries(platform)] == ["succeeded"]
