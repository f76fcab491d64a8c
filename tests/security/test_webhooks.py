"""GitHub webhooks an attacker replays or forges, with the real octokit payloads: a signature
never carries over to another body, a replayed delivery is acted on once, and a delivery id
seen before keeps the body it first came with even when re-sent with a valid signature."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from devpush.db import session_scope
from devpush.deployments.models import Deployment
from devpush.github import webhooks
from devpush.github.models import GithubDelivery, GithubInstallation
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects.schemas import ProjectCreate
from tests.factories.auth import Account, make_account
from tests.integration.github.helpers import FIXTURES, REPO_ID, deliver, payload, sign
from tests.security.world import INSTALLATION_ID, REPO

FIXTURE_FILES = sorted(p.name for p in FIXTURES.glob("*.json"))


def event_of(name: str) -> str:
    return name.split(".")[0]


@pytest.fixture(autouse=True)
async def no_deliveries(platform: Platform) -> None:
    async with platform.engine.begin() as conn:
        await conn.execute(text("TRUNCATE github_deliveries"))


@pytest.fixture
async def alice(platform: Platform) -> Account:
    return await make_account(platform, "alice@example.com")


@pytest.fixture
async def connected(platform: Platform, alice: Account) -> str:
    """A project deploying the fixtures' repository (main and previews)."""
    async with session_scope(platform.sessions) as session:
        session.add(
            GithubInstallation(
                id=INSTALLATION_ID,
                account_login="Codertocat",
                account_type="User",
                team_id=alice.team_id,
            )
        )
        project = await projects.create_project(
            session=session,
            team_id=alice.team_id,
            body=ProjectCreate(name="hello", start_command="python3 app.py"),
        )
        project.github_installation_id, project.github_repo_id = INSTALLATION_ID, REPO_ID
        project.github_repo_full_name = REPO
        project.repo_url = f"{platform.settings.github_url}/{REPO}.git"
        return project.id


async def counts(platform: Platform) -> tuple[int, int, int]:
    async with session_scope(platform.sessions) as session:
        stored = await session.scalar(select(func.count()).select_from(GithubDelivery))
        deployed = await session.scalar(select(func.count()).select_from(Deployment))
    return int(stored or 0), int(deployed or 0), len(await platform.redis.queued_jobs())


async def run_jobs(platform: Platform) -> None:
    for job in await platform.redis.queued_jobs():
        if job.function == "github_webhook":
            await webhooks.process(platform, job.args[0])


def push(sha: str) -> dict[str, object]:
    return payload("push.with-new-branch.payload.json", ref="refs/heads/main", after=sha)


async def test_a_signature_never_carries_over_to_another_body(
    client: httpx.AsyncClient, platform: Platform, connected: str
) -> None:
    """Every fixture payload, signed, then sent with another body under that signature (or
    with a mangled signature): 401, and nothing is stored or queued."""
    for index, name in enumerate(FIXTURE_FILES):
        original = (FIXTURES / name).read_bytes()
        data = json.loads(original)
        signature = sign(original)
        forged_bodies = {
            "one field changed": json.dumps({**data, "action": "deleted"}).encode(),
            "re-serialised": json.dumps(data).encode(),  # the same JSON, other bytes
            "trailing newline": original + b"\n",
            "leading space": b" " + original,
            "truncated": original[:-1],
            "another fixture": (FIXTURES / FIXTURE_FILES[index - 1]).read_bytes(),
        }
        for label, body in forged_bodies.items():
            if body != original:
                response = await deliver(client, event_of(name), body, signature=signature)
                assert response.status_code == 401, (name, label, response.text)
        for label, header in {
            "uppercase hex": signature.upper(),
            "sha1": "sha1=" + signature.removeprefix("sha256=")[:40],
            "no prefix": signature.removeprefix("sha256="),
            "wrong secret": sign(original, "not-the-secret"),
            "doubled": signature + signature.removeprefix("sha256="),
            "empty": "",
        }.items():
            response = await deliver(client, event_of(name), original, signature=header)
            assert response.status_code == 401, (name, label, response.text)
    assert await counts(platform) == (0, 0, 0)
    for name in FIXTURE_FILES:  # and each genuine one is taken
        original = (FIXTURES / name).read_bytes()
        genuine = await deliver(client, event_of(name), original, signature=sign(original))
        assert genuine.status_code == 202, (name, genuine.text)


async def test_a_replayed_delivery_is_acted_on_once(
    client: httpx.AsyncClient, platform: Platform, connected: str
) -> None:
    body = json.dumps(push("a" * 40)).encode()
    first = await deliver(client, "push", body, delivery="delivery-1")
    assert (first.status_code, first.json()["status"]) == (202, "queued")
    for _ in range(3):
        replay = await deliver(client, "push", body, delivery="delivery-1")
        assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
    assert await counts(platform) == (1, 0, 1)
    await run_jobs(platform)
    await webhooks.process(platform, "delivery-1")  # a job run twice
    replay = await deliver(client, "push", body, delivery="delivery-1")
    assert replay.json()["status"] == "duplicate"
    await run_jobs(platform)
    stored, deployed, _ = await counts(platform)
    assert (stored, deployed) == (1, 1)


async def test_a_known_delivery_keeps_its_first_body(
    client: httpx.AsyncClient, platform: Platform, connected: str
) -> None:
    """Re-sending a delivery id with another body, even one validly signed (a leaked secret,
    or GitHub's own redelivery), changes nothing: the first body is the one acted on."""
    first = await deliver(client, "push", push("a" * 40), delivery="delivery-1")
    assert first.status_code == 202
    other = json.dumps(push("b" * 40)).encode()
    resent = await deliver(client, "push", other, delivery="delivery-1", signature=sign(other))
    assert (resent.status_code, resent.json()["status"]) == (200, "duplicate")
    await run_jobs(platform)
    async with session_scope(platform.sessions) as session:
        row = await session.get(GithubDelivery, "delivery-1")
        assert row is not None and row.payload["after"] == "a" * 40
        shas = list(await session.scalars(select(Deployment.commit_sha)))
    assert shas == ["a" * 40]


async def test_malformed_delivery_ids_are_refused(
    client: httpx.AsyncClient, platform: Platform, connected: str
) -> None:
    body = json.dumps(push("c" * 40)).encode()
    for delivery in ("../../x", "a b", "x" * 65, "", "d-1;DROP TABLE github_deliveries", "d-1%0A"):
        headers = {
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(body),
            "Content-Type": "application/json",
        }
        response = await client.post("/api/github/webhook", content=body, headers=headers)
        assert response.status_code == 422, (delivery, response.text)
    assert await counts(platform) == (0, 0, 0)


def test_the_fixtures_are_there() -> None:
    assert len(FIXTURE_FILES) >= 20 and Path(FIXTURES / "push.payload.json").exists()
