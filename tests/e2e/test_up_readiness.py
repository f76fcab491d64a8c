"""`devpush up` is usable once it says so, refuses ports other programs hold, and stops
promptly (issue #18, defects 2, 12 and 13)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest

from tests.e2e.platform import platform_env, start_platform

pytestmark = pytest.mark.e2e


def _devpush(
    env: dict[str, str], *args: str, timeout: float = 200
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devpush", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _admin_created_at(data: Path, email: str) -> datetime:
    url = json.loads((data / "run" / "state.json").read_text())["database_url"]

    async def query() -> datetime:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            created = await conn.fetchval("SELECT created_at FROM users WHERE email = $1", email)
        finally:
            await conn.close()
        assert isinstance(created, datetime)
        return created

    return asyncio.run(query())


def _our_processes(data: Path) -> list[psutil.Process]:
    """Processes started for this data directory (PostgreSQL's -D, Redis's config, ...)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.info["environ"] or {}
        except psutil.Error:
            continue
        if proc.pid != psutil.Process().pid and (
            str(data) in cmdline or environ.get("DEVPUSH_DATA_DIR") == str(data)
        ):
            found.append(proc)
    return found


def _open_sse(url: str, headers: dict[str, str]) -> threading.Event:
    """Follow an SSE stream in the background, as a browser tab does; set once it answers."""
    opened = threading.Event()

    def follow() -> None:
        try:
            with httpx.stream("GET", url, headers=headers, timeout=None) as stream:
                for _ in stream.iter_lines():
                    opened.set()
        except httpx.HTTPError:
            pass

    threading.Thread(target=follow, daemon=True).start()
    return opened


def test_up_detach_returns_usable_and_health_waits_for_the_first_admin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = platform_env(data)
    app_url = f"http://127.0.0.1:{env['DEVPUSH_APP_PORT']}"
    first_ok: list[datetime] = []
    done = threading.Event()

    def poll_health() -> None:
        with httpx.Client(timeout=2) as client:
            while not done.is_set() and not first_ok:
                try:
                    if client.get(f"{app_url}/health").status_code == 200:
                        first_ok.append(datetime.now().astimezone())
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)

    poller = threading.Thread(target=poll_health, daemon=True)
    poller.start()
    try:
        up = _devpush(env, "up", "--detach")
        assert up.returncode == 0, up.stdout + up.stderr
        token = _devpush(env, "token", "create", "--email", "admin@localhost", timeout=120)
        assert token.returncode == 0, token.stdout + token.stderr
        assert token.stdout.strip().startswith("dp_")
        done.set()
        poller.join(5)
        assert first_ok, "/health never answered 200"
        # every 200 comes after the admin exists: the first one does
        assert _admin_created_at(data, "admin@localhost") < first_ok[0]
    finally:
        done.set()
        stopped = _devpush(env, "stop", timeout=90)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert _our_processes(data) == []


@pytest.mark.parametrize(
    "setting",
    ["DEVPUSH_EMBEDDED_DB_PORT", "DEVPUSH_EMBEDDED_REDIS_PORT", "DEVPUSH_TRAEFIK_API_PORT"],
)
def test_up_refuses_a_port_another_program_holds(tmp_path: Path, setting: str) -> None:
    data = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = platform_env(data, **{setting: str(port)})
        up = _devpush(env, "up", timeout=120)
        leftover = _our_processes(data)
    output = up.stdout + up.stderr
    assert up.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert f"port {port} ({setting}) is in use by" in errors[0], output
    assert f"set {setting}" in errors[0], output
    assert leftover == [], [p.cmdline() for p in leftover]
    assert not (data / "postgres").exists()  # nothing started


def test_sigterm_with_an_open_sse_stream_stops_up_promptly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = platform_env(data)
    project_id = ""
    headers: dict[str, str] = {}
    for attempt in range(3):
        running = start_platform(data, env=env)
        try:
            if not project_id:
                headers = {"Authorization": f"Bearer {running.token()}"}
                team = httpx.get(f"{running.app_url}/api/v1/teams", headers=headers).json()[0]
                created = httpx.post(
                    f"{running.app_url}/api/v1/teams/{team['id']}/projects",
                    headers=headers,
                    json={"name": "sse-stop"},
                )
                assert created.status_code == 201, created.text
                project_id = created.json()["id"]
            url = f"{running.app_url}/api/v1/projects/{project_id}/events"
            assert _open_sse(url, headers).wait(15), "the SSE stream did not open"
            children = running.children()
            started = time.monotonic()
            running.proc.send_signal(signal.SIGTERM)
            code = running.proc.wait(60)
            took = time.monotonic() - started
        finally:
            running.stop()
        assert code == 0, running.text()[-3000:]
        assert took < 15, f"attempt {attempt}: up took {took:.1f}s to stop"
        alive = [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], [p.cmdline() for p in alive]
