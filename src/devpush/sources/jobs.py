"""Source jobs (run by the arq worker): taking down the preview of a branch deleted through
the platform's push remote. They are enqueued through devpush.queue."""

from __future__ import annotations

from typing import Any

from arq import func
from arq.worker import Function

from devpush.platform import Platform
from devpush.settings import Settings


async def retire_branch(ctx: dict[str, Any], project_id: str, branch: str) -> None:
    from devpush.sources.branches import retire

    platform: Platform = ctx["platform"]
    await retire(platform, project_id=project_id, branch=branch)


def functions(settings: Settings) -> list[Function]:
    return [func(retire_branch, timeout=settings.job_timeout, keep_result=0, max_tries=3)]
