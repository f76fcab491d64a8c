"""Signing in on the pages: emailed one-time links, sign-up through the allowlist, rate limits,
CSRF, account settings (name, email change, deletion) and the pages' HTML errors."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from devpush.accounts.signup import RATE_PER_EMAIL
from devpush.auth.models import User
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.teams.models import Team, TeamMember
from tests.integration.web.conftest import Browser, Mailbox


async def request_link(browser: Browser, email: str) -> httpx.Response:
    return await browser.post("/auth/sign-in", {"email": email})


async def test_signed_out_pages_send_to_sign_in(browsers: Any) -> None:
    browser = await browsers()
    home = await browser.get("/")
    assert home.status_code == 303 and home.headers["location"] == "/auth/sign-in"
    page = await browser.get("/account")
    assert page.status_code == 303
    assert page.headers["location"] == "/auth/sign-in?next=/account"
    htmx = await browser.get("/account", headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"].startswith("/auth/sign-in")
    sign_in_page = await browser.get("/auth/sign-in")
    assert sign_in_page.status_code == 200 and 'name="csrf_token"' in sign_in_page.text


async def test_magic_link_signs_in_once(
    browsers: Any, mailbox: Mailbox, alice: Any, platform: Platform
) -> None:
    browser = await browsers()
    response = await request_link(browser, "Alice@Example.com ")
    assert response.status_code == 200 and "Check your email" in response.text
    link = mailbox.last_link("alice@example.com")
    assert link.startswith(f"{platform.settings.app_url}/auth/link/")
    signed_in = await browser.open_link(link)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    assert (await browser.get("/account")).status_code == 200
    again = await (await browsers()).open_link(link)
    assert again.status_code == 401 and "This link does not work" in again.text
    out = await browser.post("/auth/sign-out")
    assert out.status_code == 303
    assert (await browser.get("/account")).status_code == 303


async def test_next_page_survives_sign_in(
    browsers: Any, mailbox: Mailbox, alice: Any, platform: Platform
) -> None:
    browser = await browsers()
    await browser.get(f"/auth/sign-in?next=/t/{alice.team_slug}/settings")
    await request_link(browser, "alice@example.com")
    landed = await browser.open_link(mailbox.last_link("alice@example.com"))
    assert landed.headers["location"] == f"/t/{alice.team_slug}/settings"
    await browser.get("/auth/sign-in?next=//evil.example.com/")
    await request_link(browser, "alice@example.com")
    landed = await browser.open_link(mailbox.last_link("alice@example.com"))
    assert landed.headers["location"] == "/"


async def test_unknown_address_gets_no_mail_and_no_hint(browsers: Any, mailbox: Mailbox) -> None:
    browser = await browsers()
    response = await request_link(browser, "stranger@example.com")
    assert response.status_code == 200 and "Check your email" in response.text
    assert mailbox.to("stranger@example.com") == []
    invalid = await request_link(browser, "not an email")
    assert invalid.status_code == 422
    assert 'data-error-for="email"' in invalid.text


async def test_allowlisted_domain_signs_up_with_a_personal_team(
    browsers: Any, mailbox: Mailbox, platform: Platform, alice_web: Browser
) -> None:
    # alice is no admin: the allowlist is not hers to change
    refused = await alice_web.post("/admin/allowlist", {"kind": "domain", "value": "corp.test"})
    assert refused.status_code == 404
    async with session_scope(platform.sessions) as session:
        admin = await session.scalar(select(User).where(User.email == "alice@example.com"))
        assert admin is not None
        admin.is_admin = True
    added = await alice_web.post("/admin/allowlist", {"kind": "domain", "value": "@Corp.Test"})
    assert added.status_code == 303
    page = await alice_web.get("/admin")
    assert 'data-rule="corp.test"' in page.text
    duplicate = await alice_web.post("/admin/allowlist", {"kind": "domain", "value": "corp.test"})
    assert duplicate.status_code == 422 and "already has" in duplicate.text

    newcomer = await browsers()
    await request_link(newcomer, "new@corp.test")
    link = mailbox.last_link("new@corp.test")
    assert "/auth/sign-up/" in link
    assert (await newcomer.open_link(link)).status_code == 303
    async with session_scope(platform.sessions) as session:
        user = await session.scalar(select(User).where(User.email == "new@corp.test"))
        assert user is not None
        teams = list(
            await session.scalars(
                select(Team).join(TeamMember).where(TeamMember.user_id == user.id)
            )
        )
    assert [t.personal for t in teams] == [True]
    assert (await newcomer.open_link(link)).status_code == 401  # one-time

    await request_link(await browsers(), "other@elsewhere.test")
    assert mailbox.to("other@elsewhere.test") == []


async def test_sign_in_requests_are_rate_limited(
    browsers: Any, mailbox: Mailbox, alice: Any
) -> None:
    browser = await browsers()
    for _ in range(RATE_PER_EMAIL):
        assert (await request_link(browser, "alice@example.com")).status_code == 200
    limited = await request_link(browser, "alice@example.com")
    assert limited.status_code == 429
    assert 0 < int(limited.headers["Retry-After"]) <= 900
    assert "too many sign-in requests" in limited.text
    assert len(mailbox.to("alice@example.com")) == RATE_PER_EMAIL
    # another address from the same client is still served (up to the per-client limit)
    assert (await request_link(browser, "bob@example.com")).status_code == 200


async def test_forms_without_the_csrf_token_are_refused(
    alice_web: Browser, platform: Platform, alice: Any
) -> None:
    missing = await alice_web.post("/account/profile", {"name": "Mallory"}, csrf=False)
    assert missing.status_code == 403 and "reload the page" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    wrong = await alice_web.post(
        "/account/profile", {"name": "Mallory", "csrf_token": "x" * 43}, csrf=False
    )
    assert wrong.status_code == 403
    htmx_without = await alice_web.http.post(
        "/account/profile", data={"name": "Mallory"}, headers={"HX-Request": "true"}
    )
    assert htmx_without.status_code == 403 and 'class="toast error"' in htmx_without.text
    async with session_scope(platform.sessions) as session:
        user = await session.get(User, alice.user_id)
        assert user is not None and user.name == "alice"
    ok = await alice_web.post("/account/profile", {"name": "Alice A."}, htmx=True)
    assert ok.status_code == 204 and ok.headers["HX-Redirect"] == "/account"
    async with session_scope(platform.sessions) as session:
        user = await session.get(User, alice.user_id)
        assert user is not None and user.name == "Alice A."
    # sign-out is a form too
    assert (await alice_web.post("/auth/sign-out", csrf=False)).status_code == 403


async def test_profile_validation_saves_nothing(alice_web: Browser) -> None:
    response = await alice_web.post("/account/profile", {"name": "   "})
    assert response.status_code == 422
    assert 'data-error-for="name"' in response.text


async def test_email_change_needs_the_new_address_confirmed(
    alice_web: Browser, bob: Any, mailbox: Mailbox, platform: Platform, alice: Any
) -> None:
    taken = await alice_web.post("/account/email", {"email": "bob@example.com"})
    assert taken.status_code == 422 and "another account uses" in taken.text
    asked = await alice_web.post("/account/email", {"email": "alice@new.test"})
    assert asked.status_code == 303
    async with session_scope(platform.sessions) as session:
        user = await session.get(User, alice.user_id)
        assert user is not None and user.email == "alice@example.com"
    confirmed = await alice_web.open_link(mailbox.last_link("alice@new.test"))
    assert confirmed.status_code == 303
    async with session_scope(platform.sessions) as session:
        user = await session.get(User, alice.user_id)
        assert user is not None and user.email == "alice@new.test"


async def test_account_deletion_waits_for_another_owner(
    alice_web: Browser, bob: Any, platform: Platform, alice: Any
) -> None:
    from devpush.teams.models import Role
    from tests.factories.auth import add_member

    await add_member(platform, bob, alice.team_id, Role.member)
    wrong = await alice_web.post("/account/delete", {"confirm": "someone@else"})
    assert wrong.status_code == 422 and 'data-error-for="confirm"' in wrong.text
    blocked = await alice_web.post("/account/delete", {"confirm": "alice@example.com"})
    assert blocked.status_code == 409 and "make someone else owner" in blocked.text
    promoted = await alice_web.post(
        f"/t/{alice.team_slug}/members/{bob.user_id}/role", {"role": "owner"}
    )
    assert promoted.status_code == 303
    deleted = await alice_web.post("/account/delete", {"confirm": "alice@example.com"})
    assert deleted.status_code == 303 and deleted.headers["location"] == "/auth/sign-in"
    async with session_scope(platform.sessions) as session:
        user = await session.get(User, alice.user_id)
        assert user is not None and user.status == "deleting"
    assert await platform.redis.exists(f"arq:job:delete-user:{alice.user_id}")
    assert (await alice_web.get("/account")).status_code == 303  # signed out


async def test_unknown_pages_are_html_and_api_stays_json(alice_web: Browser) -> None:
    page = await alice_web.get("/no/such/page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Not found" in page.text
    api = await alice_web.get("/api/v1/no-such-route")
    assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
    static = await alice_web.get("/static/app.css")
    assert static.status_code == 200 and "--bg" in static.text


async def test_without_smtp_the_log_says_what_to_run_never_the_link(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from devpush.auth import mail
    from devpush.logsetup import JsonFormatter

    quiet = settings.model_copy(update={"smtp_url": None})
    with caplog.at_level(logging.WARNING, logger="devpush.mail"):
        sent = await mail.send(
            quiet, mail.sign_in(quiet, "x@example.com", "http://h/auth/link/abc")
        )
    assert sent is False
    record = next(r for r in caplog.records if r.name == "devpush.mail")
    line = JsonFormatter().format(record)
    assert "auth/link" not in line and "abc" not in line
    assert "devpush user link x@example.com" in record.getMessage()
    assert record.to == "x@example.com"  # type: ignore[attr-defined]


async def test_unreachable_smtp_server_is_a_clear_error(
    browsers: Any, alice: Any, app: Any
) -> None:
    from tests.conftest import free_port

    app.state.platform.settings = app.state.platform.settings.model_copy(
        update={"smtp_url": f"smtp://127.0.0.1:{free_port()}"}
    )
    response = await request_link(await browsers(), "alice@example.com")
    assert response.status_code == 503 and "mail server" in response.text
    assert response.headers["content-type"].startswith("text/html")


def test_session_api_check_for_the_lead_to_wire_in() -> None:
    from starlette.requests import Request

    from devpush.api.csrf import CsrfRefused, check_session_api_request

    def request(method: str, header: str | None) -> Request:
        headers = [(b"x-csrf-token", header.encode())] if header else []
        scope = {
            "type": "http",
            "method": method,
            "headers": headers,
            "session": {"csrf": "t" * 43},
        }
        return Request(scope)

    check_session_api_request(request("GET", None))
    check_session_api_request(request("POST", "t" * 43))
    for bad in (None, "x" * 43):
        with pytest.raises(CsrfRefused):
            check_session_api_request(request("DELETE", bad))
