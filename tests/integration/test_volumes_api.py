"""Persistent volumes through the API (issue #20): declaring them, the bad input that is
refused without changing anything, the usage report, and deleting a project that holds data in
one only when asked to explicitly."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from devpush.platform import Platform
from devpush.runtime import volumes as host_volumes
from devpush.runtime.base import VolumeMount
from tests.factories.auth import Account
from tests.integration.test_projects_deployments_api import create_project as create_web_project


async def create_project(client: httpx.AsyncClient, account: Account, **body: Any) -> Any:
    return await create_web_project(client, account, **{"name": "notes", **body})


async def test_volumes_are_declared_changed_and_cleared(
    client: httpx.AsyncClient, alice: Account
) -> None:
    data = {"name": "data", "mount_path": "/data", "size_mb": 64}
    project = await create_project(client, alice, volumes=[data])
    assert project["config"]["volumes"] == [data]
    uploads = {"name": "uploads", "mount_path": "/srv/uploads", "size_mb": None}
    changed = await client.patch(
        f"/api/v1/projects/{project['id']}",
        json={"volumes": [data, uploads]},
        headers=alice.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["config"]["volumes"] == [data, uploads]
    listed = await client.get(f"/api/v1/projects/{project['id']}/volumes", headers=alice.headers)
    assert listed.status_code == 200
    assert [(v["name"], v["mount_path"], v["copies"]) for v in listed.json()] == [
        ("data", "/data", []),
        ("uploads", "/srv/uploads", []),
    ]
    cleared = await client.patch(
        f"/api/v1/projects/{project['id']}", json={"volumes": []}, headers=alice.headers
    )
    assert "volumes" not in cleared.json()["config"]


@pytest.mark.parametrize(
    ("volumes", "words"),
    [
        ([{"name": "data", "mount_path": "/etc/app"}], "overlaps /etc"),
        ([{"name": "data", "mount_path": "/app"}], "overlaps /app"),
        ([{"name": "data", "mount_path": "/"}], "over /"),
        ([{"name": "data", "mount_path": "/usr"}], "overlaps /usr"),
        ([{"name": "data", "mount_path": "relative"}], "absolute"),
        ([{"name": "data", "mount_path": "/data/../etc"}], "not a normal path"),
        ([{"name": "data", "mount_path": "/data\x00x"}], "NUL characters"),
        ([{"name": "data", "mount_path": "/data/"}], "not a normal path"),
        ([{"name": "data", "mount_path": "//data"}], "not a normal path"),
        ([{"name": "Data!", "mount_path": "/data"}], "volume name"),
        ([{"name": "$(reboot)", "mount_path": "/data"}], "volume name"),
        ([{"name": "data", "mount_path": "/data", "size_mb": 0}], "size_mb"),
        ([{"name": "data", "mount_path": "/data", "size_mb": "big"}], "size_mb"),
        ([{"name": "data"}], "mount_path"),
        ([{"name": "data", "mount_path": "/data", "owner": "x"}], "owner"),
        (
            [{"name": "data", "mount_path": "/a"}, {"name": "data", "mount_path": "/b"}],
            "two volumes are named",
        ),
        (
            [{"name": "a", "mount_path": "/data"}, {"name": "b", "mount_path": "/data"}],
            "two volumes are mounted",
        ),
        (
            [{"name": "a", "mount_path": "/data"}, {"name": "b", "mount_path": "/data/x"}],
            "inside the one",
        ),
        ([{"name": f"v{i}", "mount_path": f"/v{i}"} for i in range(11)], "at most 10"),
        ("data:/data", "list"),
    ],
)
async def test_bad_volumes_are_refused_and_change_nothing(
    client: httpx.AsyncClient, alice: Account, volumes: Any, words: str
) -> None:
    keep = [{"name": "data", "mount_path": "/data", "size_mb": None}]
    project = await create_project(client, alice, volumes=keep)
    response = await client.patch(
        f"/api/v1/projects/{project['id']}", json={"volumes": volumes}, headers=alice.headers
    )
    assert response.status_code == 422, response.text
    assert words in response.text, response.text
    shown = await client.get(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert shown.json()["config"]["volumes"] == keep


async def test_another_teams_volumes_are_not_found(
    client: httpx.AsyncClient, alice: Account, bob: Account
) -> None:
    project = await create_project(client, alice, volumes=[{"name": "d", "mount_path": "/d"}])
    for method, path in (
        ("GET", f"/api/v1/projects/{project['id']}/volumes"),
        ("DELETE", f"/api/v1/projects/{project['id']}?delete_volumes=true"),
    ):
        response = await client.request(method, path, headers=bob.headers)
        assert response.status_code == 404, response.text


def write_volume(platform: Platform, project_id: str, environment_id: str) -> None:
    root = host_volumes.root_of(platform.settings.data_path)
    volume = VolumeMount(name="data", mount_path="/data", environment_id=environment_id)
    directory = host_volumes.ensure(root, project_id, volume, 0, 0)
    (directory / "notes.db").write_bytes(b"x" * 20_000)


async def test_deleting_a_project_with_volume_data_needs_the_flag(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await create_project(client, alice, volumes=[{"name": "data", "mount_path": "/d"}])
    production = next(e for e in project["environments"] if e["is_production"])
    write_volume(platform, project["id"], production["id"])
    listed = await client.get(f"/api/v1/projects/{project['id']}/volumes", headers=alice.headers)
    [copy] = listed.json()[0]["copies"]
    assert copy["environment"] == "production" and copy["runtime"] == "process"
    assert copy["used_bytes"] >= 20_000
    refused = await client.delete(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert refused.status_code == 409 and "delete_volumes=true" in refused.text
    shown = await client.get(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert shown.status_code == 200 and shown.json()["status"] == "active"
    bad = await client.delete(
        f"/api/v1/projects/{project['id']}?delete_volumes=maybe", headers=alice.headers
    )
    assert bad.status_code == 422
    accepted = await client.delete(
        f"/api/v1/projects/{project['id']}?delete_volumes=true", headers=alice.headers
    )
    assert accepted.status_code == 202, accepted.text


async def test_data_left_by_an_undeclared_volume_still_counts(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    project = await create_project(client, alice)
    production = next(e for e in project["environments"] if e["is_production"])
    write_volume(platform, project["id"], production["id"])
    listed = await client.get(f"/api/v1/projects/{project['id']}/volumes", headers=alice.headers)
    [volume] = listed.json()
    assert volume["name"] == "data" and volume["mount_path"] is None and volume["copies"]
    refused = await client.delete(f"/api/v1/projects/{project['id']}", headers=alice.headers)
    assert refused.status_code == 409


async def test_the_delete_job_removes_the_volumes(
    client: httpx.AsyncClient, platform: Platform, alice: Account
) -> None:
    from devpush.deployments.teardown import delete_project

    project = await create_project(client, alice, volumes=[{"name": "data", "mount_path": "/d"}])
    production = next(e for e in project["environments"] if e["is_production"])
    write_volume(platform, project["id"], production["id"])
    root = host_volumes.root_of(platform.settings.data_path)
    assert (root / project["id"]).is_dir()
    assert await delete_project(platform, project["id"])
    assert not (root / project["id"]).exists()
