"""The app's token cache (auth/token_cache.py): a token used again needs no token query, and
whatever takes a token's power away (revoking it, deleting its user, removing its user from a
team) is refused on the very next request, in every app process, although the token was
cached. Two apps on one platform stand for two app processes: each has its own cache, and
they share PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import delete, event, select, update

from devpush import operations
from devpush.api.credentials import GENERATION_KEY, publish
from devpush.app import create_app
from devpush.auth import service as auth
from devpush.auth.models import ApiToken, User
from devpush.auth.token_cache import TokenCache
from devpush.db import AFTER_COMMIT, session_scope, utcnow
from devpush.platform import Platform
from devpush.teams.models import Role, TeamMember
from tests.factories.auth import Account, add_member, token_for


@asynccontextmanager
async def app_process(platform: Platform) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """One app process: its own app (and token cache) on the shared platform."""
    app = create_app(platform.settings)
    app.state.platform = platform
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield app, client


class TokenQueries:
    """Counts the statements that read api_tokens."""

    def __init__(self, platform: Platform) -> None:
        self.count = 0
        self.engine = platform.engine.sync_engine
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM api_tokens" in statement:
            self.count += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


@pytest.fixture
def token_queries(platform: Platform) -> Iterator[TokenQueries]:
    queries = TokenQueries(platform)
    yield queries
    queries.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_project(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": "web", "repo_url": "http://127.0.0.1:9/a/web.git", "start_command": "x"},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("rate_limit", [1200, 0], ids=["rate-limited", "no-rate-limit"])
async def test_a_cached_token_needs_no_query_and_is_refused_once_revoked(
    platform: Platform, alice: Account, token_queries: TokenQueries, rate_limit: int
) -> None:
    platform.settings.api_rate_limit = rate_limit
    ci = await token_for(platform, alice.user_id, name="ci")
    async with app_process(platform) as (app, client):
        for _ in range(3):
            assert (await client.get("/api/v1/teams", headers=bearer(ci))).status_code == 200
        assert token_queries.count == 1  # read once, then from the cache
        assert len(app.state.token_cache) == 1
        tokens = (await client.get("/api/v1/tokens", headers=alice.headers)).json()
        ci_id = next(t["id"] for t in tokens if t["name"] == "ci")
        revoked = await client.delete(f"/api/v1/tokens/{ci_id}", headers=alice.headers)
        assert revoked.status_code == 204
        refused = await client.get("/api/v1/teams", headers=bearer(ci))
        assert refused.status_code == 401
        assert "unknown or revoked" in refused.json()["error"]["message"]


async def test_revoking_in_one_app_process_refuses_the_token_in_another(
    platform: Platform, alice: Account
) -> None:
    ci = await token_for(platform, alice.user_id, name="ci")
    async with app_process(platform) as (_, first), app_process(platform) as (other, second):
        assert (await first.get("/api/v1/teams", headers=bearer(ci))).status_code == 200
        assert (await second.get("/api/v1/teams", headers=bearer(ci))).status_code == 200
        assert len(other.state.token_cache) == 1
        tokens = (await first.get("/api/v1/tokens", headers=alice.headers)).json()
        ci_id = next(t["id"] for t in tokens if t["name"] == "ci")
        # the token revokes itself, through the first process
        assert (
            await first.delete(f"/api/v1/tokens/{ci_id}", headers=bearer(ci))
        ).status_code == 204
        assert (await second.get("/api/v1/teams", headers=bearer(ci))).status_code == 401
        assert (await first.get("/api/v1/teams", headers=bearer(ci))).status_code == 401


async def test_a_deleted_users_cached_token_is_refused_at_once(
    platform: Platform, alice: Account, bob: Account
) -> None:
    async with app_process(platform) as (_, first), app_process(platform) as (_, second):
        for client in (first, second):
            assert (await client.get("/api/v1/teams", headers=bob.headers)).status_code == 200
        assert (await second.get("/api/v1/teams", headers=alice.headers)).status_code == 200
        assert (await first.delete("/api/v1/user", headers=bob.headers)).status_code == 202
        for client in (second, first):
            refused = await client.get("/api/v1/teams", headers=bob.headers)
            assert refused.status_code == 401
            assert "no longer exists" in refused.json()["error"]["message"]
        # alice's cached token is read again (every stamp went stale) and still works
        assert (await second.get("/api/v1/teams", headers=alice.headers)).status_code == 200


async def test_a_removed_member_is_refused_at_once_with_a_cached_token(
    platform: Platform, alice: Account, bob: Account, token_queries: TokenQueries
) -> None:
    await add_member(platform, bob, alice.team_id, Role.member)
    async with app_process(platform) as (app, first), app_process(platform) as (_, second):
        project = await make_project(first, alice)
        deployments = f"/api/v1/projects/{project}/deployments"
        for client in (first, second):
            assert (await client.get(deployments, headers=bob.headers)).status_code == 200
        before = token_queries.count
        removed = await first.delete(
            f"/api/v1/teams/{alice.team_slug}/members/{bob.user_id}", headers=alice.headers
        )
        assert removed.status_code == 204
        for client in (second, first):
            assert (await client.get(deployments, headers=bob.headers)).status_code == 404
        # memberships are read on every request; the token itself stayed cached and valid
        assert token_queries.count == before
        assert (await second.get("/api/v1/teams", headers=bob.headers)).status_code == 200
        assert len(app.state.token_cache) == 2


async def test_a_change_committed_outside_a_request_reaches_the_cache_at_once(
    platform: Platform, alice: Account, bob: Account
) -> None:
    """A job's session (session_scope on the platform) and the CLI's (`devpush user create
    --admin` on an existing user) publish too."""
    async with app_process(platform) as (_, client):
        for account in (alice, bob):
            denied = await client.get("/api/v1/admin/signup-rules", headers=account.headers)
            assert denied.status_code == 403
        async with session_scope(platform.sessions) as session:
            user = await session.get(User, alice.user_id)
            assert user is not None
            user.is_admin = True
        allowed = await client.get("/api/v1/admin/signup-rules", headers=alice.headers)
        assert allowed.status_code == 200
        await operations.ensure_admin(platform.settings, "bob@example.com")
        allowed = await client.get("/api/v1/admin/signup-rules", headers=bob.headers)
        assert allowed.status_code == 200


async def test_a_cached_token_that_expires_is_refused(
    platform: Platform, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    expiring = await token_for(platform, alice.user_id, expires_days=1)
    async with app_process(platform) as (app, client):
        assert (await client.get("/api/v1/teams", headers=bearer(expiring))).status_code == 200
        assert len(app.state.token_cache) == 1
        later = utcnow() + timedelta(days=2)
        monkeypatch.setattr(auth, "utcnow", lambda: later)
        refused = await client.get("/api/v1/teams", headers=bearer(expiring))
        assert refused.status_code == 401
        assert "expired" in refused.json()["error"]["message"]


async def test_a_change_no_hook_sees_counts_after_the_ttl_or_a_redis_reset(
    platform: Platform, alice: Account
) -> None:
    """SQL typed by hand changes nothing the app sees at once: the cache's TTL bounds it, and
    Redis losing its data (a new generation) ends it too."""
    now = [0.0]
    ci = await token_for(platform, alice.user_id, name="ci")
    other = await token_for(platform, alice.user_id, name="other")

    async def revoke_by_hand(token: str) -> None:
        async with platform.engine.begin() as conn:  # not a Session: no hook sees it
            await conn.execute(
                update(ApiToken)
                .where(ApiToken.token_hash == auth.hash_secret(token))
                .values(revoked_at=utcnow())
            )

    async with app_process(platform) as (app, client):
        app.state.token_cache = TokenCache(ttl=30, clock=lambda: now[0])
        assert (await client.get("/api/v1/teams", headers=bearer(ci))).status_code == 200
        await revoke_by_hand(ci)
        assert (await client.get("/api/v1/teams", headers=bearer(ci))).status_code == 200
        now[0] = 31.0
        assert (await client.get("/api/v1/teams", headers=bearer(ci))).status_code == 401

        assert (await client.get("/api/v1/teams", headers=bearer(other))).status_code == 200
        await revoke_by_hand(other)
        assert (await client.get("/api/v1/teams", headers=bearer(other))).status_code == 200
        await platform.redis.flushdb()
        assert (await client.get("/api/v1/teams", headers=bearer(other))).status_code == 401
        assert await platform.redis.get(GENERATION_KEY) is not None


async def test_last_used_is_recorded_without_unsettling_the_cache(
    platform: Platform, alice: Account, token_queries: TokenQueries
) -> None:
    async with session_scope(platform.sessions) as session:
        await session.execute(update(ApiToken).values(last_used_at=utcnow() - timedelta(hours=1)))
    async with app_process(platform) as (_, client):
        assert (await client.get("/api/v1/teams", headers=alice.headers)).status_code == 200
        generation = await platform.redis.get(GENERATION_KEY)
        assert (await client.get("/api/v1/teams", headers=alice.headers)).status_code == 200
    assert token_queries.count == 1  # the use was written, and the token stayed cached
    assert await platform.redis.get(GENERATION_KEY) == generation
    async with session_scope(platform.sessions) as session:
        used = await session.scalar(select(ApiToken.last_used_at))
    assert used is not None and utcnow() - used < timedelta(minutes=1)


async def test_what_marks_a_transaction_as_changing_credentials(
    platform: Platform, alice: Account, bob: Account
) -> None:
    async def marked(change: Any) -> bool:
        async with platform.sessions() as session:
            token = await session.scalar(select(ApiToken).where(ApiToken.user_id == alice.user_id))
            user = await session.get(User, alice.user_id)
            assert token is not None and user is not None
            await change(session, token, user)
            await session.flush()
            flagged = publish in session.info.get(AFTER_COMMIT, [])
            await session.rollback()
            return flagged

    async def revoke(s: Any, token: ApiToken, u: User) -> None:
        token.revoked_at = utcnow()

    async def rename_token(s: Any, token: ApiToken, u: User) -> None:
        token.name = "renamed"

    async def delete_token(s: Any, token: ApiToken, u: User) -> None:
        await s.delete(token)

    async def revoke_all(s: Any, token: ApiToken, u: User) -> None:
        await s.execute(update(ApiToken).values(revoked_at=utcnow()))

    async def touch(s: Any, token: ApiToken, u: User) -> None:
        await auth.touch_token(session=s, token_id=token.id, last_used_at=None)

    async def demote(s: Any, token: ApiToken, u: User) -> None:
        u.is_admin = not u.is_admin

    async def rename_user(s: Any, token: ApiToken, u: User) -> None:
        u.name = "Alice B."

    async def delete_users(s: Any, token: ApiToken, u: User) -> None:
        await s.execute(delete(User).where(User.id == bob.user_id))

    async def remove_member(s: Any, token: ApiToken, u: User) -> None:
        await s.execute(delete(TeamMember).where(TeamMember.user_id == bob.user_id))

    assert await marked(revoke)
    assert await marked(delete_token)
    assert await marked(revoke_all)
    assert await marked(demote)
    assert await marked(delete_users)
    assert not await marked(rename_token)
    assert not await marked(touch)
    assert not await marked(rename_user)
    assert not await marked(remove_member)  # memberships are never cached
