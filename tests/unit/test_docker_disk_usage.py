"""The engine's disk usage, read while another project's volume is being removed: Podman then
fails `system/df` with an lstat error, and the count is taken again."""

from __future__ import annotations

from typing import Any

import pytest
from aiodocker.exceptions import DockerError

from devpush.runtime import docker_volumes

VANISHED = (
    "lstat /var/lib/containers/storage/volumes/devpush-trees-p1/_data: no such file or directory"
)


class Engine:
    def __init__(self, *failures: DockerError) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def _query_json(self, path: str) -> dict[str, Any]:
        assert path == "system/df"
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"Volumes": [{"Name": "devpush-vol-p1-envprod-data", "UsageData": {"Size": 42}}]}


async def test_a_volume_removed_while_counting_is_counted_again() -> None:
    engine = Engine(DockerError(500, {"message": VANISHED}))
    [usage] = await docker_volumes.usage(engine, "p1")  # type: ignore[arg-type]
    assert (usage.environment_id, usage.name, usage.used_bytes) == ("envprod", "data", 42)
    assert engine.calls == 2


async def test_other_engine_errors_are_not_retried() -> None:
    engine = Engine(DockerError(500, {"message": "database is locked"}))
    with pytest.raises(DockerError):
        await docker_volumes.usage(engine, "p1")  # type: ignore[arg-type]
    assert engine.calls == 1


async def test_a_count_that_keeps_failing_fails() -> None:
    engine = Engine(*[DockerError(500, {"message": VANISHED})] * 3)
    with pytest.raises(DockerError):
        await docker_volumes.usage(engine, "p1")  # type: ignore[arg-type]
    assert engine.calls == 3
