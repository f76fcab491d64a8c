"""`git push` follows its deployment's log in the push remote's hook, up to the conclusion:
lines stored while it concluded are printed too (real PostgreSQL and Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Deployment
from devpush.git_remote import hook
from devpush.platform import Platform
from tests.integration.logs.helpers import MakeDeployment, append


async def test_lines_stored_as_the_deployment_concludes_are_printed(
    platform: Platform,
    make_deployment: MakeDeployment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    deployment_id = await make_deployment()
    await append(platform, deployment_id, ["Fetching main"], phase="system")
    real_get = deployments.get
    calls = 0

    async def get_after_the_worker_moved_on(**kwargs: Any) -> Deployment:
        """While the hook printed its first batch, the shipper stored the build's line and
        the deployment concluded."""
        nonlocal calls
        calls += 1
        if calls == 1:
            await append(platform, deployment_id, ["building the app"], phase="build")
            async with session_scope(platform.sessions) as session:
                row = await real_get(session=session, deployment_id=deployment_id, lock=True)
                deployments.conclude(row, Conclusion.succeeded)
        return await real_get(**kwargs)

    monkeypatch.setattr(hook.deployments, "get", get_after_the_worker_moved_on)
    await hook.follow_deployment(platform, deployment_id, "http://shop.example")
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "[system] Fetching main",
        "[build] building the app",
        "Deployment succeeded: http://shop.example",
    ]
