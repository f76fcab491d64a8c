"""`devpush backup` and `devpush restore` on real platforms (`devpush up`, process runtime).

A platform with two projects (one deployed from a file:// repository, one pushed to the
platform's own git remote), each with a secret env var its app echoes and a build log line, is
backed up and stopped. A new platform in a new data dir refuses bad archives and mismatching
keys without changing anything, then restores the backup: both projects serve again through
Traefik with their env vars decrypted, the values reveal through the API, and the old log lines
are searchable. A second restore onto the now non-empty platform is refused without --force,
and with --force replaces it and serves again.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.e2e.apps import Api, git, make_repo
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

pytestmark = pytest.mark.ops

EXTRA = {
    "DEVPUSH_RUNTIME": "process",
    "DEVPUSH_DEPLOY_TIMEOUT": "120",
    "DEVPUSH_VERIFY_DOMAINS": "false",
}


@dataclass
class Project:
    id: str
    slug: str
    greeting: str
    keyword: str
    body: str
    url: str  # the production URL
    volume_mark: str | None = None  # written to its volume by its first start


@dataclass
class Backup:
    path: Path
    projects: list[Project]
    stderr: str


def devpush(platform: RunningPlatform, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devpush", *args],
        env={**platform.env, **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def start(data: Path) -> RunningPlatform:
    running = start_platform(data, env=platform_env(data, **EXTRA), timeout=300)
    wait_health(running.app_url, timeout=120)
    return running


def stop(running: RunningPlatform) -> None:
    code = running.stop(timeout=120)
    assert code == 0, running.text()[-3000:]


def new_project(
    api: Api, name: str, repo: Path | None, keyword: str, mark: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "start_command": "python3 app.py",
        "build_command": f"echo {keyword}",
        "health_path": "/",
    }
    if mark:  # each start prints what its volume holds, then adds the mark
        body["volumes"] = [{"name": "data", "mount_path": "/data"}]
        body["start_command"] = (
            f"sh -c 'cat /data/marks 2>/dev/null; echo {mark} >> /data/marks; exec python3 app.py'"
        )
    if repo is not None:
        body["repo_url"] = f"file://{repo}"
    return dict(api.post(f"/api/v1/teams/{api.team()}/projects", body, expect=201))


def set_secret(api: Api, project_id: str, value: str) -> None:
    response = api.http.put(
        f"/api/v1/projects/{project_id}/env/GREETING", json={"value": value, "secret": True}
    )
    assert response.status_code == 200, response.text


def production_url(api: Api, project_id: str) -> tuple[str, str]:
    """The newest deployment's production URL, once it succeeded."""
    deployment = api.get(f"/api/v1/projects/{project_id}/deployments")["items"][0]
    done = api.wait(deployment["id"], timeout=240)
    assert done["conclusion"] == "succeeded", done
    return str(done["urls"]["environment"]), str(done["id"])


def push(platform: RunningPlatform, api: Api, token: str, slug: str, work: Path) -> None:
    port = platform.env["DEVPUSH_APP_PORT"]
    url = f"http://me:{token}@127.0.0.1:{port}/git/{api.team()}/{slug}.git"
    result = subprocess.run(
        ["git", "push", url, "main"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(work), "GIT_TERMINAL_PROMPT": "0"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "remote: Deployment succeeded" in result.stderr, result.stderr


def private_root(name: str) -> Path:
    """A directory of our own for a platform's data: the embedded PostgreSQL runs as another
    user and needs to traverse it, which pytest's basetemp (0700, re-tightened by any pytest
    session starting meanwhile) does not reliably allow."""
    return Path(tempfile.mkdtemp(prefix=f"devpush-backup-test-{name}-"))


@pytest.fixture(scope="module")
def backup() -> Iterator[Backup]:
    root = private_root("source")
    source = start(root / "data")
    try:
        token = source.token()
        api = Api(source.app_url, token, source.proxy_url)
        projects = []
        for name, pushed in (("from-file", False), ("pushed", True)):
            keyword = f"buildkw{secrets.token_hex(6)}"
            greeting = f"-greeting-{secrets.token_hex(6)}"
            repo = make_repo(root / name, body=name)
            mark = None if pushed else f"volmark{secrets.token_hex(6)}"
            project = new_project(api, name, None if pushed else repo, keyword, mark)
            set_secret(api, project["id"], greeting)
            if pushed:
                push(source, api, token, project["slug"], repo)
            else:
                api.deploy(project["id"])
            url, _ = production_url(api, project["id"])
            assert api.body(url) == name + greeting
            projects.append(
                Project(
                    project["id"], project["slug"], greeting, keyword, name + greeting, url, mark
                )
            )
        assert (root / "data" / "repos" / f"{projects[1].id}.git").is_dir()
        archive = root / "out" / "platform.tar.gz"
        made = devpush(source, "backup", "--output", str(archive))
        assert made.returncode == 0, made.stderr
    finally:
        stop(source)
    yield Backup(path=archive, projects=projects, stderr=made.stderr)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def target() -> Iterator[RunningPlatform]:
    root = private_root("target")
    running = start(root / "data")
    yield running
    stop(running)
    shutil.rmtree(root, ignore_errors=True)


def test_the_archive_is_private_complete_and_warns_about_its_keys(backup: Backup) -> None:
    assert stat.S_IMODE(backup.path.stat().st_mode) == 0o600
    assert "SECRET KEYS INSIDE" in backup.stderr
    assert "can decrypt every environment variable" in backup.stderr
    with tarfile.open(backup.path) as tar:
        names = set(tar.getnames())
        manifest = tar.extractfile("manifest.json")
        assert manifest is not None
        text = manifest.read().decode()
    assert {"manifest.json", "database.dump", "secrets/encryption_keys"} <= names
    assert f"repos/{backup.projects[1].id}.git/HEAD" in names
    assert any(
        n.startswith(f"volumes/{backup.projects[0].id}/") and n.endswith("/data/marks")
        for n in names
    ), sorted(names)
    assert f"traefik/dynamic/project-{backup.projects[0].slug}.yml" in names
    assert '"alembic_revision"' in text and '"created_at"' in text


def snapshot(platform: RunningPlatform) -> tuple[Any, ...]:
    """What a failed restore must leave alone: the projects, teams, repos and Traefik files."""
    api = Api(platform.app_url, platform.token(), platform.proxy_url)
    teams = api.get("/api/v1/teams")
    projects = [api.get(f"/api/v1/teams/{t['slug']}/projects") for t in teams]
    data = platform.data_dir
    dynamic = data / "traefik" / "dynamic"
    files = sorted((p.name, p.read_text()) for p in dynamic.iterdir())
    return ([t["slug"] for t in teams], projects, (data / "repos").exists(), files)


def bad_archive(path: Path, good: Path, member: str, data: bytes = b"evil") -> Path:
    """A copy of the good archive with one member added (or replaced)."""
    with tarfile.open(good) as src, tarfile.open(path, "w:gz") as dst:
        for info in src.getmembers():
            if info.name != member:
                dst.addfile(info, src.extractfile(info) if info.isfile() else None)
        info = tarfile.TarInfo(member)
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    return path


def newer_schema(path: Path, good: Path) -> Path:
    with tarfile.open(good) as src:
        handle = src.extractfile("manifest.json")
        assert handle is not None
        manifest = json.loads(handle.read())
    manifest["alembic_revision"] = "9999_from_the_future"
    return bad_archive(path, good, "manifest.json", json.dumps(manifest).encode())


def test_bad_archives_and_other_keys_change_nothing(
    backup: Backup, target: RunningPlatform, tmp_path: Path
) -> None:
    before = snapshot(target)
    corrupt = tmp_path / "corrupt.tar.gz"
    data = backup.path.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    cases = [
        ((str(corrupt),), {}, "not a devpush backup"),
        (
            (str(bad_archive(tmp_path / "climb.tar.gz", backup.path, "repos/../../x")),),
            {},
            "climbs out",
        ),
        ((str(tmp_path / "missing.tar.gz"),), {}, "no backup archive at"),
        (
            (str(newer_schema(tmp_path / "future.tar.gz", backup.path)),),
            {},
            "newer than this devpush knows",
        ),
        (
            (str(backup.path),),
            {"DEVPUSH_ENCRYPTION_KEYS": Fernet.generate_key().decode()},
            "Put the backup's keys in .env",
        ),
    ]
    for args, env, message in cases:
        result = devpush(target, "restore", *args, **env)
        assert result.returncode != 0, (args, result.stdout)
        assert message in " ".join(result.stderr.split()), (args, result.stderr)
    assert not (target.data_dir.parent / "x").exists()
    assert snapshot(target) == before


def wait_restored(api: Api, project_id: str) -> str:
    """The deployment restore created for the project, once it has succeeded."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        items = api.get(f"/api/v1/projects/{project_id}/deployments")["items"]
        restored = [d for d in items if d["trigger"] == "restore"]
        if restored:
            done = api.wait(restored[0]["id"], timeout=300)
            logs = api.get(f"/api/v1/projects/{project_id}/logs", deployment=done["id"])
            assert done["conclusion"] == "succeeded", (done["error"], logs["items"][:20])
            return str(done["id"])
        time.sleep(0.5)
    raise AssertionError(f"restore created no deployment for {project_id}")


def test_restore_brings_both_projects_back(backup: Backup, target: RunningPlatform) -> None:
    restored = devpush(target, "restore", str(backup.path))
    print(restored.stderr, restored.stdout)  # the steps, for the CI log
    assert restored.returncode == 0, restored.stderr + restored.stdout
    assert "redeploying 2 deployments" in restored.stdout, restored.stdout

    api = Api(target.app_url, target.token(), target.proxy_url)  # the restored admin
    for project in backup.projects:
        restored_id = wait_restored(api, project.id)
        assert api.body(project.url) == project.body  # served, env var decrypted
        revealed = api.post(f"/api/v1/projects/{project.id}/env/GREETING/reveal", expect=200)
        assert revealed["value"] == project.greeting
        logs = api.get(f"/api/v1/projects/{project.id}/logs", q=project.keyword)
        assert any(project.keyword in line["message"] for line in logs["items"]), logs
        if project.volume_mark:  # printed only by a start that found the restored volume
            marks = api.get(
                f"/api/v1/projects/{project.id}/logs", q=project.volume_mark, deployment=restored_id
            )
            assert any(line["message"] == project.volume_mark for line in marks["items"]), marks
    pushed = backup.projects[1]
    assert (target.data_dir / "repos" / f"{pushed.id}.git" / "HEAD").is_file()
    assert git(target.data_dir / "repos" / f"{pushed.id}.git", "log", "--format=%s", "-1") == (
        "body pushed"
    )

    again = devpush(target, "restore", str(backup.path))
    assert again.returncode != 0
    assert "not empty" in again.stderr and "--force" in again.stderr, again.stderr
    assert api.body(backup.projects[0].url) == backup.projects[0].body

    forced = devpush(target, "restore", "--force", str(backup.path))
    assert forced.returncode == 0, forced.stderr + forced.stdout
    api = Api(target.app_url, target.token(), target.proxy_url)
    for project in backup.projects:
        wait_restored(api, project.id)
        assert api.body(project.url) == project.body


def test_a_platform_that_is_not_running_is_named_with_the_fix(
    backup: Backup, tmp_path: Path
) -> None:
    env = platform_env(tmp_path / "stopped")
    for args in (("backup",), ("restore", str(backup.path))):
        result = subprocess.run(
            [sys.executable, "-m", "devpush", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 3, result.stdout  # the CLI's "no platform" code
        message = " ".join(result.stderr.split())
        assert f"devpush is not running from {tmp_path / 'stopped'}" in message, message
        assert "devpush up --detach" in message, message
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "stopped" / "backups").exists()
    assert not (tmp_path / "stopped" / "repos").exists()
