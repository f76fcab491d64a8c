"""Scenario 6: 50 pushes to 10 projects within 10 seconds. Every deployment concludes; a push
superseded while still in flight is `skipped`; each project ends on its newest commit; the arq
queue drains."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from arq.constants import default_queue_name, in_progress_key_prefix

from devpush.platform import Platform
from tests.chaos.checks import TrafficLoop, wait_until_sound, with_platform
from tests.e2e.apps import Api, commit, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.chaos
PROJECTS = 10
ROUNDS = 5


def test_fifty_pushes_to_ten_projects(
    chaos: RunningPlatform, api: Api, canary: list[str], tmp_path: Path
) -> None:
    repos = [make_repo(tmp_path / f"repo{i}", body=f"push 0 {i}") for i in range(PROJECTS)]
    projects = [api.project(repo, f"storm-{i}") for i, repo in enumerate(repos)]
    pushed: list[list[str]] = [[] for _ in range(PROJECTS)]
    with TrafficLoop(chaos.proxy_url, canary) as loop:
        started = time.monotonic()

        def push(round_: int, i: int) -> str:
            if round_:
                commit(repos[i], f"push {round_} {i}")
            return str(api.deploy(projects[i]["id"])["id"])

        with ThreadPoolExecutor(PROJECTS) as pool:
            for round_ in range(ROUNDS):  # a round pushes to every project at once
                for i, deployment_id in enumerate(
                    pool.map(push, [round_] * PROJECTS, range(PROJECTS))
                ):
                    pushed[i].append(deployment_id)
        print(f"{PROJECTS * ROUNDS} pushes in {time.monotonic() - started:.1f}s")
        wait_until_sound(chaos, loops=[loop])

    for i, ids in enumerate(pushed):
        results = [api.get(f"/api/v1/deployments/{d}") for d in ids]
        last = results[-1]
        assert last["conclusion"] == "succeeded", last
        assert api.body(last["urls"]["environment"]) == f"push {ROUNDS - 1} {i}"
        later_ids = {d[:7] for d in ids}
        for result in results[:-1]:
            assert result["conclusion"] in ("skipped", "succeeded"), result
            if result["conclusion"] == "skipped":
                superseder = result["error"].removeprefix("superseded by deployment ")
                assert superseder in later_ids and superseder != result["id"][:7], result
        print(f"storm-{i}:", [r["conclusion"] for r in results])
    assert_queue_drains(chaos)


def assert_queue_drains(platform: RunningPlatform, timeout: float = 120) -> None:
    async def drained(p: Platform) -> None:
        deadline = time.monotonic() + timeout
        while True:
            queued = await p.redis.zrange(default_queue_name, 0, -1)
            running = [k async for k in p.redis.scan_iter(match=in_progress_key_prefix + "*")]
            if not queued and not running:
                return
            assert time.monotonic() < deadline, f"queue not drained: {queued} {running}"
            await asyncio.sleep(0.5)

    with_platform(platform, drained)
