"""Project, deployment and settings pages: other teams get 404 everywhere (pages, fragments,
actions, SSE), plain members read but cannot change settings, validation errors are shown next
to their field with nothing saved, env var values stay hidden until revealed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from devpush import crypto
from devpush.db import session_scope
from devpush.deployments.models import Deployment
from devpush.platform import Platform
from devpush.projects.models import EnvVar, Project
from devpush.teams.models import Role
from tests.e2e.apps import make_repo
from tests.factories.auth import Account, add_member, promote
from tests.integration.web.conftest import Browser
from tests.integration.web.test_web_smoke import make_project


@pytest.fixture
async def shop(platform: Platform, alice: Account) -> tuple[str, str]:
    return await make_project(platform, alice.team_id)


async def project_row(platform: Platform, project_id: str) -> Project:
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        return project


async def test_other_teams_get_404_everywhere(
    bob_web: Browser, shop: tuple[str, str], platform: Platform
) -> None:
    project_id, deployment_id = shop
    for path in (
        f"/projects/{project_id}",
        f"/projects/{project_id}/deployments",
        f"/projects/{project_id}/deployments/table",
        f"/projects/{project_id}/logs?q=x",
        f"/projects/{project_id}/settings",
        f"/deployments/{deployment_id}",
        f"/deployments/{deployment_id}/summary",
    ):
        response = await bob_web.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html"), path
        assert "Not found" in response.text
    for path, data in (
        (f"/projects/{project_id}/deploy", {"branch": "main"}),
        (f"/projects/{project_id}/settings/build", {"start_command": "x"}),
        (f"/projects/{project_id}/env", {"key": "A", "value": "1"}),
        (f"/projects/{project_id}/env/reveal", {"key": "GREETING"}),
        (f"/projects/{project_id}/domains", {"hostname": "a.example.com"}),
        (f"/projects/{project_id}/pause", {}),
        (f"/projects/{project_id}/delete", {"confirm": "shop"}),
        (f"/deployments/{deployment_id}/cancel", {}),
        (f"/deployments/{deployment_id}/rollback", {}),
    ):
        response = await bob_web.post(path, data)
        assert response.status_code == 404, path
    for path in (
        f"/api/v1/deployments/{deployment_id}/events",
        f"/api/v1/projects/{project_id}/events",
        f"/api/v1/projects/{project_id}/logs",
    ):
        response = await bob_web.get(path)
        assert response.status_code == 404, path
    project = await project_row(platform, project_id)
    assert project.status == "active" and "start_command" not in project.config


async def test_members_read_settings_but_cannot_change_them(
    browsers: Any, bob: Account, alice: Account, shop: tuple[str, str], platform: Platform
) -> None:
    from tests.integration.web.conftest import sign_in

    project_id, _ = shop
    await add_member(platform, bob, alice.team_id, Role.member)
    member = await browsers()
    await sign_in(platform, member, bob.user_id)
    page = await member.get(f"/projects/{project_id}/settings")
    assert page.status_code == 200 and 'data-testid="read-only"' in page.text
    assert "<fieldset disabled>" in page.text and "Reveal" not in page.text
    for path, data in (
        (f"/projects/{project_id}/settings/build", {"start_command": "rm -rf /"}),
        (f"/projects/{project_id}/settings/general", {"name": "pwned"}),
        (f"/projects/{project_id}/environments", {"env_name": "x", "env_pattern": "y"}),
        (f"/projects/{project_id}/env", {"key": "A", "value": "1"}),
        (f"/projects/{project_id}/env/delete", {"key": "GREETING"}),
        (f"/projects/{project_id}/env/reveal", {"key": "GREETING"}),
        (f"/projects/{project_id}/domains", {"hostname": "a.example.com"}),
        (f"/projects/{project_id}/pause", {}),
        (f"/projects/{project_id}/delete", {"confirm": "shop"}),
        (f"/t/{alice.team_slug}/invites", {"email": "x@example.com"}),
    ):
        for htmx in (False, True):
            response = await member.post(path, data, htmx=htmx)
            assert response.status_code == 403, (path, htmx)
            assert "application/json" not in response.headers["content-type"]
    project = await project_row(platform, project_id)
    assert project.name == "shop" and project.status == "active"
    assert "start_command" not in project.config
    # members still deploy
    deployed = await member.post(f"/projects/{project_id}/deploy", {"branch": "main"})
    assert deployed.status_code == 303 and deployed.headers["location"].startswith("/deployments/")


async def test_validation_errors_are_shown_next_to_the_field_and_nothing_is_saved(
    alice_web: Browser, shop: tuple[str, str], platform: Platform
) -> None:
    project_id, _ = shop
    cases = [
        ("settings/build", {"port": "eighty", "start_command": "python3 app.py"}, "port"),
        ("settings/build", {"health_path": "health", "start_command": "x"}, "health_path"),
        ("settings/build", {"root_directory": "../..", "start_command": "x"}, "root_directory"),
        ("settings/general", {"name": "no/slashes", "production_branch": "main"}, "name"),
        ("settings/general", {"name": "shop", "production_branch": "a..b"}, "production_branch"),
        ("settings/general", {"name": "shop", "repo_url": "ftp://x/y"}, "repo_url"),
        ("settings/resources", {"cpus": "-1", "memory_mb": "512"}, "cpus"),
        ("settings/resources", {"memory_mb": "1"}, "memory_mb"),
        ("settings/resources", {"replicas": "0"}, "replicas"),
        ("settings/resources", {"replicas": "three"}, "replicas"),
        ("env", {"key": "1BAD", "value": "x"}, "key"),
        ("domains", {"hostname": "not a domain", "environment": "production"}, "hostname"),
    ]
    for path, data, field in cases:
        response = await alice_web.post(f"/projects/{project_id}/{path}", data, htmx=True)
        assert response.status_code == 422, (path, data)
        assert f'data-error-for="{field}"' in response.text, (path, field, response.text[:3000])
        assert "Traceback" not in response.text and '{"error"' not in response.text
    environments = await alice_web.post(
        f"/projects/{project_id}/environments",
        {"env_name": ["staging", "staging"], "env_pattern": ["a", "b"]},
        htmx=True,
    )
    assert environments.status_code == 422 and "unique" in environments.text
    # the same without HTMX: the whole page, still with the error by its field
    page = await alice_web.post(f"/projects/{project_id}/settings/build", {"port": "0"})
    assert page.status_code == 422 and 'data-error-for="port"' in page.text
    project = await project_row(platform, project_id)
    assert project.name == "shop" and project.repo_url == "file:///tmp/nowhere"
    assert project.config == {} and project.production_branch == "main"
    async with session_scope(platform.sessions) as session:
        keys = list(await session.scalars(select(EnvVar.key)))
    assert keys == ["GREETING"]

    saved = await alice_web.post(
        f"/projects/{project_id}/settings/build",
        {"port": "9000", "start_command": "python3 app.py", "health_path": "/up"},
        htmx=True,
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    project = await project_row(platform, project_id)
    assert project.config == {"port": 9000, "start_command": "python3 app.py", "health_path": "/up"}
    cleared = await alice_web.post(
        f"/projects/{project_id}/settings/build", {"port": "", "start_command": ""}, htmx=True
    )
    assert cleared.status_code == 200
    assert (await project_row(platform, project_id)).config == {}
    scaled = await alice_web.post(
        f"/projects/{project_id}/settings/resources", {"replicas": "3"}, htmx=True
    )
    assert scaled.status_code == 200 and 'value="3"' in scaled.text
    assert (await project_row(platform, project_id)).config == {"replicas": 3}


async def test_env_values_stay_hidden_until_revealed(
    alice_web: Browser, shop: tuple[str, str], platform: Platform
) -> None:
    project_id, _ = shop
    added = await alice_web.post(
        f"/projects/{project_id}/env",
        {"key": "API_KEY", "value": "sk-very-secret", "environment": "staging", "secret": "on"},
        htmx=True,
    )
    assert added.status_code == 200 and "API_KEY saved" in added.text
    page = await alice_web.get(f"/projects/{project_id}/settings")
    assert "sk-very-secret" not in page.text and "hello" not in page.text
    assert 'data-var="API_KEY"' in page.text
    revealed = await alice_web.post(
        f"/projects/{project_id}/env/reveal",
        {"key": "API_KEY", "environment": "staging"},
        htmx=True,
    )
    assert revealed.status_code == 200 and "sk-very-secret" in revealed.text
    async with session_scope(platform.sessions) as session:
        row = await session.scalar(select(EnvVar).where(EnvVar.key == "API_KEY"))
        assert row is not None and row.secret and "sk-very" not in row.value_enc
        assert crypto.decrypt(row.value_enc) == "sk-very-secret"
    missing = await alice_web.post(
        f"/projects/{project_id}/env/reveal", {"key": "API_KEY"}, htmx=True
    )
    assert missing.status_code == 404  # not set project-wide
    deleted = await alice_web.post(
        f"/projects/{project_id}/env/delete", {"key": "API_KEY", "environment": "staging"}
    )
    assert deleted.status_code == 303
    async with session_scope(platform.sessions) as session:
        assert list(await session.scalars(select(EnvVar.key))) == ["GREETING"]


async def test_new_project_from_a_local_repository(
    alice_web: Browser, alice: Account, platform: Platform, tmp_path: Path
) -> None:
    await promote(platform, alice.user_id)  # file:// repositories are for platform admins
    repo = make_repo(tmp_path / "repo", body="A")
    detected = await alice_web.post(
        f"/t/{alice.team_slug}/new/detect",
        {"repo_url": f"file://{repo}", "production_branch": "main"},
        htmx=True,
    )
    assert detected.status_code == 200
    assert 'data-detected="python"' in detected.text
    assert 'value="python3 app.py"' in detected.text
    unreadable = await alice_web.post(
        f"/t/{alice.team_slug}/new/detect",
        {"repo_url": f"file://{tmp_path}/missing", "production_branch": "main"},
        htmx=True,
    )
    assert unreadable.status_code == 200 and "Could not read the repository" in unreadable.text
    private = await alice_web.post(
        f"/t/{alice.team_slug}/new/detect",
        {"repo_url": f"file://{platform.settings.data_path}/repos/x.git"},
        htmx=True,
    )
    assert "cannot point inside devpush&#39;s data directory" in private.text

    bad = await alice_web.post(
        f"/t/{alice.team_slug}/new", {"name": "shop", "repo_url": "ftp://example.com/x"}
    )
    assert bad.status_code == 422 and 'data-error-for="repo_url"' in bad.text
    created = await alice_web.post(
        f"/t/{alice.team_slug}/new",
        {
            "name": "shop",
            "repo_url": f"file://{repo}",
            "production_branch": "main",
            "start_command": "python3 app.py",
            "deploy_now": "on",
        },
    )
    assert created.status_code == 303 and created.headers["location"].startswith("/deployments/")
    deployment_id = created.headers["location"].rsplit("/", 1)[1]
    assert await platform.redis.exists(f"arq:job:start:{deployment_id}")
    page = await alice_web.get(created.headers["location"])
    assert page.status_code == 200 and "data-log-view" in page.text
    duplicate = await alice_web.post(
        f"/t/{alice.team_slug}/new", {"name": "shop", "repo_url": f"file://{repo}"}
    )
    assert duplicate.status_code == 422 and 'data-error-for="name"' in duplicate.text
    async with session_scope(platform.sessions) as session:
        assert await session.scalar(select(func.count()).select_from(Project)) == 1


async def test_deployment_actions_and_their_errors(
    alice_web: Browser, shop: tuple[str, str], platform: Platform
) -> None:
    project_id, deployment_id = shop
    preview = await alice_web.post(f"/projects/{project_id}/deploy", {"branch": "feature/x"})
    preview_id = preview.headers["location"].rsplit("/", 1)[1]
    rollback = await alice_web.post(f"/deployments/{preview_id}/rollback")
    assert rollback.status_code == 422 and "promote it instead" in rollback.text
    assert rollback.headers["content-type"].startswith("text/html")
    bad_branch = await alice_web.post(f"/projects/{project_id}/deploy", {"branch": "a b"})
    assert bad_branch.status_code == 422 and "branch" in bad_branch.text
    canceled = await alice_web.post(f"/deployments/{deployment_id}/cancel")
    assert canceled.status_code == 303
    async with session_scope(platform.sessions) as session:
        row = await session.get(Deployment, deployment_id)
        assert row is not None and row.conclusion is not None
        assert row.conclusion.value == "canceled"
    again = await alice_web.post(f"/deployments/{deployment_id}/cancel", htmx=True)
    assert again.status_code == 409 and 'class="toast error"' in again.text
    redeploy = await alice_web.post(f"/deployments/{deployment_id}/redeploy")
    assert redeploy.status_code == 303
    assert (await alice_web.post(f"/deployments/{deployment_id}/explode")).status_code == 422


async def test_deployment_list_filters(
    alice_web: Browser, shop: tuple[str, str], platform: Platform
) -> None:
    project_id, deployment_id = shop
    listing = await alice_web.get(f"/projects/{project_id}/deployments?status=prepare")
    assert f'data-deployment="{deployment_id}"' in listing.text
    none = await alice_web.get(f"/projects/{project_id}/deployments?status=succeeded")
    assert "data-deployment=" not in none.text and "No deployments match" in none.text
    past = await alice_web.get(f"/projects/{project_id}/deployments?date=2000-01-01")
    assert "data-deployment=" not in past.text
    assert (await alice_web.get(f"/projects/{project_id}/deployments?date=2999-01-01")).text.count(
        "data-deployment="
    ) == 1
    bad = await alice_web.get(f"/projects/{project_id}/deployments?status=exploded")
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")
    branch = await alice_web.get(f"/projects/{project_id}/deployments?branch=other")
    assert "data-deployment=" not in branch.text
    env = await alice_web.get(f"/projects/{project_id}/deployments?environment=staging")
    assert "data-deployment=" not in env.text


async def test_log_search_page_validates_its_filters(
    alice_web: Browser, shop: tuple[str, str]
) -> None:
    project_id, _ = shop
    ok = await alice_web.get(f"/projects/{project_id}/logs?q=boot&level=error&environment=staging")
    assert ok.status_code == 200 and "No log lines match" in ok.text
    bad = await alice_web.get(
        f"/projects/{project_id}/logs?since=2025-02-01T00:00&until=2025-01-01T00:00"
    )
    assert bad.status_code == 422 and "must not be later" in bad.text
    fragment = await alice_web.get(
        f"/projects/{project_id}/logs?since=yesterday",
        headers={"HX-Request": "true", "HX-Target": "results"},
    )
    assert fragment.status_code == 422 and fragment.text.lstrip().startswith('<div id="results"')


async def test_admin_page_and_allowlist_api(
    alice_web: Browser, client: httpx.AsyncClient, alice: Account, platform: Platform
) -> None:
    from devpush.auth.models import User

    assert (await alice_web.get("/admin")).status_code == 404
    denied = await client.get("/api/v1/admin/signup-rules", headers=alice.headers)
    assert denied.status_code == 403
    async with session_scope(platform.sessions) as session:
        user = await session.get(User, alice.user_id)
        assert user is not None
        user.is_admin = True
    page = await alice_web.get("/admin")
    assert page.status_code == 200 and 'data-user="alice@example.com"' in page.text
    assert "process" in page.text
    made = await client.post(
        "/api/v1/admin/signup-rules",
        json={"kind": "pattern", "value": "*@eng.example.com"},
        headers=alice.headers,
    )
    assert made.status_code == 201
    bad = await client.post(
        "/api/v1/admin/signup-rules", json={"kind": "domain", "value": "x y"}, headers=alice.headers
    )
    assert bad.status_code == 422
    rules = (await client.get("/api/v1/admin/signup-rules", headers=alice.headers)).json()
    assert [r["value"] for r in rules] == ["*@eng.example.com"]
    gone = await client.delete(
        f"/api/v1/admin/signup-rules/{rules[0]['id']}", headers=alice.headers
    )
    assert gone.status_code == 204


async def test_admin_page_shows_a_failing_event_subscriber(
    alice_web: Browser, alice: Account, platform: Platform
) -> None:
    from devpush.auth.models import User
    from devpush.outbox.dispatch import Dispatcher, Subscriber
    from devpush.outbox.emit import emit

    async def down(event: object) -> None:
        raise ConnectionError("hooks.example.com refused the connection")

    dispatcher = Dispatcher(platform.sessions, [Subscriber("chat-relay", down)])
    await dispatcher.ensure_cursors()
    async with session_scope(platform.sessions) as session:
        user = await session.get(User, alice.user_id)
        assert user is not None
        user.is_admin = True
        await emit(session, "deployment.failed", team_id=alice.team_id, data={})
    await dispatcher.deliver()
    page = await alice_web.get("/admin")
    section = page.text[page.text.index('id="events"') :]
    section = section[: section.index("</section>")]
    assert "chat-relay" in section and "failing (1×)" in section
    assert "hooks.example.com refused the connection" in section
    assert "live-views" in section  # the platform's own subscribers are listed too
