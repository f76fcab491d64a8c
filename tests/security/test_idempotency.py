"""Idempotency replay across users: the review replayed another user's API-token creation
(same Idempotency-Key, both signed in with cookies, one client address) and received that
user's new admin token. Replays are now keyed by the principal, never the address, and an
answer that carries a secret is never stored at all."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from devpush.auth.models import ApiToken
from devpush.db import session_scope
from devpush.platform import Platform
from tests.factories.auth import make_account
from tests.security.test_injection import signed_in
from tests.security.world import CSRF

KEY = {"Idempotency-Key": "create-token-1"}


async def csrf(http: httpx.AsyncClient) -> dict[str, str]:
    match = CSRF.search((await http.get("/account")).text)
    assert match, "the account page carries the session's CSRF token"
    return {"X-CSRF-Token": match[1]}


async def tokens_of(platform: Platform, user_id: str) -> int:
    async with session_scope(platform.sessions) as session:
        query = select(func.count()).select_from(ApiToken).where(ApiToken.user_id == user_id)
        return int(await session.scalar(query) or 0)


async def test_a_second_user_never_gets_the_first_users_answer(
    app: FastAPI, platform: Platform
) -> None:
    alice = await make_account(platform, "alice@example.com")
    mallory = await make_account(platform, "mallory@example.com")
    body = {"name": "ci", "scopes": ["read"]}
    async with signed_in(app, platform, alice.user_id) as alice_http:
        first = await alice_http.post(
            "/api/v1/tokens", json=body, headers={**KEY, **await csrf(alice_http)}
        )
        assert first.status_code == 201, first.text
    async with signed_in(app, platform, mallory.user_id) as mallory_http:
        second = await mallory_http.post(
            "/api/v1/tokens", json=body, headers={**KEY, **await csrf(mallory_http)}
        )
    assert second.status_code == 201, second.text
    assert "idempotent-replayed" not in second.headers
    assert second.json()["token"] != first.json()["token"]
    assert await tokens_of(platform, mallory.user_id) == 2  # her own new one, besides the first


async def test_a_secret_answer_is_never_stored_and_its_retry_creates_nothing(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    alice = await make_account(platform, "alice@example.com")
    headers = {**alice.headers, **KEY}
    first = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    assert first.status_code == 201 and first.headers["cache-control"] == "no-store"
    token = first.json()["token"]
    retry = await client.post("/api/v1/tokens", json={"name": "ci"}, headers=headers)
    assert retry.status_code == 409, retry.text
    assert retry.json()["error"]["code"] == "idempotency_withheld"
    assert token not in retry.text
    assert await tokens_of(platform, alice.user_id) == 2  # the account's own and one new
    stored = [await platform.redis.get(k) async for k in platform.redis.scan_iter("devpush:*")]
    assert not any(value and token.encode() in value for value in stored)


async def test_anonymous_calls_are_never_replayed(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    for _ in range(2):
        refused = await client.post("/api/v1/tokens", json={"name": "x"}, headers=KEY)
        assert refused.status_code == 401 and "idempotent-replayed" not in refused.headers
    assert [k async for k in platform.redis.scan_iter("devpush:idem:*")] == []


async def test_one_users_cookie_and_token_are_both_that_user_only(
    app: FastAPI, client: httpx.AsyncClient, platform: Platform
) -> None:
    """A stolen Idempotency-Key is useless: a bearer call of another user with the key of a
    deployment-free call (team creation) makes that user's own team."""
    alice = await make_account(platform, "alice@example.com")
    bob = await make_account(platform, "bob@example.com")
    async with signed_in(app, platform, alice.user_id) as alice_http:
        made = await alice_http.post(
            "/api/v1/teams", json={"name": "Alpha"}, headers={**KEY, **await csrf(alice_http)}
        )
        assert made.status_code == 201, made.text
        again = await alice_http.post(
            "/api/v1/teams", json={"name": "Alpha"}, headers={**KEY, **await csrf(alice_http)}
        )
        assert again.headers.get("idempotent-replayed") == "true"  # her own retry replays
        assert again.json()["id"] == made.json()["id"]
    theirs = await client.post(
        "/api/v1/teams", json={"name": "Alpha"}, headers={**bob.headers, **KEY}
    )
    assert theirs.status_code == 201 and theirs.json()["id"] != made.json()["id"]
    assert "idempotent-replayed" not in theirs.headers
