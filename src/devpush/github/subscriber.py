"""GitHub's subscriber: deployments that a push or pull request started are reported back
(a commit status, and the pull request's comment) when they start and when they conclude.
The report job reads the deployment's state when it runs, so late or repeated reports still
end right (github/reporting.py)."""

from __future__ import annotations

from devpush.outbox.models import DomainEvent
from devpush.platform import Platform

TRIGGERS = ("github_push", "github_pr")
REPORTED = {
    "deployment.building": "prepare",
    "deployment.live": "completed",
    "deployment.failed": "completed",
    "deployment.canceled": "completed",
}


async def report(p: Platform, event: DomainEvent) -> None:
    status = REPORTED.get(event.type)
    if status is None or event.deployment_id is None or event.data.get("trigger") not in TRIGGERS:
        return
    from devpush.queue import enqueue_github_report

    await enqueue_github_report(p.redis, event.deployment_id, status)
