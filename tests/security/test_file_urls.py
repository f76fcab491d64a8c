"""file:// repository URLs: the review deployed another tenant's push-remote repository by
percent-encoding its path. A file:// URL is now checked as git reads it (percent-decoded, `..`
and symlinks resolved) at creation, on update, on the "new project" page and again at deploy
time; only platform admins may use one, and only when the operator allows them."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from devpush.platform import Platform
from devpush.projects.repository import push_repo
from tests.factories.auth import Account, make_account
from tests.integration.test_projects_deployments_api import run_worker
from tests.security.test_injection import bare_repo


@pytest.fixture
async def admin(platform: Platform) -> Account:
    return await make_account(platform, "root@example.com", admin=True)


@pytest.fixture
async def victim_repo(client: httpx.AsyncClient, platform: Platform) -> Path:
    """Another team's project fed by `git push`: its bare repository in the data dir."""
    victim = await make_account(platform, "victim@example.com")
    created = await client.post(
        f"/api/v1/teams/{victim.team_slug}/projects",
        json={"name": "secret-app", "start_command": "python3 app.py"},
        headers=victim.headers,
    )
    assert created.status_code == 201, created.text
    repo = push_repo(platform.settings, created.json()["id"])
    repo.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    return repo


def hostile_urls(repo: Path, tmp_path: Path) -> dict[str, str]:
    link = tmp_path / "innocent"
    link.symlink_to(repo)
    encoded = "".join(f"%{b:02X}" for b in str(repo)[1:].encode())
    depth = len(tmp_path.parts) - 1  # as many `..` as lead from tmp_path up to /
    up, encoded_up = "/".join([".."] * depth), "/".join(["%2E%2E"] * depth)
    return {
        "plain": f"file://{repo}",
        "percent-encoded": f"file:///{encoded}",
        "encoded slashes": f"file:///{quote(str(repo)[1:], safe='')}",
        "dot-dot": f"file://{tmp_path}/{up}{repo}",
        "encoded dot-dot": f"file://{tmp_path}/{encoded_up}{repo}",
        "symlink": f"file://{link}",
        "double slash": f"file:///{repo}",
    }


async def test_no_spelling_of_a_path_in_the_data_dir_is_accepted(
    client: httpx.AsyncClient, admin: Account, victim_repo: Path, tmp_path: Path
) -> None:
    for name, url in hostile_urls(victim_repo, tmp_path).items():
        created = await client.post(
            f"/api/v1/teams/{admin.team_slug}/projects",
            json={"name": "thief", "repo_url": url, "start_command": "python3 app.py"},
            headers=admin.headers,
        )
        assert created.status_code == 422, (name, created.text)
        assert "data directory" in created.json()["error"]["message"], name
    listed = await client.get(f"/api/v1/teams/{admin.team_slug}/projects", headers=admin.headers)
    assert listed.json() == [] or listed.json().get("items") == []


async def test_an_update_cannot_point_a_project_into_the_data_dir(
    client: httpx.AsyncClient, admin: Account, victim_repo: Path, tmp_path: Path
) -> None:
    outside = bare_repo(tmp_path, "main", "init")
    created = await client.post(
        f"/api/v1/teams/{admin.team_slug}/projects",
        json={"name": "ok", "repo_url": f"file://{outside}", "start_command": "python3 app.py"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    project = created.json()
    for name, url in hostile_urls(victim_repo, tmp_path).items():
        changed = await client.patch(
            f"/api/v1/projects/{project['id']}", json={"repo_url": url}, headers=admin.headers
        )
        assert changed.status_code == 422, (name, changed.text)
    again = await client.get(f"/api/v1/projects/{project['id']}", headers=admin.headers)
    assert again.json()["repo_url"] == f"file://{outside}"


async def test_a_symlink_moved_after_creation_is_caught_at_deploy_time(
    client: httpx.AsyncClient,
    admin: Account,
    victim_repo: Path,
    platform: Platform,
    tmp_path: Path,
) -> None:
    outside = bare_repo(tmp_path, "main", "init")
    link = tmp_path / "moving"
    link.symlink_to(outside)
    created = await client.post(
        f"/api/v1/teams/{admin.team_slug}/projects",
        json={"name": "mover", "repo_url": f"file://{link}", "start_command": "python3 app.py"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    link.unlink()
    link.symlink_to(victim_repo)
    deployment = (
        await client.post(
            f"/api/v1/projects/{created.json()['id']}/deployments",
            json={"branch": "main"},
            headers=admin.headers,
        )
    ).json()
    await run_worker(platform)
    result = (
        await client.get(f"/api/v1/deployments/{deployment['id']}", headers=admin.headers)
    ).json()
    assert result["conclusion"] == "failed"
    assert "cannot point inside devpush's data directory" in result["error"]


async def test_only_platform_admins_use_local_repositories(
    client: httpx.AsyncClient, platform: Platform, tmp_path: Path
) -> None:
    member = await make_account(platform, "member@example.com")
    outside = bare_repo(tmp_path, "main", "init")
    created = await client.post(
        f"/api/v1/teams/{member.team_slug}/projects",
        json={"name": "local", "repo_url": f"file://{outside}", "start_command": "python3 app.py"},
        headers=member.headers,
    )
    assert created.status_code == 403
    assert "platform admins" in created.json()["error"]["message"]
    listed = await client.get(f"/api/v1/teams/{member.team_slug}/projects", headers=member.headers)
    assert "local" not in listed.text


@pytest.mark.parametrize(
    "url",
    ["file://localhost/etc", "file:///etc?x=1", "file://host.example/etc", "file:relative/x"],
)
async def test_odd_file_urls_get_a_clear_error(
    client: httpx.AsyncClient, admin: Account, url: str
) -> None:
    created = await client.post(
        f"/api/v1/teams/{admin.team_slug}/projects",
        json={"name": "odd", "repo_url": url, "start_command": "python3 app.py"},
        headers=admin.headers,
    )
    assert created.status_code == 422, created.text
