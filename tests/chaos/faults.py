"""Faults injected into a running `devpush up`: kill a component, restart one the way an
operator would (`devpush restart --components ...`), find its processes by command line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator

import psutil

from devpush.platform import Platform
from devpush.workers.jobs import heartbeat_key
from tests.chaos.checks import with_platform
from tests.e2e.platform import RunningPlatform, wait_health

PLATFORM_CHILDREN = ("app", "worker", "monitor")


def component_pid(platform: RunningPlatform, name: str) -> int | None:
    """The live pid of a platform child (`python -m devpush <name>`), found by command line."""
    assert name in PLATFORM_CHILDREN, name
    for proc in platform.children():
        try:
            cmdline = proc.cmdline()
            if cmdline[-3:] == ["-m", "devpush", name] and proc.status() != psutil.STATUS_ZOMBIE:
                return proc.pid
        except psutil.Error:
            continue
    return None


def wait_component(
    platform: RunningPlatform, name: str, *, other_than: int | None = None, timeout: float = 30
) -> int:
    """Wait for a live `name` process (a new one when `other_than` is given)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = component_pid(platform, name)
        if pid is not None and pid != other_than:
            return pid
        time.sleep(0.1)
    raise AssertionError(f"no {name} process came up:\n{platform.text()[-3000:]}")


def sigkill(platform: RunningPlatform, name: str) -> int:
    pid = wait_component(platform, name)
    psutil.Process(pid).send_signal(signal.SIGKILL)
    return pid


def ensure_running(platform: RunningPlatform, name: str, *, killed: int) -> int:
    """After a kill: the supervisor restarts the child on its own, unless it has done so too
    often (it then leaves it stopped): start it again as an operator would."""
    try:
        return wait_component(platform, name, other_than=killed, timeout=8)
    except AssertionError:
        pass
    result = platform.cli("start", "--components", name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return wait_component(platform, name, other_than=killed)


def restart(platform: RunningPlatform, *names: str) -> None:
    """Restart components (db, redis, ...) through the running supervisor."""
    result = platform.cli("restart", "--components", ",".join(names), check=False)
    assert result.returncode == 0, result.stdout + result.stderr + platform.text()[-2000:]
    # `restart` returns once the processes run; the app answers again once they accept
    # connections (/health checks PostgreSQL and Redis)
    wait_health(platform.app_url, timeout=120)


def wait_job_started(platform: RunningPlatform, deployment_id: str, timeout: float = 60) -> None:
    """Wait until a worker runs the deployment's start job (its heartbeat key appears), or
    the job already ran."""

    async def started(p: Platform) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await p.redis.exists(heartbeat_key(deployment_id)):
                return
            if not await p.redis.exists(f"arq:job:start:{deployment_id}"):
                return  # done (or never queued): nothing left to interrupt
            await asyncio.sleep(0.02)
        raise AssertionError(f"no worker started the job of {deployment_id}")

    with_platform(platform, started)


@contextlib.contextmanager
def assert_no_crash(platform: RunningPlatform) -> Iterator[None]:
    """No platform process exits on its own (the supervisor says so when one does)."""
    start = len(platform.output)
    yield
    crashed = [line for line in platform.output[start:] if "exited with code" in line]
    assert crashed == [], crashed
