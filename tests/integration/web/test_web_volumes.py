"""The project settings page's Volumes section: declared volumes with the space each copy
uses, edits with their errors shown by the field, and the delete form that asks about volume
data first."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from devpush.db import session_scope
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.runtime import volumes as host_volumes
from devpush.runtime.base import VolumeMount
from tests.factories.auth import Account
from tests.integration.web.conftest import Browser
from tests.integration.web.test_web_smoke import make_project


@pytest.fixture
async def shop(platform: Platform, alice: Account) -> tuple[str, str]:
    return await make_project(platform, alice.team_id)


async def config_of(platform: Platform, project_id: str) -> dict[str, object]:
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None
        return dict(project.config)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("data /etc/data", "overlaps /etc"),
        ("data", "write name /mount/path"),
        ("data /data big", "write name /mount/path"),
        ("Data! /data", "volume name"),
        ("a /data\nb /data", "two volumes are mounted"),
        ("a /data 0", "size_mb"),
    ],
)
async def test_bad_volume_lines_are_shown_by_the_field_and_change_nothing(
    alice_web: Browser, shop: tuple[str, str], platform: Platform, text: str, words: str
) -> None:
    project_id, _ = shop
    response = await alice_web.post(f"/projects/{project_id}/volumes", {"volumes": text}, htmx=True)
    assert response.status_code == 422, response.text[:500]
    assert 'data-error-for="volumes"' in response.text and words in response.text
    assert "volumes" not in await config_of(platform, project_id)


async def test_volumes_are_saved_listed_with_their_usage_and_guard_deletion(
    alice_web: Browser, shop: tuple[str, str], platform: Platform
) -> None:
    project_id, _ = shop
    name = "shop"
    saved = await alice_web.post(
        f"/projects/{project_id}/volumes", {"volumes": "data /data 64\nuploads /srv/up"}, htmx=True
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    assert (await config_of(platform, project_id))["volumes"] == [
        {"name": "data", "mount_path": "/data", "size_mb": 64},
        {"name": "uploads", "mount_path": "/srv/up", "size_mb": None},
    ]
    async with session_scope(platform.sessions) as session:
        production = await session.scalar(
            select(Environment.id).where(
                Environment.project_id == project_id, Environment.is_production.is_(True)
            )
        )
    assert production is not None
    root = host_volumes.root_of(platform.settings.data_path)
    volume = VolumeMount(name="data", mount_path="/data", environment_id=production)
    (host_volumes.ensure(root, project_id, volume, 0, 0) / "db").write_bytes(b"x" * 50_000)
    page = await alice_web.get(f"/projects/{project_id}/settings")
    assert "production (process)" in page.text and "MiB" in page.text
    assert "data /data 64" in page.text  # the form shows what is declared

    refused = await alice_web.post(f"/projects/{project_id}/delete", {"confirm": name}, htmx=True)
    assert refused.status_code == 422 and 'data-error-for="delete_volumes"' in refused.text
    async with session_scope(platform.sessions) as session:
        project = await session.get(Project, project_id)
        assert project is not None and project.status == "active"
    deleted = await alice_web.post(
        f"/projects/{project_id}/delete", {"confirm": name, "delete_volumes": "on"}
    )
    assert deleted.status_code == 303
