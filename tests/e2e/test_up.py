"""`devpush up`: one command starts the whole embedded platform, and stops all of it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.e2e.platform import start_platform, wait_health

pytestmark = pytest.mark.e2e


def test_up_serves_health_tokens_and_stops_without_orphans(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "data")
    try:
        assert wait_health(running.app_url).json()["status"] == "ok"
        through_proxy = httpx.get(f"{running.proxy_url}/health", headers={"Host": "localhost"})
        assert through_proxy.status_code == 200
        link = re.search(r"http://localhost:\d+/auth/link/\S+", running.text())
        assert link, running.text()
        # the one-time link signs in once
        path = link.group(0).split(":", 2)[2].split("/", 1)[1]
        first = httpx.get(f"{running.app_url}/{path}", follow_redirects=False)
        assert first.status_code == 303 and "devpush_session" in first.headers["set-cookie"]
        again = httpx.get(f"{running.app_url}/{path}", follow_redirects=False)
        assert again.status_code == 401

        token = running.token()
        assert token.startswith("dp_") and "\n" not in token
        teams = httpx.get(
            f"{running.app_url}/api/v1/teams", headers={"Authorization": f"Bearer {token}"}
        )
        assert teams.status_code == 200 and len(teams.json()) == 1
        unknown = httpx.get(running.proxy_url, headers={"Host": "nope-id-1234567.localhost"})
        assert unknown.status_code == 404 and "Deployment not found" in unknown.text

        status = running.cli("status", check=False)
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("app", "worker", "monitor", "proxy", "db", "redis"):
            assert re.search(rf"{name}\s+.*running", status.stdout), status.stdout
        assert running.cli("worker", "--check", check=False).returncode == 0
        children = running.children()
        assert len(children) >= 6
    finally:
        code = running.stop()
    assert code == 0, running.text()[-3000:]
    alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], [p.cmdline() for p in alive]


def test_up_again_reuses_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_platform(data)
    try:
        wait_health(first.app_url)
        token = first.token()
    finally:
        first.stop()
    second = start_platform(data, env=first.env)
    try:
        wait_health(second.app_url)
        teams = httpx.get(
            f"{second.app_url}/api/v1/teams", headers={"Authorization": f"Bearer {token}"}
        )
        assert teams.status_code == 200, teams.text
    finally:
        second.stop()


def test_component_scoped_stop_and_start(tmp_path: Path) -> None:
    running = start_platform(tmp_path / "data")
    try:
        wait_health(running.app_url)
        stopped = running.cli("stop", "--components", "worker", check=False)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        status = running.cli("status", "--components", "worker,app", check=False)
        assert re.search(r"worker\s+.*stopped", status.stdout), status.stdout
        assert re.search(r"app\s+.*running", status.stdout), status.stdout
        started = running.cli("start", "--components", "worker", check=False)
        assert started.returncode == 0, started.stdout + started.stderr
        bad = running.cli("stop", "--components", "nonsense", check=False)
        assert bad.returncode != 0 and "unknown components" in bad.stderr
    finally:
        running.stop()


def test_stop_with_apps_that_ignore_sigterm_is_prompt_and_none_restarts(tmp_path: Path) -> None:
    """Issue #18 defect 13: apps were stopped one after another (each that ignores SIGTERM
    waits out the kill timeout) while the monitor, still running, took each exit for a crash
    and started it again."""
    from tests.e2e.apps import Api, make_repo

    running = start_platform(tmp_path / "data")
    apps = 4
    try:
        wait_health(running.app_url)
        api = Api(running.app_url, running.token(), running.proxy_url)
        repo = make_repo(tmp_path / "repo")
        for n in range(apps):
            stubborn = "trap '' TERM; python3 app.py"
            project = api.project(repo, f"stubborn-{n}", start_command=stubborn)
            assert api.wait(api.deploy(project["id"])["id"])["conclusion"] == "succeeded"
        instances = running.data_dir / "runtime" / "process"
        started = time.monotonic()
        code = running.stop()
        took = time.monotonic() - started
    except BaseException:
        running.stop()
        raise
    assert code == 0, running.text()[-3000:]
    # one after another: apps x the 5 s kill timeout; together: one timeout and the rest
    assert took < apps * 5 * 0.7, (took, running.text()[-3000:])
    monitor_log = (running.data_dir / "logs" / "monitor.log").read_text()
    assert "live instance exited" not in monitor_log
    left = []
    for proc in psutil.process_iter(["cwd"]):
        cwd = proc.info.get("cwd") or ""
        if cwd.startswith(str(instances)):
            left.append(proc.pid)
    assert left == []
