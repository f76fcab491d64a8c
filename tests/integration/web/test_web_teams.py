"""Teams on the pages and in the API: create, rename, delete; roles and the last-owner rule;
invites by email (create, resend, revoke, accept as the invited address only)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from devpush.db import session_scope
from devpush.platform import Platform
from devpush.teams.models import Role, Team, TeamInvite, TeamMember
from tests.factories.auth import Account, add_member
from tests.integration.web.conftest import Browser, Mailbox, sign_in


async def role_of(platform: Platform, team_id: str, user_id: str) -> Role | None:
    async with session_scope(platform.sessions) as session:
        member = await session.get(TeamMember, (team_id, user_id))
        return member.role if member else None


async def test_create_and_rename_a_team_on_the_pages(alice_web: Browser) -> None:
    empty = await alice_web.post("/teams/new", {"name": "  "})
    assert empty.status_code == 422 and 'data-error-for="name"' in empty.text
    created = await alice_web.post("/teams/new", {"name": "Acme Corp"})
    assert created.status_code == 303 and created.headers["location"] == "/t/acme-corp"
    page = await alice_web.get("/t/acme-corp")
    assert "No projects yet" in page.text
    renamed = await alice_web.post("/t/acme-corp/settings/name", {"name": "Acme"}, htmx=True)
    assert renamed.status_code == 200 and "Saved." in renamed.text
    invalid = await alice_web.post("/t/acme-corp/settings/name", {"name": "x" * 101}, htmx=True)
    assert invalid.status_code == 422 and 'data-error-for="name"' in invalid.text
    assert 'value="Acme"' in (await alice_web.get("/t/acme-corp/settings")).text


async def test_invite_accept_flow_on_the_pages(
    alice_web: Browser,
    alice: Account,
    bob: Account,
    browsers: Any,
    mailbox: Mailbox,
    platform: Platform,
) -> None:
    sent = await alice_web.post(
        f"/t/{alice.team_slug}/invites", {"email": "Bob@Example.com", "role": "admin"}, htmx=True
    )
    assert sent.status_code == 200 and "Invitation sent to bob@example.com" in sent.text
    again = await alice_web.post(
        f"/t/{alice.team_slug}/invites", {"email": "bob@example.com"}, htmx=True
    )
    assert again.status_code == 422 and "already invited" in again.text
    link = mailbox.last_link("bob@example.com")

    # the invite page asks a stranger to sign in; a wrong user is turned away
    stranger = await browsers()
    page = await stranger.open_link(link)
    assert page.status_code == 200 and "Sign in to accept" in page.text
    carol = await browsers()
    from tests.factories.auth import make_account

    carol_account = await make_account(platform, "carol@example.com")
    await sign_in(platform, carol, carol_account.user_id)
    wrong = await carol.post(httpx.URL(link).path + "/accept")
    assert wrong.status_code == 403 and "bob@example.com" in wrong.text

    bob_web = await browsers()
    await sign_in(platform, bob_web, bob.user_id)
    accepted = await bob_web.post(httpx.URL(link).path + "/accept")
    assert accepted.status_code == 303 and accepted.headers["location"] == f"/t/{alice.team_slug}"
    assert await role_of(platform, alice.team_id, bob.user_id) == Role.admin
    used = await bob_web.open_link(link)
    assert used.status_code == 404 and "already used" in used.text
    assert (await bob_web.get(f"/t/{alice.team_slug}")).status_code == 200


async def test_resend_replaces_the_link_and_revoke_kills_it(
    alice_web: Browser, alice: Account, mailbox: Mailbox, platform: Platform, browsers: Any
) -> None:
    await alice_web.post(f"/t/{alice.team_slug}/invites", {"email": "dan@example.com"})
    first = mailbox.last_link("dan@example.com")
    async with session_scope(platform.sessions) as session:
        invite = await session.scalar(
            select(TeamInvite).where(TeamInvite.email == "dan@example.com")
        )
        assert invite is not None
    resent = await alice_web.post(f"/t/{alice.team_slug}/invites/{invite.id}/resend", htmx=True)
    assert resent.status_code == 200 and "sent again" in resent.text
    second = mailbox.last_link("dan@example.com")
    assert second != first
    anyone = await browsers()
    assert (await anyone.open_link(first)).status_code == 404
    assert (await anyone.open_link(second)).status_code == 200
    revoked = await alice_web.post(f"/t/{alice.team_slug}/invites/{invite.id}/revoke", htmx=True)
    assert revoked.status_code == 200 and "revoked" in revoked.text
    assert (await anyone.open_link(second)).status_code == 404
    # an invited address may sign up even with an empty allowlist: not once it is revoked
    await anyone.post("/auth/sign-in", {"email": "dan@example.com"})
    assert len(mailbox.to("dan@example.com")) == 2


async def test_last_owner_cannot_be_demoted_or_removed(
    alice_web: Browser, alice: Account, bob: Account, platform: Platform, client: httpx.AsyncClient
) -> None:
    demote = await alice_web.post(
        f"/t/{alice.team_slug}/members/{alice.user_id}/role", {"role": "member"}, htmx=True
    )
    assert demote.status_code == 422 and "last owner" in demote.text
    leave = await alice_web.post(f"/account/teams/{alice.team_slug}/leave")
    assert leave.status_code == 409 and "last owner" in leave.text
    assert await role_of(platform, alice.team_id, alice.user_id) == Role.owner

    api = f"/api/v1/teams/{alice.team_slug}/members/{alice.user_id}"
    patch = await client.patch(api, json={"role": "admin"}, headers=alice.headers)
    assert patch.status_code == 409 and "last owner" in patch.json()["error"]["message"]
    delete = await client.delete(api, headers=alice.headers)
    assert delete.status_code == 409

    # with a second owner, the first may step down
    await add_member(platform, bob, alice.team_id, Role.owner)
    patch = await client.patch(api, json={"role": "member"}, headers=alice.headers)
    assert patch.status_code == 200 and patch.json()["role"] == "member"
    back = await client.patch(api, json={"role": "owner"}, headers=alice.headers)
    assert back.status_code == 403  # members manage nothing


async def test_admins_manage_members_but_not_owners(
    client: httpx.AsyncClient, alice: Account, bob: Account, platform: Platform
) -> None:
    from tests.factories.auth import make_account

    carol = await make_account(platform, "carol@example.com")
    await add_member(platform, bob, alice.team_id, Role.admin)
    await add_member(platform, carol, alice.team_id, Role.member)
    base = f"/api/v1/teams/{alice.team_slug}/members"
    ok = await client.patch(f"{base}/{carol.user_id}", json={"role": "admin"}, headers=bob.headers)
    assert ok.status_code == 200
    crown = await client.patch(
        f"{base}/{carol.user_id}", json={"role": "owner"}, headers=bob.headers
    )
    assert crown.status_code == 403
    dethrone = await client.delete(f"{base}/{alice.user_id}", headers=bob.headers)
    assert dethrone.status_code == 403
    member = await client.get(f"{base}/{carol.user_id}", headers=bob.headers)
    assert member.json() == {
        "user_id": carol.user_id,
        "email": "carol@example.com",
        "name": "carol",
        "role": "admin",
    }
    removed = await client.delete(f"{base}/{carol.user_id}", headers=bob.headers)
    assert removed.status_code == 204
    assert (await client.get(f"{base}/{carol.user_id}", headers=bob.headers)).status_code == 404
    leaves = await client.delete(f"{base}/{bob.user_id}", headers=bob.headers)
    assert leaves.status_code == 204
    assert (await client.get(f"{base}", headers=bob.headers)).status_code == 404


async def test_invite_api(
    client: httpx.AsyncClient, alice: Account, bob: Account, mailbox: Mailbox, platform: Platform
) -> None:
    base = f"/api/v1/teams/{alice.team_slug}/invites"
    bad = await client.post(base, json={"email": "nope", "role": "member"}, headers=alice.headers)
    assert bad.status_code == 422
    made = await client.post(
        base, json={"email": "bob@example.com", "role": "member"}, headers=alice.headers
    )
    assert made.status_code == 201, made.text
    invite = made.json()
    assert invite["email"] == "bob@example.com" and not invite["expired"]
    assert "token" not in invite and invite["url"] is None  # it went by mail
    listed = await client.get(base, headers=alice.headers)
    assert [i["id"] for i in listed.json()] == [invite["id"]]
    assert (await client.get(base, headers=bob.headers)).status_code == 404
    resent = await client.post(f"{base}/{invite['id']}/resend", headers=alice.headers)
    assert resent.status_code == 200
    token = httpx.URL(mailbox.last_link("bob@example.com")).path.rsplit("/", 1)[1]
    accepted = await client.post(f"/api/v1/invites/{token}/accept", headers=bob.headers)
    assert accepted.status_code == 200 and accepted.json()["role"] == "member"
    twice = await client.post(f"/api/v1/invites/{token}/accept", headers=bob.headers)
    assert twice.status_code == 404
    assert (await client.get(base, headers=alice.headers)).json() == []
    member = await client.post(
        base, json={"email": "bob@example.com", "role": "member"}, headers=alice.headers
    )
    assert member.status_code == 409

    other = await client.post(base, json={"email": "x@example.com"}, headers=alice.headers)
    revoke = await client.delete(f"{base}/{other.json()['id']}", headers=alice.headers)
    assert revoke.status_code == 204
    assert (
        await client.delete(f"{base}/{other.json()['id']}", headers=alice.headers)
    ).status_code == 404


async def test_without_smtp_the_inviting_admin_gets_the_link(
    client: httpx.AsyncClient,
    alice: Account,
    alice_web: Browser,
    bob: Account,
    app: Any,
    caplog: Any,
) -> None:
    app.state.platform.settings = app.state.platform.settings.model_copy(update={"smtp_url": None})
    base = f"/api/v1/teams/{alice.team_slug}/invites"
    made = await client.post(base, json={"email": "bob@example.com"}, headers=alice.headers)
    assert made.status_code == 201 and "/invites/" in made.json()["url"]
    resent = await client.post(f"{base}/{made.json()['id']}/resend", headers=alice.headers)
    url = resent.json()["url"]
    assert url and url != made.json()["url"]
    assert [i["url"] for i in (await client.get(base, headers=alice.headers)).json()] == [None]
    # the pages show it once, to the inviter (HTMX or not), and say nothing was sent
    page = await alice_web.post(
        f"/t/{alice.team_slug}/invites", {"email": "carol@example.com"}, htmx=True
    )
    assert page.status_code == 200 and "nothing was sent" in page.text
    assert "/invites/" in page.text and "Invitation sent" not in page.text
    plain = await alice_web.post(f"/t/{alice.team_slug}/invites", {"email": "dan@example.com"})
    assert plain.status_code == 200 and "nothing was sent" in plain.text
    # the link works, and no log record carries it
    token = httpx.URL(url).path.rsplit("/", 1)[1]
    accepted = await client.post(f"/api/v1/invites/{token}/accept", headers=bob.headers)
    assert accepted.status_code == 200
    # the platform's records (the test's own client logs the URLs it calls, as "httpx")
    platform_records = [r for r in caplog.records if r.name != "httpx"]
    assert all("/invites/" not in r.getMessage() for r in platform_records)
    assert all(token not in str(r.__dict__) for r in platform_records)


async def test_rename_and_delete_team_api(
    client: httpx.AsyncClient, alice: Account, bob: Account, platform: Platform
) -> None:
    team = (await client.post("/api/v1/teams", json={"name": "Temp"}, headers=alice.headers)).json()
    renamed = await client.patch(
        f"/api/v1/teams/{team['slug']}", json={"name": "Temporary"}, headers=alice.headers
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "Temporary"
    assert (
        await client.delete(f"/api/v1/teams/{team['slug']}", headers=bob.headers)
    ).status_code == 404
    await add_member(platform, bob, team["id"], Role.admin)
    assert (
        await client.delete(f"/api/v1/teams/{team['slug']}", headers=bob.headers)
    ).status_code == 403
    deleted = await client.delete(f"/api/v1/teams/{team['slug']}", headers=alice.headers)
    assert deleted.status_code == 202
    assert await platform.redis.exists(f"arq:job:delete-team:{team['id']}")
    assert (
        await client.get(f"/api/v1/teams/{team['slug']}", headers=alice.headers)
    ).status_code == 404
    async with session_scope(platform.sessions) as session:
        row = await session.get(Team, team["id"])
        assert row is not None and row.status == "deleting"
    async with session_scope(platform.sessions) as session:
        own = await session.get(Team, alice.team_id)
        assert own is not None
        own.personal = True
    personal = await client.delete(f"/api/v1/teams/{alice.team_slug}", headers=alice.headers)
    assert personal.status_code == 409 and "personal" in personal.json()["error"]["message"]


async def test_delete_team_page_needs_the_slug(
    alice_web: Browser, alice: Account, platform: Platform
) -> None:
    await alice_web.post("/teams/new", {"name": "Doomed"})
    wrong = await alice_web.post("/t/doomed/delete", {"confirm": "nope"})
    assert wrong.status_code == 422 and 'data-error-for="confirm"' in wrong.text
    done = await alice_web.post("/t/doomed/delete", {"confirm": "doomed"})
    assert done.status_code == 303
    assert (await alice_web.get("/t/doomed")).status_code == 404


async def test_other_teams_are_not_found(alice_web: Browser, bob: Account) -> None:
    for path in (f"/t/{bob.team_slug}", f"/t/{bob.team_slug}/settings", f"/t/{bob.team_slug}/new"):
        response = await alice_web.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
    posted = await alice_web.post(f"/t/{bob.team_slug}/invites", {"email": "x@example.com"})
    assert posted.status_code == 404
