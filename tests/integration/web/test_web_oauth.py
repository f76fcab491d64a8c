"""Sign-in with GitHub and Google: the redirect, then the callback exchanging its code at a local
stub of the providers' token and userinfo endpoints (served by this test on loopback; Google's
ID token is signed with a key the stub publishes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import select

from devpush.accounts.signup import add_rule
from devpush.auth.models import User, UserIdentity
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.settings import Settings
from devpush.teams.models import TeamMember
from tests.conftest import free_port
from tests.integration.web.conftest import Browser


@dataclass
class Provider:
    """What the stub answers: the account behind the next code."""

    base: str
    key: RSAKey
    github_user: dict[str, Any] = field(default_factory=dict)
    github_emails: list[dict[str, Any]] = field(default_factory=list)
    google_claims: dict[str, Any] = field(default_factory=dict)
    nonce: str = ""
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _json(self, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802
            path = urlsplit(self.path).path
            if path == "/api/user":
                self._json(provider.github_user)
            elif path == "/api/user/emails":
                self._json(provider.github_emails)
            elif path == "/.well-known/openid-configuration":
                self._json(
                    {
                        "issuer": provider.base,
                        "authorization_endpoint": f"{provider.base}/o/authorize",
                        "token_endpoint": f"{provider.base}/o/token",
                        "userinfo_endpoint": f"{provider.base}/o/userinfo",
                        "jwks_uri": f"{provider.base}/o/jwks",
                        "id_token_signing_alg_values_supported": ["RS256"],
                    }
                )
            elif path == "/o/jwks":
                self._json({"keys": [provider.key.as_dict(private=False)]})
            else:
                self.send_error(404)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            provider.token_requests.append(form)
            path = urlsplit(self.path).path
            if path == "/login/oauth/access_token":
                self._json({"access_token": "gho_stub", "token_type": "bearer", "scope": "user"})
            elif path == "/o/token":
                now = int(time.time())
                claims = {
                    "iss": provider.base,
                    "aud": "google-client",
                    "iat": now,
                    "exp": now + 300,
                    "nonce": provider.nonce,
                    **provider.google_claims,
                }
                id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, provider.key)
                self._json(
                    {
                        "access_token": "ya29.stub",
                        "token_type": "Bearer",
                        "expires_in": 300,
                        "id_token": id_token,
                    }
                )
            else:
                self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def provider() -> Iterator[Provider]:
    port = free_port()
    stub = Provider(
        base=f"http://127.0.0.1:{port}",
        key=RSAKey.generate_key(2048, parameters={"kid": "k1"}),
    )
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(stub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(settings: Settings, provider: Provider) -> Settings:
    return settings.model_copy(
        update={
            "github_client_id": "github-client",
            "github_client_secret": "github-secret",
            "github_url": provider.base,
            "github_api_url": f"{provider.base}/api",
            "google_client_id": "google-client",
            "google_client_secret": "google-secret",
            "google_discovery_url": f"{provider.base}/.well-known/openid-configuration",
        }
    )


async def start(browser: Browser, name: str) -> dict[str, str]:
    """Follow the sign-in button; returns the query the provider's authorize page would get."""
    response = await browser.get(f"/auth/oauth/{name}")
    assert response.status_code == 302, response.text
    query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}
    assert query["client_id"] == f"{name}-client" and query["state"]
    assert query["redirect_uri"].endswith(f"/auth/oauth/{name}/callback")
    return query


async def test_sign_in_page_offers_the_configured_providers(browsers: Any) -> None:
    page = await (await browsers()).get("/auth/sign-in")
    assert 'data-provider="github"' in page.text and 'data-provider="google"' in page.text


async def test_github_links_a_verified_email_to_its_user(
    browsers: Any, provider: Provider, alice: Any, platform: Platform
) -> None:
    provider.github_user = {"id": 4242, "login": "alice-gh", "name": "Alice"}
    provider.github_emails = [
        {"email": "other@example.com", "primary": False, "verified": True},
        {"email": "Alice@Example.com", "primary": True, "verified": True},
    ]
    browser = await browsers()
    query = await start(browser, "github")
    assert query["scope"] == "read:user user:email"
    done = await browser.get(f"/auth/oauth/github/callback?code=c0de&state={query['state']}")
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert provider.token_requests[-1]["code"] == ["c0de"]
    assert (await browser.get("/account")).status_code == 200
    async with session_scope(platform.sessions) as session:
        identity = await session.scalar(select(UserIdentity).where(UserIdentity.subject == "4242"))
        assert identity is not None and identity.user_id == alice.user_id

    # the identity now signs in on its own, even when the email changes at GitHub
    provider.github_emails = [{"email": "renamed@example.com", "primary": True, "verified": True}]
    again = await browsers()
    query = await start(again, "github")
    done = await again.get(f"/auth/oauth/github/callback?code=c1&state={query['state']}")
    assert done.status_code == 303


async def test_github_refuses_unverified_or_unknown_addresses_and_bad_state(
    browsers: Any, provider: Provider, platform: Platform
) -> None:
    provider.github_user = {"id": 7, "login": "eve"}
    provider.github_emails = [{"email": "eve@example.com", "primary": True, "verified": False}]
    browser = await browsers()
    query = await start(browser, "github")
    refused = await browser.get(f"/auth/oauth/github/callback?code=x&state={query['state']}")
    assert refused.status_code == 401 and "no verified email" in refused.text

    provider.github_emails = [{"email": "eve@example.com", "primary": True, "verified": True}]
    query = await start(browser, "github")
    refused = await browser.get(f"/auth/oauth/github/callback?code=x&state={query['state']}")
    assert refused.status_code == 403 and "may not create an account" in refused.text
    forged = await browser.get("/auth/oauth/github/callback?code=x&state=forged")
    assert forged.status_code == 401 and "sign-in failed" in forged.text
    async with session_scope(platform.sessions) as session:
        assert await session.scalar(select(User).where(User.email == "eve@example.com")) is None


async def test_google_oidc_signs_up_an_allowed_address(
    browsers: Any, provider: Provider, platform: Platform
) -> None:
    async with session_scope(platform.sessions) as session:
        await add_rule(session=session, kind="pattern", value="*@corp.test", created_by=None)
    browser = await browsers()
    query = await start(browser, "google")
    assert query["scope"] == "openid email profile" and query["nonce"]
    provider.nonce = query["nonce"]
    provider.google_claims = {
        "sub": "g-123",
        "email": "gina@corp.test",
        "email_verified": True,
        "name": "Gina",
    }
    done = await browser.get(f"/auth/oauth/google/callback?code=g&state={query['state']}")
    assert done.status_code == 303, done.text
    async with session_scope(platform.sessions) as session:
        user = await session.scalar(select(User).where(User.email == "gina@corp.test"))
        assert user is not None and user.name == "Gina"
        memberships = list(
            await session.scalars(select(TeamMember).where(TeamMember.user_id == user.id))
        )
    assert len(memberships) == 1  # the personal team

    # an ID token for another nonce (a replayed one) is refused
    other = await browsers()
    query = await start(other, "google")
    provider.nonce = "not-the-one"
    refused = await other.get(f"/auth/oauth/google/callback?code=g&state={query['state']}")
    assert refused.status_code == 401


async def test_unconfigured_provider_is_not_found(browsers: Any) -> None:
    response = await (await browsers()).get("/auth/oauth/gitlab")
    assert response.status_code == 404 and "not set up here" in response.text
