"""The log store is chosen once, when the platform is built, and everyone uses that one
(issue #18, item 11): no module keeps a store of its own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

import devpush
from devpush.db import session_scope
from devpush.deployments import crashes, failures, flows
from devpush.logs.lines import StoredLine
from devpush.logs.store import LogPage, PostgresLogStore
from devpush.platform import Platform
from tests.factories.auth import Account
from tests.integration.logs.helpers import MakeDeployment, ProjectRefs

SRC = Path(devpush.__file__).parent


class RecordingStore(PostgresLogStore):
    """The PostgreSQL store, noting which of its methods were called."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def append(self, **kwargs: Any) -> list[StoredLine]:
        self.calls.append("append")
        return await super().append(**kwargs)

    async def tail(self, **kwargs: Any) -> list[StoredLine]:
        self.calls.append("tail")
        return await super().tail(**kwargs)

    async def query(self, **kwargs: Any) -> LogPage:
        self.calls.append("query")
        return await super().query(**kwargs)


def test_only_the_store_module_makes_a_log_store() -> None:
    makers = [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "logs" / "store.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bPostgresLogStore\(", line)
    ]
    assert makers == []


async def test_the_platform_log_store_is_the_one_used(
    platform: Platform,
    client: httpx.AsyncClient,
    alice: Account,
    project: ProjectRefs,
    make_deployment: MakeDeployment,
) -> None:
    assert isinstance(platform.log_store, PostgresLogStore)
    recording = RecordingStore()
    platform.log_store = recording
    deployment_id = await make_deployment()

    await flows.system_log(platform, deployment_id, "error: the build broke")
    assert await failures.failure_cause(platform, deployment_id) is None  # a system line only
    async with session_scope(platform.sessions) as session:
        await crashes.last_lines(session, platform.settings, deployment_id, platform.log_store)
    r = await client.get(f"/api/v1/projects/{project.id}/logs", headers=alice.headers)
    assert r.status_code == 200, r.text
    assert [i["message"] for i in r.json()["items"]] == ["error: the build broke"]
    assert recording.calls == ["append", "tail", "tail", "query"]
