"""The notifications page through the ASGI app, as a browser posts it: the form's failure
paths (bad input, no CSRF token, a member, another team's channel) and the secret shown once."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from devpush.db import session_scope
from devpush.notifications.models import NotificationChannel
from devpush.platform import Platform
from devpush.teams.models import Role
from tests.factories.auth import Account, add_member, make_account
from tests.integration.notifications.receiver import Receiver
from tests.integration.notifications.test_api import create
from tests.integration.web.conftest import Browser, sign_in

FORM = {"channel": "webhook", "events": "deployment.failed"}


async def channels(platform: Platform) -> list[NotificationChannel]:
    async with session_scope(platform.sessions) as session:
        return list(await session.scalars(select(NotificationChannel)))


async def test_page_adds_shows_the_secret_once_and_refuses_bad_input(
    platform: Platform, alice: Account, browsers: Any, receiver: Receiver
) -> None:
    web: Browser = await browsers()
    await sign_in(platform, web, alice.user_id)
    page = f"/t/{alice.team_slug}/notifications"
    shown = await web.get(page)
    assert shown.status_code == 200 and "No channels yet." in shown.text

    for form, message in [
        ({**FORM, "target": "ftp://x.example"}, "https://"),
        ({**FORM, "target": receiver.url("/h"), "events": "deployment.nope"}, "choose from"),
        ({"channel": "webhook", "target": receiver.url("/h")}, "events"),
        ({**FORM, "channel": "pigeon", "target": receiver.url("/h")}, "channel"),
        ({**FORM, "target": receiver.url("/h"), "projects": "x" * 40}, "no project"),
        ({**FORM, "channel": "email", "target": "ops@example.com"}, "DEVPUSH_SMTP_URL"),
    ]:
        refused = await web.post(page, form)
        assert refused.status_code == 422, (form, refused.text[:300])
        assert message in refused.text, form
    assert await channels(platform) == []
    no_csrf = await web.post(page, {**FORM, "target": receiver.url("/h")}, csrf=False)
    assert no_csrf.status_code == 403 and await channels(platform) == []

    added = await web.post(page, {**FORM, "target": receiver.url("/h")})
    assert added.status_code == 200 and added.headers["cache-control"] == "no-store"
    (channel,) = await channels(platform)
    secret = added.text.split("data-secret>", 1)[1].split("<", 1)[0]
    assert secret.startswith("whsec_")
    again = await web.get(page)
    assert secret not in again.text and channel.id in again.text
    assert receiver.url("/h") not in again.text  # the path is masked

    tested = await web.post(f"{page}/{channel.id}/test")
    assert tested.status_code == 303
    log = await web.get(page)
    assert "The test notification was delivered." in log.text and "data-delivery" in log.text
    assert len(receiver.at("/h")) == 1


async def test_page_actions_need_manage_and_the_teams_own_channel(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    bob: Account,
    browsers: Any,
    receiver: Receiver,
) -> None:
    channel = (await create(client, alice, url=receiver.url("/h"))).json()
    member = await make_account(platform, "mia@example.com")
    await add_member(platform, member, alice.team_id, Role.member)
    mia: Browser = await browsers()
    await sign_in(platform, mia, member.user_id)
    page = f"/t/{alice.team_slug}/notifications"
    seen = await mia.get(page)
    assert (
        seen.status_code == 200 and channel["id"] in seen.text and "Add a channel" not in seen.text
    )
    for path in (page, f"{page}/{channel['id']}/test", f"{page}/{channel['id']}/delete"):
        refused = await mia.post(path, {**FORM, "target": receiver.url("/h")})
        assert refused.status_code == 403, path

    bob_web: Browser = await browsers()
    await sign_in(platform, bob_web, bob.user_id)
    assert (await bob_web.get(page)).status_code == 404
    own = f"/t/{bob.team_slug}/notifications/{channel['id']}"
    for path in (f"{own}/test", f"{own}/delete"):
        assert (await bob_web.post(path)).status_code == 404, path
    assert len(await channels(platform)) == 1 and receiver.at("/h") == []

    alice_web: Browser = await browsers()
    await sign_in(platform, alice_web, alice.user_id)
    removed = await alice_web.post(f"{page}/{channel['id']}/delete")
    assert removed.status_code == 303 and await channels(platform) == []
