"""The monitor's main loop refreshes its heartbeat, which `devpush monitor --check` reads: a
monitor whose loop is stuck goes stale (tests/unit/test_monitor_liveness.py)."""

from __future__ import annotations

import asyncio

from devpush.platform import Platform
from devpush.workers import liveness
from devpush.workers.monitor import Monitor


async def test_the_running_loop_beats(platform: Platform) -> None:
    path = liveness.heartbeat_path(platform.settings)
    path.unlink(missing_ok=True)  # an earlier run with the same temp dir left one
    stop = asyncio.Event()
    running = asyncio.create_task(Monitor(platform).run(stop))
    try:
        async with asyncio.timeout(10):
            while not path.exists():
                await asyncio.sleep(0.05)
        age = liveness.age(path)
        assert age is not None and age < liveness.STALE_AFTER
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
