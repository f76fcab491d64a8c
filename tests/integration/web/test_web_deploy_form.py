"""The project page's deploy form: a branch of the repository, a commit of its recent history
and the environment the branch deploys to. Bad input is shown on the form and creates nothing;
other teams get 404; a post without the CSRF token is refused."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from devpush.db import session_scope
from devpush.deployments.models import Deployment
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects.schemas import EnvironmentIn, ProjectCreate
from tests.e2e.apps import commit, make_repo
from tests.factories.auth import Account
from tests.integration.web.conftest import Browser


@dataclass
class Shop:
    project_id: str
    production_id: str
    staging_id: str
    shas: list[str]  # main's commits, oldest first
    release_sha: str  # on release/1 only
    other_sha: str  # on topic only


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


async def make_shop(platform: Platform, team_id: str, repo: Path, name: str = "shop") -> str:
    async with session_scope(platform.sessions) as session:
        project = await projects.create_project(
            session=session,
            team_id=team_id,
            body=ProjectCreate(
                name=name,
                repo_url=f"file://{repo}",
                environments=[EnvironmentIn(name="staging", branch_pattern="release/*")],
            ),
        )
        return project.id


@pytest.fixture
async def shop(platform: Platform, alice: Account, tmp_path: Path) -> Shop:
    repo = make_repo(tmp_path / "repo", body="A")
    shas = [git(repo, "rev-parse", "HEAD")]
    for body in ("B", "C"):
        commit(repo, body, f"change to {body}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "checkout", "-q", "-b", "release/1")
    commit(repo, "R", "release one")
    release_sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "topic", shas[0])
    commit(repo, "T", "topic work")
    other_sha = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    project_id = await make_shop(platform, alice.team_id, repo)
    async with session_scope(platform.sessions) as session:
        envs = await projects.list_environments(session=session, project_id=project_id)
    return Shop(
        project_id=project_id,
        production_id=next(e.id for e in envs if e.is_production),
        staging_id=next(e.id for e in envs if not e.is_production),
        shas=shas,
        release_sha=release_sha,
        other_sha=other_sha,
    )


async def deployments_of(platform: Platform, project_id: str) -> list[Deployment]:
    async with session_scope(platform.sessions) as session:
        rows = await session.scalars(select(Deployment).where(Deployment.project_id == project_id))
        return list(rows)


async def count_all(platform: Platform) -> int:
    async with session_scope(platform.sessions) as session:
        return int(await session.scalar(select(func.count()).select_from(Deployment)) or 0)


async def test_form_lists_branches_commits_and_the_matching_environment(
    alice_web: Browser, shop: Shop
) -> None:
    overview = await alice_web.get(f"/projects/{shop.project_id}")
    assert f'hx-get="/projects/{shop.project_id}/deploy/form"' in overview.text

    form = await alice_web.get(f"/projects/{shop.project_id}/deploy/form")
    assert form.status_code == 200, form.text
    for branch in ("main", "release/1", "topic"):
        assert f'<option value="{branch}"' in form.text
    assert form.text.index('value="main"') < form.text.index('value="release/1"')
    for sha, subject in zip(shop.shas, ("body A", "change to B", "change to C"), strict=True):
        assert f'<option value="{sha}"' in form.text
        assert f"{sha[:7]} · {subject}" in form.text
    assert shop.release_sha not in form.text
    assert f'<option value="{shop.production_id}" selected>' in form.text
    assert f'<option value="{shop.staging_id}" disabled>' in form.text

    choices = await alice_web.get(
        f"/projects/{shop.project_id}/deploy/commits", params={"branch": "release/1"}
    )
    assert choices.status_code == 200
    assert shop.release_sha in choices.text
    assert f'<option value="{shop.staging_id}" selected>' in choices.text
    assert f'<option value="{shop.production_id}" disabled>' in choices.text

    preview = await alice_web.get(
        f"/projects/{shop.project_id}/deploy/commits", params={"branch": "topic"}
    )
    assert '<option value="" selected>Preview (no environment)</option>' in preview.text

    for hostile in ("nope", "main; id", "../main", "x" * 5000):
        refused = await alice_web.get(
            f"/projects/{shop.project_id}/deploy/commits", params={"branch": hostile}
        )
        assert refused.status_code == 422, hostile
        assert 'data-error-for="commit_sha"' in refused.text


async def test_deploys_an_older_commit_to_the_chosen_environment(
    alice_web: Browser, shop: Shop, platform: Platform
) -> None:
    response = await alice_web.post(
        f"/projects/{shop.project_id}/deploy/form",
        {"branch": "main", "commit_sha": shop.shas[0], "environment": shop.production_id},
    )
    assert response.status_code == 303, response.text
    [row] = await deployments_of(platform, shop.project_id)
    assert response.headers["location"] == f"/deployments/{row.id}"
    assert (row.branch, row.commit_sha, row.environment_id, row.trigger) == (
        "main",
        shop.shas[0],
        shop.production_id,
        "ui",
    )

    # a short sha, a release branch to staging, over HTMX
    staged = await alice_web.post(
        f"/projects/{shop.project_id}/deploy/form",
        {
            "branch": "release/1",
            "commit_sha": shop.release_sha[:10],
            "environment": shop.staging_id,
        },
        htmx=True,
    )
    assert staged.status_code == 204 and staged.headers["hx-redirect"].startswith("/deployments/")
    latest = await deployments_of(platform, shop.project_id)
    new = next(d for d in latest if d.id != row.id)
    assert (new.commit_sha, new.environment_id) == (shop.release_sha, shop.staging_id)

    # no commit: the branch's latest when it deploys, as the API does; a preview branch
    fresh = await alice_web.post(
        f"/projects/{shop.project_id}/deploy/form",
        {"branch": "topic", "commit_sha": "", "environment": ""},
    )
    assert fresh.status_code == 303
    topic = next(d for d in await deployments_of(platform, shop.project_id) if d.branch == "topic")
    assert topic.commit_sha is None and topic.environment_id is None


BIG = "a" * 5000


def bad_forms(shop: Shop, other_env: str) -> list[tuple[dict[str, str], str, str]]:
    """(form, field with the error, text of the error)."""
    main = {"branch": "main", "commit_sha": shop.shas[1], "environment": shop.production_id}
    return [
        (main | {"branch": "nope"}, "branch", "the repository has no branch nope"),
        (main | {"branch": ""}, "branch", "choose a branch"),
        (main | {"commit_sha": shop.other_sha}, "commit_sha", "is not in the recent history"),
        (main | {"commit_sha": shop.release_sha}, "commit_sha", "is not in the recent history"),
        (main | {"commit_sha": "0" * 40}, "commit_sha", "is not in the recent history"),
        (main | {"environment": other_env}, "environment", "not an environment of this project"),
        (main | {"environment": shop.staging_id}, "environment", "deploys to the production"),
        (main | {"environment": ""}, "environment", "deploys to the production"),
        (
            main | {"branch": "release/1", "commit_sha": shop.release_sha},
            "environment",
            "deploys to the staging",
        ),
        (main | {"branch": "main; rm -rf /"}, "branch", "not a valid branch name"),
        (main | {"branch": "main\nHEAD"}, "branch", "not a valid branch name"),
        (main | {"branch": "../main"}, "branch", "not a valid branch name"),
        (main | {"branch": "$(id)"}, "branch", "the repository has no branch"),
        (main | {"branch": BIG}, "branch", "too long"),
        (main | {"commit_sha": "$(touch /tmp/pwned)"}, "commit_sha", "choose a commit"),
        (main | {"commit_sha": f"{shop.shas[1]}\n--all"}, "commit_sha", "choose a commit"),
        (main | {"commit_sha": "HEAD~1"}, "commit_sha", "choose a commit"),
        (main | {"commit_sha": BIG}, "commit_sha", "too long"),
        (main | {"environment": "x'; drop table deployment; --"}, "environment", "not an env"),
        (main | {"environment": "../" + shop.production_id}, "environment", "not an env"),
        (main | {"environment": BIG}, "environment", "too long"),
    ]


async def test_bad_input_is_shown_on_the_form_and_creates_nothing(
    alice_web: Browser, alice: Account, shop: Shop, platform: Platform, tmp_path: Path
) -> None:
    other = await make_shop(platform, alice.team_id, make_repo(tmp_path / "other"), "other")
    async with session_scope(platform.sessions) as session:
        other_env = (await projects.list_environments(session=session, project_id=other))[0].id
    before = await count_all(platform)
    for data, field, message in bad_forms(shop, other_env):
        for htmx in (False, True):
            response = await alice_web.post(
                f"/projects/{shop.project_id}/deploy/form", data, htmx=htmx
            )
            what = f"{field}={data[field][:40]!r} htmx={htmx}"
            assert response.status_code == 422, what
            assert f'data-error-for="{field}"' in response.text, what
            assert message in response.text, what
            assert 'id="deploy-form"' in response.text, what
            if not htmx:  # the whole project page, with the form in it
                assert "Latest deployments" in response.text, what
    assert await count_all(platform) == before


async def test_csrf_other_teams_and_missing_projects_create_nothing(
    alice_web: Browser, bob_web: Browser, shop: Shop, platform: Platform
) -> None:
    good = {"branch": "main", "commit_sha": shop.shas[0], "environment": shop.production_id}
    path = f"/projects/{shop.project_id}/deploy/form"
    no_token = await alice_web.post(path, good, csrf=False)
    assert no_token.status_code == 403
    wrong = await alice_web.http.post(path, data=good | {"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    for url in (path, f"/projects/{shop.project_id}/deploy/commits?branch=main"):
        assert (await bob_web.get(url)).status_code == 404
    assert (await bob_web.post(path, good)).status_code == 404
    assert (await alice_web.post("/projects/nope/deploy/form", good)).status_code == 404
    assert await deployments_of(platform, shop.project_id) == []


async def test_a_push_remote_with_nothing_pushed_offers_nothing(
    alice_web: Browser, alice: Account, platform: Platform
) -> None:
    async with session_scope(platform.sessions) as session:
        project = await projects.create_project(
            session=session, team_id=alice.team_id, body=ProjectCreate(name="pushed")
        )
    form = await alice_web.get(f"/projects/{project.id}/deploy/form")
    assert form.status_code == 200
    assert 'data-testid="deploy-empty"' in form.text
    refused = await alice_web.post(
        f"/projects/{project.id}/deploy/form", {"branch": "main", "environment": ""}
    )
    assert refused.status_code == 422
    assert await deployments_of(platform, project.id) == []
