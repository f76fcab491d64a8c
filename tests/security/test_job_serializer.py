"""Forged jobs: whoever read Redis's password could queue a pickled arq job and so run code in
the worker (root). Jobs are JSON now: a pickled job is refused unopened, and the platform's own
jobs still run."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

from arq.constants import default_queue_name, job_key_prefix

from devpush.auth.models import User
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.queue import enqueue_delete_user
from tests.factories.auth import make_account
from tests.integration.test_projects_deployments_api import run_worker


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


async def test_a_pickled_job_never_runs(platform: Platform, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    forged = pickle.dumps(
        {
            "t": 1,
            "f": "cleanup_all",
            "a": (Exploit(marker),),
            "k": {},
            "et": int(time.time() * 1000),
        }
    )
    await platform.redis.set(job_key_prefix + "forged", forged)
    await platform.redis.zadd(default_queue_name, {"forged": time.time() * 1000})
    await run_worker(platform)
    assert not marker.exists()
    assert await platform.redis.zscore(default_queue_name, "forged") is None  # dropped


async def test_the_platforms_jobs_are_json_and_still_run(platform: Platform) -> None:
    account = await make_account(platform, "leaving@example.com")
    await enqueue_delete_user(platform.redis, account.user_id)
    raw = await platform.redis.get(job_key_prefix + f"delete-user:{account.user_id}")
    assert raw is not None and raw.startswith(b"{") and b'"f":"delete_user"' in raw
    await run_worker(platform)
    async with session_scope(platform.sessions) as session:
        assert await session.get(User, account.user_id) is None
