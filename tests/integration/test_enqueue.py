"""Deterministic job ids: enqueuing the same work twice queues one job (issue #18, item 8)."""

from __future__ import annotations

from arq.constants import default_queue_name

from devpush.platform import Platform
from devpush.queue import enqueue_retire_branch


async def test_retiring_a_branch_twice_queues_one_job(platform: Platform) -> None:
    await enqueue_retire_branch(platform.redis, "p1", "feature/x")
    await enqueue_retire_branch(platform.redis, "p1", "feature/x")
    await enqueue_retire_branch(platform.redis, "p1", "other")
    await enqueue_retire_branch(platform.redis, "p2", "feature/x")
    queued = sorted(j.decode() for j in await platform.redis.zrange(default_queue_name, 0, -1))
    assert queued == [
        "retire-branch:p1:feature/x",
        "retire-branch:p1:other",
        "retire-branch:p2:feature/x",
    ]
