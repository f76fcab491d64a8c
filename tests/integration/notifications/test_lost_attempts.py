"""A delivery attempt whose worker dies is not lost (issue #21): the attempt is claimed in its
row, so a second job of it does nothing, and the monitor's sweep counts a claim that ran out as
a lost attempt and sends the next under a new job id. arq itself would not run the first job
again: its worker's in-progress mark outlives the longest job timeout, and the job has one
try."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from arq.constants import in_progress_key_prefix, retry_key_prefix
from sqlalchemy import select, update

from devpush.db import session_scope
from devpush.notifications import delivery as notification_delivery
from devpush.notifications.models import NotificationChannel, NotificationDelivery
from devpush.notifications.sweep import sweep
from devpush.platform import Platform
from devpush.settings import Settings
from devpush.workers.jobs import ResilientWorker, job_timeouts, worker_settings
from tests.conftest import deliver_events
from tests.factories.auth import Account
from tests.integration.notifications.receiver import Receiver
from tests.integration.notifications.test_api import create, make_project
from tests.integration.notifications.test_delivery import deliveries, fail_deployment


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment of a `devpush worker` on the test's database and Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env["DEVPUSH_ENCRYPTION_KEYS"] = os.environ["DEVPUSH_ENCRYPTION_KEYS"]
    for name in ("data_dir", "database_url", "redis_url", "secret_key", "runtime"):
        env[f"DEVPUSH_{name.upper()}"] = str(getattr(settings, name))
    env["DEVPUSH_NOTIFICATIONS_ALLOW_PRIVATE"] = "true"
    return env


@pytest.fixture
def worker_process(platform: Platform, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real worker process, to be killed."""
    platform.settings.data_path.mkdir(parents=True, exist_ok=True)
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "devpush", "worker"],
        env=worker_env(platform.settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        log.close()


async def run_worker_until(
    platform: Platform, done: Callable[[], Awaitable[bool]], timeout: float = 20
) -> None:
    """A real arq worker (not in burst mode: a dead worker's job stays in the queue) until
    `done()` or the timeout."""
    settings = {**worker_settings(platform.settings), "handle_signals": False, "poll_delay": 0.01}
    worker = ResilientWorker(**settings)
    task = asyncio.create_task(worker.main())
    try:
        deadline = time.monotonic() + timeout
        while not await done() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await worker.close()


def recorded(platform: Platform, status: str) -> Callable[[], Awaitable[bool]]:
    """Whether the one delivery has reached `status` in its row: a worker stopped once the
    receiver has the request could be cancelled before it records the outcome."""

    async def check() -> bool:
        (row,) = await deliveries(platform)
        return row.status == status

    return check


async def wait_for_request(receiver: Receiver, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not receiver.at(path):
        assert time.monotonic() < deadline, f"nothing reached {path} in {timeout}s"
        await asyncio.sleep(0.05)


async def claim_ran_out(platform: Platform) -> None:
    """Time passes: every pending or claimed attempt is an hour late (the claim lasts the
    job's 60 s timeout; the sweep's grace is NOTIFICATIONS_LOST_AFTER)."""
    async with session_scope(platform.sessions) as session:
        await session.execute(
            update(NotificationDelivery).values(
                next_attempt_at=NotificationDelivery.next_attempt_at - timedelta(hours=1)
            )
        )


async def test_an_attempt_lost_with_its_killed_worker_is_sent_again(
    client: httpx.AsyncClient,
    platform: Platform,
    alice: Account,
    receiver: Receiver,
    worker_process: subprocess.Popen[bytes],
) -> None:
    site = await make_project(client, alice, "site")
    channel = (await create(client, alice, url=receiver.url("/slow"))).json()
    held = receiver.hold("/slow")
    await fail_deployment(platform, site)
    await deliver_events(platform)  # its delivery is queued: the worker process takes it

    await wait_for_request(receiver, "/slow")  # mid-attempt: the receiver has it, not answered
    worker_process.send_signal(signal.SIGKILL)
    worker_process.wait(10)
    held.set()
    (lost,) = await deliveries(platform)
    assert (lost.status, lost.attempts) == ("sending", 0)
    job_id = f"notify:{lost.id}:0"
    assert await platform.redis.exists(in_progress_key_prefix + job_id)  # arq's mark stays
    _, mark_seconds = job_timeouts(platform.settings)
    assert mark_seconds > 600  # the longest job's timeout: arq would hold it that long

    assert await sweep(platform) == 0  # the claim holds for the job's timeout
    await claim_ran_out(platform)
    assert await sweep(platform) == 1
    (swept,) = await deliveries(platform)
    assert (swept.status, swept.attempts) == ("pending", 1)
    assert swept.last_error and "lost" in swept.last_error

    await run_worker_until(platform, recorded(platform, "succeeded"))
    first, again = receiver.at("/slow")
    assert again.headers["x-devpush-delivery"] == first.headers["x-devpush-delivery"] == lost.id
    assert again.json() == first.json()
    (sent,) = await deliveries(platform)
    assert (sent.status, sent.attempts, sent.last_error) == ("succeeded", 2, None)
    async with session_scope(platform.sessions) as session:
        row = await session.get(NotificationChannel, channel["id"])
        assert row is not None and (row.state, row.consecutive_failures) == ("ok", 0)
    assert await sweep(platform) == 0
    assert len(receiver.at("/slow")) == 2


async def test_a_job_taken_by_a_worker_that_died_before_the_attempt_is_enqueued_anew(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    """The worker took the job (arq marked it running, counted its try) and died before it
    claimed the attempt: the same job id is refused by arq, so the sweep uses a new one."""
    site = await make_project(client, alice, "site")
    await create(client, alice, url=receiver.url("/h"))
    await fail_deployment(platform, site)
    await deliver_events(platform)
    (pending,) = await deliveries(platform)
    job_id = f"notify:{pending.id}:0"
    _, mark_seconds = job_timeouts(platform.settings)
    await platform.redis.psetex(in_progress_key_prefix + job_id, int(mark_seconds * 1000), b"1")
    await platform.redis.incr(retry_key_prefix + job_id)

    await claim_ran_out(platform)
    assert await sweep(platform) == 1
    await run_worker_until(platform, recorded(platform, "succeeded"))
    assert len(receiver.at("/h")) == 1
    (sent,) = await deliveries(platform)
    assert (sent.status, sent.attempts) == ("succeeded", 1)


async def test_a_second_job_of_a_claimed_attempt_sends_nothing(
    client: httpx.AsyncClient, platform: Platform, alice: Account, receiver: Receiver
) -> None:
    """Two jobs of one attempt at once (a sweep's and the original, late): the row's claim
    lets one send."""
    site = await make_project(client, alice, "site")
    await create(client, alice, url=receiver.url("/slow"))
    held = receiver.hold("/slow")
    await fail_deployment(platform, site)
    await deliver_events(platform)
    (pending,) = await deliveries(platform)
    first = asyncio.create_task(notification_delivery.attempt(platform, pending.id, 0))
    try:
        await wait_for_request(receiver, "/slow", timeout=20)
        assert await notification_delivery.attempt(platform, pending.id, 0) is None
    finally:
        held.set()
    assert await first is not None
    assert len(receiver.at("/slow")) == 1
    async with session_scope(platform.sessions) as session:
        rows = list(await session.scalars(select(NotificationDelivery)))
    assert [(d.status, d.attempts) for d in rows] == [("succeeded", 1)]
