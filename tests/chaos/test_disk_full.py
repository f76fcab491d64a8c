"""Scenario 5: the disk under the data directory fills up (a small tmpfs mounted over the
directory the worker exports sources into, then filled). Deployments fail with a message that
says so, the platform stays up and apps keep serving; once space is freed, deploys succeed."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.checks import TrafficLoop, wait_until_sound
from tests.chaos.faults import assert_no_crash
from tests.e2e.apps import Api, commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.chaos


@contextlib.contextmanager
def full_disk(directory: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs over `directory`, filled to the last byte; always unmounted after."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "devpush-chaos-full", str(directory)],
        check=True,
        timeout=30,
    )
    try:
        filler = directory / "filler"
        result = subprocess.run(
            ["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, timeout=60
        )
        assert b"No space left" in result.stderr, result.stderr
        yield filler
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(directory)], timeout=30).returncode == 0:
                break
            subprocess.run(["sleep", "0.5"], timeout=5)
        else:
            subprocess.run(["umount", "-l", str(directory)], check=True, timeout=30)


def test_full_disk_fails_deploys_clearly_and_recovers(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", body="before")
    project = api.project(repo, "diskfull")
    first = api.wait(api.deploy(project["id"])["id"], timeout=180)
    assert first["conclusion"] == "succeeded", first
    commit(repo, "x" * 200_000, message="a body bigger than what is left")

    with TrafficLoop(chaos.proxy_url, canary + ["diskfull.localhost"]) as loop:
        with assert_no_crash(chaos), full_disk(chaos.data_dir / "builds"):
            failed = api.wait(api.deploy(project["id"])["id"], timeout=180)
            assert failed["conclusion"] == "failed", failed
            print("error:", failed["error"])
            assert "No space left on device" in failed["error"], failed["error"]
            assert "Free disk space under" in failed["error"], failed["error"]
            logs = api.get(
                f"/api/v1/projects/{project['id']}/logs", deployment=failed["id"], limit=1000
            )["items"]
            assert any("No space left on device" in line["message"] for line in logs), logs
            assert httpx.get(f"{chaos.app_url}/health", timeout=10).status_code == 200
            assert api.body("http://diskfull.localhost") == "before"
        after = api.wait(api.deploy(project["id"])["id"], timeout=180)
        assert after["conclusion"] == "succeeded", after
        wait_until_sound(chaos, loops=[loop])
    assert api.body("http://diskfull.localhost") == "x" * 200_000
