"""The browser-facing promises: security headers on every kind of response, a content policy
the pages live within, CSRF tokens, cookies marked Secure over TLS, rate limits on signing in
and on token use, and no open redirect through `next`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from devpush.accounts.signup import RATE_PER_EMAIL
from devpush.api.security import PAGE_POLICY
from devpush.app import create_app
from devpush.auth import service as auth
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.web.common import safe_next
from tests.factories.auth import Account, make_account
from tests.security.world import CSRF

SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
}


def assert_secure_headers(response: httpx.Response) -> None:
    where = f"{response.request.method} {response.request.url.path} ({response.status_code})"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, where
    policy = response.headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, where
    assert "strict-transport-security" not in response.headers, "HSTS only over TLS"


@pytest.fixture
async def alice(platform: Platform) -> Account:
    return await make_account(platform, "alice@example.com")


async def browser_for(app: FastAPI, base: str = "http://localhost") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


async def sign_in(platform: Platform, http: httpx.AsyncClient, user_id: str) -> httpx.Response:
    async with session_scope(platform.sessions) as session:
        token = await auth.create_sign_in_link(session=session, user_id=user_id)
    response = await http.get(f"/auth/link/{token}")
    assert response.status_code == 303, response.text
    return response


@pytest.fixture
async def alice_http(app: FastAPI, platform: Platform, alice: Account) -> AsyncIterator[Any]:
    async with await browser_for(app) as http:
        await sign_in(platform, http, alice.user_id)
        yield http


def csrf_of(page: httpx.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text[:300]
    return match.group(1)


# ---- headers -------------------------------------------------------------------------------------
async def test_security_headers_on_every_kind_of_response(
    client: httpx.AsyncClient, alice: Account, alice_http: httpx.AsyncClient, platform: Platform
) -> None:
    """Pages, redirects, HTML and JSON errors, static files, health, SSE refusals, git, the
    rate limiter's own 429 and the unknown-deployment page. (The matrix checks the headers on
    every route too.)"""
    responses = [
        await client.get("/auth/sign-in"),
        await client.get("/account"),  # redirect to sign in
        await client.get("/no/such/page"),
        await client.get("/static/app.css"),
        await client.get("/static/nope.js"),
        await client.get("/health"),
        await client.get("/api/v1/teams"),  # 401 JSON
        await client.get("/api/v1/teams", headers=alice.headers),
        await client.get("/api/v1/nope", headers=alice.headers),
        await client.post("/api/v1/teams", json={"name": ""}, headers=alice.headers),  # 422
        await client.get("/api/v1/projects/x/events", headers=alice.headers),  # 404 on SSE
        await client.get("/git/team/project.git/info/refs?service=git-upload-pack"),
        await client.post("/api/github/webhook", content=b"{}"),
        await client.get("/", headers={"Host": "nothing-here.localhost"}),
        await alice_http.get(f"/t/{alice.team_slug}"),
        await alice_http.post("/account/profile", data={"name": "x"}),  # CSRF refusal
        await client.get("/api/v1/openapi.json"),
    ]
    platform.settings.api_rate_limit = 1
    responses.append(await client.get("/api/v1/user", headers=alice.headers))
    responses.append(limited := await client.get("/api/v1/user", headers=alice.headers))
    assert limited.status_code == 429
    for response in responses:
        assert_secure_headers(response)


async def test_content_policy_covers_what_the_pages_load(
    alice_http: httpx.AsyncClient, alice: Account, client: httpx.AsyncClient
) -> None:
    """Every script, sheet and image the pages load comes from the app itself (or is a data:
    URL), so `default-src 'self'` holds; the docs page gets its own policy for its CDN."""
    pages = [
        await alice_http.get(path)
        for path in ("/account", f"/t/{alice.team_slug}", f"/t/{alice.team_slug}/settings")
    ]
    pages.append(await client.get("/auth/sign-in"))
    for page in pages:
        assert page.status_code == 200
        for src in re.findall(r'<(?:script|img|iframe)[^>]*\ssrc="([^"]*)"', page.text):
            assert src.startswith("/") and not src.startswith("//"), src
        for href in re.findall(r'<link[^>]*\shref="([^"]*)"', page.text):
            assert href.startswith(("/", "data:")) and not href.startswith("//"), href
        assert "<iframe" not in page.text
    assert "'unsafe-eval'" in PAGE_POLICY, "Alpine.js evaluates its expressions"
    docs = await client.get("/api/v1/docs")
    assert "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


async def test_tls_mode_marks_the_session_cookie_secure_and_sends_hsts(
    platform: Platform, alice: Account
) -> None:
    for scheme in ("https", "http"):
        settings = platform.settings.model_copy(update={"url_scheme": scheme})
        app = create_app(settings)
        app.state.platform = platform
        async with await browser_for(app, f"{scheme}://localhost") as http:
            response = await sign_in(platform, http, alice.user_id)
            cookie = response.headers["set-cookie"].lower()
            assert cookie.startswith("devpush_session=")
            assert "httponly" in cookie and "samesite=lax" in cookie
            assert ("; secure" in cookie) == (scheme == "https"), cookie
            hsts = response.headers.get("strict-transport-security")
            assert (hsts is not None) == (scheme == "https")
            if scheme == "https":
                assert (await http.get("/account")).status_code == 200


# ---- CSRF ----------------------------------------------------------------------------------------
async def test_unsafe_requests_need_the_sessions_csrf_token(
    app: FastAPI, platform: Platform, alice: Account, alice_http: httpx.AsyncClient
) -> None:
    mine = csrf_of(await alice_http.get("/account"))
    async with await browser_for(app) as other:
        theirs = csrf_of(await other.get("/auth/sign-in"))
    path = f"/t/{alice.team_slug}/settings/name"
    for label, data, headers in (
        ("no token", {"name": "Pwned"}, {}),
        ("empty token", {"name": "Pwned", "csrf_token": ""}, {}),
        ("another session's token", {"name": "Pwned", "csrf_token": theirs}, {}),
        ("header from another session", {"name": "Pwned"}, {"X-CSRF-Token": theirs}),
    ):
        refused = await alice_http.post(path, data=data, headers=headers)
        assert refused.status_code == 403, label
    # the API answers a cookie-authenticated unsafe call only with the header
    api = f"/api/v1/teams/{alice.team_slug}"
    assert (await alice_http.patch(api, json={"name": "Pwned"})).status_code == 403
    team = await alice_http.get(api)  # safe methods need no token
    assert team.status_code == 200 and team.json()["name"] != "Pwned"
    ok = await alice_http.patch(api, json={"name": "Renamed"}, headers={"X-CSRF-Token": mine})
    assert ok.status_code == 200
    saved = await alice_http.post(path, data={"name": "Again", "csrf_token": mine})
    assert saved.status_code == 303


# ---- rate limits ---------------------------------------------------------------------------------
async def test_sign_in_requests_are_rate_limited(app: FastAPI, alice: Account) -> None:
    async with await browser_for(app) as http:
        token = csrf_of(await http.get("/auth/sign-in"))
        statuses = [
            (
                await http.post(
                    "/auth/sign-in", data={"email": "alice@example.com", "csrf_token": token}
                )
            ).status_code
            for _ in range(RATE_PER_EMAIL + 1)
        ]
    assert statuses[:RATE_PER_EMAIL] == [200] * RATE_PER_EMAIL
    assert statuses[-1] == 429


async def test_token_use_is_rate_limited_per_token(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    platform.settings.api_rate_limit = 3
    bob = await make_account(platform, "bob@example.com")
    statuses = [
        (await client.get("/api/v1/user", headers=alice.headers)).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    limited = await client.get("/api/v1/user", headers=alice.headers)
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert (await client.get("/api/v1/user", headers=bob.headers)).status_code == 200
    # without a token the client address is the key
    anonymous = [(await client.get("/api/v1/user")).status_code for _ in range(4)]
    assert anonymous == [401, 401, 401, 429]


# ---- open redirects ------------------------------------------------------------------------------
HOSTILE_NEXT = [
    "//evil.com",
    "//evil.com/path",
    "https://evil.com",
    "http:evil.com",
    "/\\evil.com",
    "\\\\evil.com",
    "/\\/evil.com",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "/\t/evil.com",
    "/\n/evil.com",
    "/\r\n/evil.com",
    " //evil.com",
    "\x00//evil.com",
    "evil.com",
    "/" + "a" * 5000,
]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_safe_next_accepts_only_same_site_paths(target: str) -> None:
    assert safe_next(target) == "/"


def test_safe_next_keeps_real_paths() -> None:
    for path in ("/", "/account", "/t/acme/settings", "/projects/x/logs?q=a%20b&level=error"):
        assert safe_next(path) == path


async def test_next_never_leaves_the_site(
    app: FastAPI, platform: Platform, alice: Account, alice_http: httpx.AsyncClient
) -> None:
    """Through the whole flow: `next` set before signing in, then the sign-in link; and a
    signed-in user sent to the sign-in page (plain and HTMX)."""
    for target in (t for t in HOSTILE_NEXT if len(t) <= 500):  # the page takes up to 500
        async with await browser_for(app) as http:
            page = await http.get("/auth/sign-in", params={"next": target})
            assert page.status_code in (200, 422)
            landed = await sign_in(platform, http, alice.user_id)
            assert landed.headers["location"] == "/", target
        again = await alice_http.get("/auth/sign-in", params={"next": target})
        assert again.status_code in (303, 422), target
        if again.status_code == 303:
            assert again.headers["location"] == "/", target
        htmx = await alice_http.get(
            "/auth/sign-in", params={"next": target}, headers={"HX-Request": "true"}
        )
        if htmx.status_code == 204:
            assert htmx.headers["hx-redirect"] == "/", target
    kept = await alice_http.get("/auth/sign-in", params={"next": f"/t/{alice.team_slug}"})
    assert kept.headers["location"] == f"/t/{alice.team_slug}"
