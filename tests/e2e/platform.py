"""Run a real `devpush up` as a subprocess, with its own data dir and free ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.conftest import free_port


@dataclass
class RunningPlatform:
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def app_url(self) -> str:
        return f"http://127.0.0.1:{self.env['DEVPUSH_APP_PORT']}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.env['DEVPUSH_HTTP_PORT']}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devpush", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
        )

    def token(self, email: str = "admin@localhost") -> str:
        return self.cli("token", "create", "--email", email).stdout.strip()

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def text(self) -> str:
        return "".join(self.output)

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def remove_services(self) -> None:
        """The swarm runtime's services (and their build containers) of this platform."""
        from tests.e2e.conftest import DOCKER

        owner = self._owner()
        for kind in ("service", "container"):
            listed = subprocess.run(
                [*DOCKER, kind, "ls", "-q", *(["-a"] if kind == "container" else [])]
                + ["--filter", f"label=devpush.owner={owner}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if listed:
                rm = [*DOCKER, kind, "rm", *(["-f"] if kind == "container" else []), *listed]
                subprocess.run(rm, capture_output=True, check=True)

    def _owner(self) -> str:
        from devpush.runtime import owner_id
        from devpush.settings import Settings

        fields = {k[8:].lower(): v for k, v in self.env.items() if k.startswith("DEVPUSH_")}
        fields.pop("build_env", None)  # JSON in the environment, not a keyword value
        return owner_id(Settings(**fields))

    def remove_containers(self) -> None:
        """Apps outlive `devpush up` by design; a test platform's containers (found by its
        owner label) go with it, so they do not pile up on the shared engine."""
        owner = self._owner()

        def listed() -> list[str]:
            found = subprocess.run(
                ["podman", "ps", "-aq", "--filter", f"label=devpush.owner={owner}"],
                capture_output=True,
                text=True,
                check=True,
            )
            return found.stdout.split()

        removed = None
        for _ in range(3):  # one the platform was removing itself may be gone or going
            if not (ids := listed()):
                break
            removed = subprocess.run(
                ["podman", "rm", "--force", "--ignore", "--time", "1", *ids],
                capture_output=True,
                text=True,
            )
            time.sleep(1)
        left = listed()
        assert not left, f"containers left: {left}: {removed.stderr if removed else ''}"
        volumes = subprocess.run(
            ["podman", "volume", "ls", "-q", "--filter", f"label=devpush.owner={owner}"],
            capture_output=True,
            text=True,
            check=True,
        )
        if names := volumes.stdout.split():  # the projects' kept install trees
            subprocess.run(["podman", "volume", "rm", "-f", *names], capture_output=True)


def platform_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env.update(
        {
            "DEVPUSH_DATA_DIR": str(data_dir),
            "DEVPUSH_APP_PORT": str(free_port()),
            "DEVPUSH_HTTP_PORT": str(free_port()),
            "DEVPUSH_HTTP_HOST": "127.0.0.1",
            "DEVPUSH_TRAEFIK_API_PORT": str(free_port()),
            "DEVPUSH_EMBEDDED_DB_PORT": str(free_port()),
            "DEVPUSH_EMBEDDED_REDIS_PORT": str(free_port()),
            "DEVPUSH_RECONCILE_INTERVAL": "2",
            "DEVPUSH_ALLOW_FILE_REPOS": "1",  # the operator's opt-in; admins deploy local repos
            "PYTHONUNBUFFERED": "1",
            "XDG_RUNTIME_DIR": "/tmp",
        }
    )
    env.update(extra)
    return env


def start_platform(
    data_dir: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> RunningPlatform:
    env = env or platform_env(data_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devpush", "up"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    running = RunningPlatform(data_dir=data_dir, env=env, proc=proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            running.output.append(line)
            if "Press Ctrl-C to stop" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            running.stop()
            raise AssertionError(f"devpush up did not start:\n{running.text()[-4000:]}")
    return running


def wait_health(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/health", timeout=2)
            if last.status_code == 200:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/health did not answer 200: {last and last.text}")
