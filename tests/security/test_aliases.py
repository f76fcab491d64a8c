"""Alias squatting: the review named a project "shop-branch-main" and so claimed the branch
hostname of project "shop" (its deployment then hung in finalize). Slugs that contain an alias
word as a part are refused at creation, so no two projects' hostnames can ever meet: a property
checked over generated slugs, branches, PR numbers and environments."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devpush.deployments.service import alias_specs
from devpush.naming import reserved_word_in, slugify
from devpush.platform import Platform
from tests.factories.auth import make_account

SQUATTERS = ["shop-branch-main", "shop-env-staging", "shop-pr-5", "shop-id-abcdef0", "Shop PR"]
FINE = ["identity", "prism", "envoy", "branchy", "id-service", "pr", "shop-2", "env"]


def aliases(slug: str, branch: str, pr: int | None, env: str | None) -> set[str]:
    project: Any = SimpleNamespace(slug=slug)
    deployment: Any = SimpleNamespace(id="0123456789abcdef", branch=branch, pr_number=pr)
    environment: Any = None
    if env is not None:
        is_production = env == "production"
        environment = SimpleNamespace(id=f"e{len(env)}x", slug=env, is_production=is_production)
    return {spec.value for spec in alias_specs(project, deployment, environment)}


words = st.sampled_from(["shop", "id", "pr", "branch", "env", "x", "2", "a1", "main", "web"])
slugs = st.lists(words, min_size=1, max_size=4).map("-".join).map(slugify)
branches = st.lists(words, min_size=1, max_size=4).map("/".join)
envs = st.one_of(
    st.none(), st.just("production"), st.lists(words, min_size=1, max_size=2).map("-".join)
)


@settings(max_examples=3000, derandomize=True, deadline=None)
@given(slugs, slugs, branches, branches, st.one_of(st.none(), st.integers(1, 99)), envs, envs)
def test_accepted_slugs_never_share_a_hostname(
    one: str, two: str, b1: str, b2: str, pr: int | None, e1: str | None, e2: str | None
) -> None:
    if one == two or reserved_word_in(one) or reserved_word_in(two):
        return
    if (e1 and (e1 == "id" or e1.startswith("id-"))) or (
        e2 and (e2 == "id" or e2.startswith("id-"))
    ):
        return  # refused environment names (EnvironmentIn)
    assert not aliases(one, b1, pr, e1) & aliases(two, b2, None, e2)


def test_the_reported_squat_is_a_reserved_word() -> None:
    victim = aliases("shop", "main", None, "production")
    assert "shop-branch-main" in victim  # what the squatter's production alias would be
    assert reserved_word_in("shop-branch-main") == "branch"


@pytest.mark.parametrize("name", SQUATTERS)
async def test_a_squatting_name_is_refused_at_creation(
    client: httpx.AsyncClient, platform: Platform, name: str
) -> None:
    account = await make_account(platform, "squatter@example.com")
    created = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={"name": name, "start_command": "python3 app.py"},
        headers=account.headers,
    )
    assert created.status_code == 422, created.text
    assert "reserved" in created.json()["error"]["message"]
    listed = await client.get(
        f"/api/v1/teams/{account.team_slug}/projects", headers=account.headers
    )
    assert name not in listed.text


async def test_names_that_merely_contain_the_letters_are_fine(
    client: httpx.AsyncClient, platform: Platform
) -> None:
    account = await make_account(platform, "owner@example.com")
    for name in FINE:
        created = await client.post(
            f"/api/v1/teams/{account.team_slug}/projects",
            json={"name": name, "start_command": "python3 app.py"},
            headers=account.headers,
        )
        assert created.status_code == 201, (name, created.text)


@pytest.mark.parametrize("env", ["id", "id-0123", "id-anything"])
async def test_an_environment_named_like_the_id_alias_is_refused(
    client: httpx.AsyncClient, platform: Platform, env: str
) -> None:
    account = await make_account(platform, "envs@example.com")
    created = await client.post(
        f"/api/v1/teams/{account.team_slug}/projects",
        json={
            "name": "envs",
            "start_command": "python3 app.py",
            "environments": [{"name": env, "branch_pattern": "release/*"}],
        },
        headers=account.headers,
    )
    assert created.status_code == 422, created.text
    assert "reserved" in created.text
