"""The GitHub jobs (run by the arq worker): acting on a stored webhook delivery, and reporting
a deployment's state back to GitHub. They are enqueued through devpush.queue."""

from __future__ import annotations

from typing import Any

from arq import func
from arq.worker import Function

from devpush.platform import Platform
from devpush.settings import Settings


def _platform(ctx: dict[str, Any]) -> Platform:
    platform: Platform = ctx["platform"]
    return platform


async def github_webhook(ctx: dict[str, Any], delivery_id: str) -> None:
    from devpush.github.webhooks import process

    await process(_platform(ctx), delivery_id)


async def github_report(ctx: dict[str, Any], deployment_id: str) -> None:
    from devpush.github.reporting import report

    await report(_platform(ctx), deployment_id)


def functions(settings: Settings) -> list[Function]:
    return [
        func(github_webhook, timeout=settings.job_timeout, keep_result=0, max_tries=3),
        func(github_report, timeout=120, keep_result=0, max_tries=5),
    ]
