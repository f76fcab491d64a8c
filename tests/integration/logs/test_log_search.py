"""Search over a project's stored lines: keywords and regular expressions, filters, paging
backwards with a cursor, and bad input answered 422 with nothing changed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from devpush.db import session_scope, utcnow
from devpush.deployments.models import Deployment
from devpush.logs import search as log_search
from devpush.logs.models import LogLine
from devpush.platform import Platform
from tests.factories.auth import Account
from tests.integration.logs.helpers import MakeDeployment, ProjectRefs, append

SLOW = '{"level": "warning", "msg": "slow"}'


async def search(client: httpx.AsyncClient, account: Account, project_id: str, **params: Any):
    response = await client.get(
        f"/api/v1/projects/{project_id}/logs", params=params, headers=account.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(params=["in-order", "through-indexes"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the store finds lines: reading the newest in order, or (with a tiny scan
    budget) fetching matches through the indexes window by window."""
    if request.param == "through-indexes":
        monkeypatch.setattr(log_search, "SCAN_ROWS", 7)
        monkeypatch.setattr(log_search, "FIRST_WINDOW", timedelta(minutes=30))
    return str(request.param)


async def test_keyword_finds_a_line_from_yesterdays_deployment(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
    strategy: str,
) -> None:
    yesterday = utcnow() - timedelta(days=1)
    old = await make_deployment()
    await append(
        platform, old, ["GET /health 200", "Payment GATEWAY timeout after 30s"], ts=yesterday
    )
    new = await make_deployment(branch="feature/x")
    await append(platform, new, ["GET /health 200", "all good"])
    for q in ("gateway timeout", "GATEWAY", "timeout after", "payment"):
        found = await search(client, alice, project.id, q=q)
        assert [line["message"] for line in found["items"]] == [
            "Payment GATEWAY timeout after 30s"
        ], q
    line = found["items"][0]
    assert line["deployment_id"] == old
    assert line["phase"] == "runtime" and line["stream"] == "stdout"
    assert line["ts"].startswith(yesterday.date().isoformat())
    health = await search(client, alice, project.id, q="/health")
    assert [x["deployment_id"] for x in health["items"]] == [new, old]  # newest first
    assert (await search(client, alice, project.id, q="nowhere-to-be-found"))["items"] == []


async def test_regular_expressions(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
    strategy: str,
) -> None:
    deployment_id = await make_deployment()
    await append(
        platform,
        deployment_id,
        ["ERROR code 500 at /a", "error code 404 at /b", "Errors: none", "took 12ms"],
    )

    async def messages(q: str) -> list[str]:
        return [line["message"] for line in (await search(client, alice, project.id, q=q))["items"]]

    assert await messages(r"/code (4|5)\d\d/") == ["error code 404 at /b", "ERROR code 500 at /a"]
    assert await messages("/^ERROR/") == ["ERROR code 500 at /a"]
    assert await messages("/^error /i") == ["error code 404 at /b", "ERROR code 500 at /a"]
    assert await messages(r"/\d+ms$/") == ["took 12ms"]


async def test_filters_level_deployment_environment_branch_and_time(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
    strategy: str,
) -> None:
    now = utcnow()
    main = await make_deployment()
    staging = await make_deployment(branch="release/1.0")
    preview = await make_deployment(branch="feature/y")
    await append(platform, main, ["INFO booted", "ERROR db down"], ts=now - timedelta(hours=3))
    await append(platform, staging, [SLOW, "DEBUG x"], ts=now)
    await append(platform, preview, ["FATAL crash", "plain line"], ts=now - timedelta(hours=1))

    async def messages(**params: Any) -> list[str]:
        found = await search(client, alice, project.id, **params)
        return [line["message"] for line in found["items"]]

    assert await messages(level="error") == ["ERROR db down"]
    assert await messages(level="warn,fatal") == [
        '{"level": "warning", "msg": "slow"}',
        "FATAL crash",
    ]
    assert await messages(deployment=preview) == ["plain line", "FATAL crash"]
    assert await messages(environment="staging") == [
        "DEBUG x",
        '{"level": "warning", "msg": "slow"}',
    ]
    assert await messages(environment=project.environments["production"]) == [
        "ERROR db down",
        "INFO booted",
    ]
    assert await messages(branch="feature/y", level="fatal") == ["FATAL crash"]
    window = {
        "since": (now - timedelta(hours=2)).isoformat(),
        "until": (now - timedelta(minutes=30)).isoformat(),
    }
    assert await messages(**window) == ["plain line", "FATAL crash"]
    naive = (now - timedelta(hours=2)).replace(tzinfo=None).isoformat()  # taken as UTC
    assert await messages(since=naive, q="crash") == ["FATAL crash"]
    assert await messages(until=(now - timedelta(hours=2)).isoformat()) == [
        "ERROR db down",
        "INFO booted",
    ]


async def test_paging_backwards_reaches_the_first_line(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
    strategy: str,
) -> None:
    deployment_id = await make_deployment()
    other = await make_deployment(branch="feature/z")
    start = utcnow() - timedelta(days=2)
    for chunk in range(5):  # several batches hours apart, some lines sharing a timestamp
        await append(
            platform,
            deployment_id,
            [f"request {chunk * 50 + i} done" for i in range(50)],
            ts=start + timedelta(hours=chunk * 7),
        )
        await append(platform, other, [f"noise {chunk}"], ts=start + timedelta(hours=chunk * 7))
    await append(platform, deployment_id, ["request same-ts a done"], ts=start)
    await append(platform, deployment_id, ["request same-ts b done"], ts=start)

    async def all_pages(**params: Any) -> tuple[list[str], int]:
        seen: list[str] = []
        cursor, pages = None, 0
        while True:
            if cursor:
                params["before_cursor"] = cursor
            page = await search(client, alice, project.id, limit=37, **params)
            seen += [line["message"] for line in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                return seen, pages

    seen, pages = await all_pages(q="request")
    assert pages == 7
    assert len(seen) == len(set(seen)) == 252
    assert seen[0] == "request 249 done"
    # the first line stored is the last one reached (ties on ts broken by insertion order)
    assert seen[-3:] == ["request same-ts b done", "request same-ts a done", "request 0 done"]
    # within one deployment, pages follow its own order
    in_deployment, _ = await all_pages(deployment=deployment_id, q="done")
    assert in_deployment[0] == "request same-ts b done"
    assert in_deployment[-1] == "request 0 done"
    assert len(in_deployment) == len(set(in_deployment)) == 252
    noise, _ = await all_pages(q="noise")
    assert noise == [f"noise {i}" for i in range(4, -1, -1)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "/(unclosed/"}, "invalid regular expression"),
        ({"q": "/a{2,1}/"}, "invalid regular expression"),
        ({"q": "//"}, "regular expression is empty"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"before_cursor": "not-a-cursor"}, "before_cursor"),
        ({"before_cursor": "MjAyNnxub3QtYW4taWQ"}, "before_cursor"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45T99:00:00"}, "until"),
        ({"since": "2026-02-02T00:00:00Z", "until": "2026-02-01T00:00:00Z"}, "since"),
        ({"level": "loud"}, "level"),
        ({"environment": "nope"}, "environment"),
        ({"q": "x" * 501}, "q"),
    ],
)
async def test_bad_query_params_are_422_and_change_nothing(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
    params: dict[str, Any],
    message: str,
) -> None:
    deployment_id = await make_deployment()
    await append(platform, deployment_id, ["one", "two"])
    before = await _counts(platform)
    response = await client.get(
        f"/api/v1/projects/{project.id}/logs", params=params, headers=alice.headers
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert message in error["message"], error
    assert await _counts(platform) == before


async def _counts(platform: Platform) -> tuple[int, int, int]:
    async with session_scope(platform.sessions) as session:
        lines = await session.scalar(select(func.count()).select_from(LogLine))
        deployments = await session.scalar(select(func.count()).select_from(Deployment))
        seq = await session.scalar(select(func.sum(Deployment.log_seq)))
    return int(lines or 0), int(deployments or 0), int(seq or 0)


async def test_search_never_crosses_projects(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    bob: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
) -> None:
    from devpush.projects import service as projects
    from devpush.projects.schemas import ProjectCreate

    async with session_scope(platform.sessions) as session:
        other = await projects.create_project(
            session=session, team_id=alice.team_id, body=ProjectCreate(name="other")
        )
    mine = await make_deployment()
    theirs = await make_deployment(project_id=other.id)
    await append(platform, mine, ["shared keyword here"])
    await append(platform, theirs, ["shared keyword there"])
    found = await search(client, alice, project.id, q="shared keyword")
    assert [line["message"] for line in found["items"]] == ["shared keyword here"]
    # a deployment filter naming another project's deployment finds nothing
    assert (await search(client, alice, project.id, deployment=theirs))["items"] == []


async def test_substring_matching_as_with_pg_trgm(
    platform: Platform, project: ProjectRefs, make_deployment: MakeDeployment
) -> None:
    """Where pg_trgm exists the keyword matches anywhere, LIKE wildcards taken literally."""
    from devpush.logs.search import LogQuery
    from devpush.logs.store import PostgresLogStore

    deployment_id = await make_deployment()
    await append(
        platform,
        deployment_id,
        ["ReadTimeoutError raised", "sale: 50%_off today", "sale: 50xxoff today", r"a\b"],
    )
    trigram = PostgresLogStore()
    trigram._trigram = True  # what it finds on a PostgreSQL with the trigram index

    async def messages(q: str) -> list[str]:
        async with session_scope(platform.sessions) as session:
            page = await trigram.query(session=session, project_id=project.id, query=LogQuery(q=q))
        return [line.message for line in page.items]

    assert await messages("timeout") == ["ReadTimeoutError raised"]
    assert await messages("50%_OFF") == ["sale: 50%_off today"]
    assert await messages("\\b") == [r"a\b"]
