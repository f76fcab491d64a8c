"""Readiness checks: whether a deployment's app answers, and the words for why it does not.

The monitor probes the app's health path until it answers 2xx/3xx. An app that listens on
another port than $PORT, a build that runs too long or fills the disk, and an instance that
exits are each reported with a message that names the cause.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

import httpx

from devpush.runtime.base import Phase, Runtime, RuntimeHandle
from devpush.settings import Settings


@dataclass
class Outcome:
    ready: bool = False
    error: str | None = None
    build_failed: bool = False  # the build or pre-deploy command failed: name its cause


@dataclass
class PortCheck:
    """An app that listens, but not on $PORT, is told so within seconds instead of timing out
    (e.g. one that documents "listens on 3000")."""

    runtime: Runtime
    handle: RuntimeHandle
    checked_at: float = 0.0

    async def wrong_port(self, running_for: float) -> str | None:
        now = asyncio.get_running_loop().time()
        if running_for < 3.0 or now - self.checked_at < 1.0 or not self.handle.upstream:
            return None
        self.checked_at = now
        assigned = int(self.handle.upstream.rsplit(":", 1)[1])
        ports = await self.runtime.listening(self.handle)
        if not ports or assigned in ports:
            return None
        listed = ", ".join(str(port) for port in ports)
        return (
            f"The app listens on port {listed}, not on $PORT ({assigned}): start it on "
            "$HOST:$PORT (e.g. `--port $PORT`, or read process.env.PORT / os.environ['PORT'])."
        )


async def probe(http: httpx.AsyncClient, url: str) -> str | None:
    """None when ready (2xx/3xx); otherwise what was answered."""
    try:
        response = await http.get(url, follow_redirects=False)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if 200 <= response.status_code < 400:
        return None
    return f"HTTP {response.status_code}"


async def pause(s: Settings, interval: float) -> None:
    """Back off (the default), or, in "poll" mode, wait for the next tick of a fixed
    ticker as the original design's monitor did (kept to measure against it)."""
    if s.monitor_mode == "poll":
        period = s.probe_max_interval
        await asyncio.sleep(period - asyncio.get_running_loop().time() % period)
    else:
        await asyncio.sleep(interval)


def disk_full(s: Settings) -> str | None:
    """A build that fills the disk is stopped before PostgreSQL and the other apps on it
    run out of space."""
    try:
        free_mb = shutil.disk_usage(s.data_path).free // (1024 * 1024)
    except OSError:
        return None
    if free_mb >= s.build_min_free_mb:
        return None
    return (
        f"The build was stopped: the disk of {s.data_path} has {free_mb} MiB free, less than "
        f"DEVPUSH_BUILD_MIN_FREE_MB ({s.build_min_free_mb}). Free disk space, or make the "
        "build write less."
    )


def not_answering(health: str, deploy_timeout: float, last_answer: str) -> str:
    return (
        f"The app did not answer 2xx/3xx on {health} within "
        f"{deploy_timeout:.0f}s (last: {last_answer}). Check that it listens "
        "on $HOST:$PORT and that health_path is right."
    )


def build_too_long(build_timeout: float) -> str:
    return (
        f"The build took longer than {build_timeout:.0f}s and was stopped: "
        "raise the project's build_timeout or DEVPUSH_BUILD_TIMEOUT."
    )


def exit_message(phase: Phase | None, exit_code: int | None, error: str | None) -> str:
    code = f"exit code {exit_code}" if exit_code is not None else "no exit code"
    detail = f" ({error})" if error else ""
    if phase == Phase.build:
        return f"Build failed: {code}{detail}. See the build log above."
    if phase == Phase.pre_deploy:
        return f"Pre-deploy command failed: {code}{detail}."
    if phase == Phase.runtime:
        return f"The app exited during start-up: {code}{detail}. See the runtime log."
    return f"The instance stopped: {code}{detail}."
