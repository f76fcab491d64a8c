"""The notifications API: channels created, read, changed and deleted with their failure paths
(bad input, private URLs, other teams' channels and projects, roles); secrets shown once and
stored encrypted; the test send and the delivery log against a real local receiver."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from devpush.audit.models import AuditEvent
from devpush.db import session_scope
from devpush.notifications.models import NotificationChannel
from devpush.outbox.names import PUBLIC_EVENTS
from devpush.platform import Platform
from devpush.teams.models import Role
from tests.factories.auth import Account, add_member, make_account
from tests.integration.notifications.receiver import Receiver, verify


async def make_project(client: httpx.AsyncClient, account: Account, name: str = "site") -> str:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={
            "name": name,
            "start_command": "x",
            "environments": [{"name": "staging", "branch_pattern": "dev"}],
        },
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def create(client: httpx.AsyncClient, account: Account, **body: Any) -> httpx.Response:
    body.setdefault("channel", "webhook")
    body.setdefault("events", ["deployment.failed"])
    return await client.post(
        f"/api/v1/teams/{account.team_slug}/notifications", json=body, headers=account.headers
    )


async def test_webhook_channel_lifecycle(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    project = await make_project(client, alice)
    url = receiver.url("/hook/secret-path-token")
    created = await create(
        client,
        alice,
        url=url,
        events=["deployment.failed", "deployment.live"],
        projects=["site"],
        environments=["Staging"],
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    channel = created.json()
    secret = channel["secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    assert channel["projects"] == [project] and channel["environments"] == ["staging"]
    assert channel["target"] == f"http://127.0.0.1:{receiver.port}/…"
    assert channel["state"] == "ok" and channel["enabled"] is True

    listed = await client.get(
        f"/api/v1/teams/{alice.team_slug}/notifications", headers=alice.headers
    )
    assert [c["id"] for c in listed.json()] == [channel["id"]]
    assert secret not in listed.text and "secret-path-token" not in listed.text
    one = await client.get(f"/api/v1/notifications/{channel['id']}", headers=alice.headers)
    assert one.status_code == 200 and "secret" not in one.json()
    async with session_scope(platform.sessions) as session:
        row = await session.get(NotificationChannel, channel["id"])
        assert row is not None and row.url_enc and row.secret_enc
        assert "secret-path-token" not in row.url_enc and secret not in row.secret_enc

    changed = await client.patch(
        f"/api/v1/notifications/{channel['id']}",
        json={"events": ["deployment.crashed"], "enabled": False},
        headers=alice.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["deployment.crashed"]
    assert changed.json()["enabled"] is False

    tested = await client.post(f"/api/v1/notifications/{channel['id']}/test", headers=alice.headers)
    assert tested.status_code == 200, tested.text
    assert tested.json()["status"] == "succeeded" and tested.json()["event"] == "test"
    (request,) = receiver.at("/hook/secret-path-token")
    assert verify(secret, request) and request.headers["x-devpush-event"] == "test"
    assert request.headers["x-devpush-delivery"] == tested.json()["id"]
    assert request.json()["event"] == "test"

    log = await client.get(
        f"/api/v1/notifications/{channel['id']}/deliveries", headers=alice.headers
    )
    assert [d["id"] for d in log.json()["items"]] == [tested.json()["id"]]
    assert log.json()["items"][0]["attempts"] == 1

    deleted = await client.delete(f"/api/v1/notifications/{channel['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/api/v1/notifications/{channel['id']}", headers=alice.headers)
    assert gone.status_code == 404
    async with session_scope(platform.sessions) as session:
        actions = list(
            await session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.resource_type == "notification")
                .order_by(AuditEvent.created_at)
            )
        )
        data = list(await session.scalars(select(AuditEvent.data)))
    assert actions == ["notification.create", "notification.update", "notification.delete"]
    assert all(secret not in str(d) and "secret-path-token" not in str(d) for d in data)


async def test_a_failed_test_send_says_why(
    client: httpx.AsyncClient, alice: Account, receiver: Receiver
) -> None:
    receiver.status["/down"] = 503
    channel = (await create(client, alice, url=receiver.url("/down"))).json()
    tested = await client.post(f"/api/v1/notifications/{channel['id']}/test", headers=alice.headers)
    assert tested.status_code == 200
    result = tested.json()
    assert result["status"] == "failed" and result["response_code"] == 503
    assert "HTTP 503" in result["last_error"] and result["attempts"] == 1
    again = await client.get(f"/api/v1/notifications/{channel['id']}", headers=alice.headers)
    assert again.json()["state"] == "ok"  # a test never marks a channel failing


BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"channel": "pigeon"}, "channel"),
    ({"channel": 3}, "channel"),
    ({"events": "deployment.failed"}, "events"),
    ({"events": []}, "events"),
    ({"events": ["deployment.exploded"]}, "choose from: deployment.created"),
    ({"events": ["<script>alert(1)</script>"]}, "unknown event"),
    ({"url": None}, "needs 'url'"),
    ({"url": "ftp://example.com/hook"}, "https://"),
    ({"url": "not a url"}, "spaces"),
    ({"url": "https://"}, "no host"),
    ({"url": "https://example.com/\r\nX-Evil: 1"}, "control characters"),
    ({"url": "https://example.com:99999/"}, "malformed"),
    ({"url": "https://" + "a" * 2000}, "url"),
    ({"url": "https://example.com/h", "email": "a@example.com"}, "not 'email'"),
    ({"projects": "site"}, "projects"),
    ({"environments": ["nowhere"]}, "no environment 'nowhere'"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
async def test_bad_input_is_a_clear_422_and_creates_nothing(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    receiver: Receiver,
    body: dict[str, Any],
    message: str,
) -> None:
    await make_project(client, alice)
    body = {"url": receiver.url("/h"), **body}
    response = await create(client, alice, **body)
    assert response.status_code == 422, response.text
    assert message in response.text, response.text
    async with session_scope(platform.sessions) as session:
        assert list(await session.scalars(select(NotificationChannel))) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://192.168.0.10/hook",
        "http://0.0.0.0/",
    ],
)
async def test_private_addresses_are_refused(
    client: httpx.AsyncClient, platform: Platform, alice: Account, url: str
) -> None:
    assert platform.settings.notifications_allow_private is False
    response = await create(client, alice, url=url)
    assert response.status_code == 422, response.text
    assert "public addresses only" in response.json()["error"]["message"]


async def test_a_private_address_is_refused_again_at_delivery(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    channel = (await create(client, alice, url=receiver.url("/later"))).json()
    platform.settings.notifications_allow_private = False  # the operator turned it off since
    tested = await client.post(f"/api/v1/notifications/{channel['id']}/test", headers=alice.headers)
    assert tested.json()["status"] == "failed"
    assert "public addresses only" in tested.json()["last_error"]
    assert receiver.at("/later") == []


async def test_email_channels_need_an_address_and_a_mail_server(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    no_smtp = await create(client, alice, channel="email", email="ops@example.com")
    assert no_smtp.status_code == 409
    assert "DEVPUSH_SMTP_URL" in no_smtp.json()["error"]["message"]
    platform.settings.smtp_url = "smtp://127.0.0.1:9"
    missing = await create(client, alice, channel="email")
    assert missing.status_code == 422 and "needs 'email'" in missing.text
    bad = await create(client, alice, channel="email", email="not an address")
    assert bad.status_code == 422 and "not a valid email" in bad.text
    with_url = await create(
        client, alice, channel="email", email="ops@example.com", url="https://example.com"
    )
    assert with_url.status_code == 422
    made = await create(client, alice, channel="email", email="Ops@Example.com")
    assert made.status_code == 201 and made.json()["secret"] is None
    assert made.json()["target"] == "ops@example.com"


async def test_other_teams_channels_and_projects_are_not_found(
    client: httpx.AsyncClient, platform: Platform, alice: Account, bob: Account, receiver: Receiver
) -> None:
    bobs_project = await make_project(client, bob, "bobs")
    foreign = await create(client, alice, url=receiver.url("/h"), projects=[bobs_project])
    assert foreign.status_code == 404 and bobs_project in foreign.text
    channel = (await create(client, alice, url=receiver.url("/h"))).json()
    base = f"/api/v1/notifications/{channel['id']}"
    for method, path in [
        ("GET", base),
        ("PATCH", base),
        ("DELETE", base),
        ("POST", f"{base}/test"),
        ("GET", f"{base}/deliveries"),
    ]:
        body = {"enabled": False} if method == "PATCH" else None
        response = await client.request(method, path, json=body, headers=bob.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["message"] == "no such notification channel"
    listed = await client.get(f"/api/v1/teams/{alice.team_slug}/notifications", headers=bob.headers)
    assert listed.status_code == 404
    made = await create(client, bob, url=receiver.url("/h"))
    assert made.status_code == 201  # in bob's own team
    unknown = await client.get("/api/v1/notifications/" + "x" * 40, headers=alice.headers)
    assert unknown.status_code in (404, 422)
    assert receiver.at("/h") == []


async def test_members_read_but_only_admins_change(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    member = await make_account(platform, "mia@example.com")
    await add_member(platform, member, alice.team_id, Role.member)
    channel = (await create(client, alice, url=receiver.url("/h"))).json()
    base = f"/api/v1/notifications/{channel['id']}"
    listed = await client.get(
        f"/api/v1/teams/{alice.team_slug}/notifications", headers=member.headers
    )
    assert listed.status_code == 200 and len(listed.json()) == 1
    assert (await client.get(base, headers=member.headers)).status_code == 200
    assert (await client.get(f"{base}/deliveries", headers=member.headers)).status_code == 200
    refused = [
        await client.post(
            f"/api/v1/teams/{alice.team_slug}/notifications",
            json={"channel": "webhook", "url": receiver.url("/h"), "events": ["deployment.live"]},
            headers=member.headers,
        ),
        await client.patch(base, json={"enabled": False}, headers=member.headers),
        await client.delete(base, headers=member.headers),
        await client.post(f"{base}/test", headers=member.headers),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403, 403]
    assert "may not manage" in refused[0].json()["error"]["message"]
    assert receiver.at("/h") == []


async def test_patch_failure_paths_change_nothing(
    client: httpx.AsyncClient, alice: Account, bob: Account, receiver: Receiver
) -> None:
    channel = (await create(client, alice, url=receiver.url("/h"))).json()
    base = f"/api/v1/notifications/{channel['id']}"
    bobs_project = await make_project(client, bob, "bobs")
    for body, status in [
        ({"events": ["nope"]}, 422),
        ({"events": []}, 422),
        ({"url": "gopher://x"}, 422),
        ({"email": "a@example.com"}, 422),
        ({"projects": [bobs_project]}, 404),
        ({"channel": "slack"}, 422),
        ({"enabled": "maybe"}, 422),
    ]:
        response = await client.patch(base, json=body, headers=alice.headers)
        assert response.status_code == status, (body, response.text)
    after = (await client.get(base, headers=alice.headers)).json()
    assert after["events"] == ["deployment.failed"] and after["projects"] == []
    assert after["enabled"] is True


async def test_delivery_log_pages(
    client: httpx.AsyncClient, alice: Account, receiver: Receiver
) -> None:
    channel = (await create(client, alice, url=receiver.url("/h"))).json()
    base = f"/api/v1/notifications/{channel['id']}"
    ids = [
        (await client.post(f"{base}/test", headers=alice.headers)).json()["id"] for _ in range(3)
    ]
    first = (await client.get(f"{base}/deliveries?limit=2", headers=alice.headers)).json()
    assert [d["id"] for d in first["items"]] == ids[::-1][:2] and first["next_cursor"]
    rest = await client.get(
        f"{base}/deliveries",
        params={"limit": 2, "cursor": first["next_cursor"]},
        headers=alice.headers,
    )
    assert [d["id"] for d in rest.json()["items"]] == [ids[0]]
    assert rest.json()["next_cursor"] is None
    bad = await client.get(f"{base}/deliveries?cursor=%%%", headers=alice.headers)
    assert bad.status_code == 422


def test_every_public_event_is_accepted() -> None:
    from devpush.notifications.service import check_events

    assert check_events(list(PUBLIC_EVENTS)) == list(PUBLIC_EVENTS)
