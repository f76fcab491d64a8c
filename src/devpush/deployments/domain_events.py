"""A deployment's state changes as domain events, written in the transaction that makes them.

One hook on every flush (`after_flush`) turns the changes of Deployment rows into events, so
no code path that creates, concludes or restarts a deployment can forget to: a new row is
`deployment.created`; its start `building`; its conclusion `live`, `failed` or `canceled`
(superseded ones too, with their conclusion `skipped` in the data); an app that exited too
often `crashed`; other moves (deploying, finalizing, restarting, serving again) the internal
`deployment.status` that the live views show. Alias moves (rollback, promote) are emitted by
the flow that confirms them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session

from devpush.deployments.models import Conclusion, Deployment, InstanceHealth
from devpush.outbox.emit import emit_rows, row
from devpush.outbox.names import STATUS
from devpush.projects.models import Project

CONCLUDED = {
    Conclusion.succeeded: "deployment.live",
    Conclusion.failed: "deployment.failed",
    Conclusion.canceled: "deployment.canceled",
    Conclusion.skipped: "deployment.canceled",
}


def status_payload(deployment: Deployment) -> dict[str, Any]:
    """What the live views and the events carry about a deployment's state."""
    return {
        "id": deployment.id,
        "project_id": deployment.project_id,
        "environment_id": deployment.environment_id,
        "status": deployment.status.value,
        "conclusion": deployment.conclusion.value if deployment.conclusion else None,
        "error": deployment.error,
        "branch": deployment.branch,
        "commit_sha": deployment.commit_sha,
        "trigger": deployment.trigger,
        "pr_number": deployment.pr_number,
        "instance_health": deployment.instance_health.value if deployment.instance_health else None,
        "exit_code": deployment.exit_code,
    }


def _changed(deployment: Deployment, attribute: str) -> bool:
    return bool(inspect(deployment).attrs[attribute].history.has_changes())


def event_type(deployment: Deployment, *, new: bool) -> str | None:
    """The event a flushed change of `deployment` is, if any."""
    if new:
        return "deployment.created"
    if _changed(deployment, "conclusion") and deployment.conclusion is not None:
        return CONCLUDED[deployment.conclusion]
    if _changed(deployment, "instance_health"):
        crashed = deployment.instance_health == InstanceHealth.crashed
        return "deployment.crashed" if crashed else STATUS
    if _changed(deployment, "prepare_started_at") and deployment.prepare_started_at is not None:
        return "deployment.building"
    if _changed(deployment, "status"):
        return STATUS
    return None


@event.listens_for(Session, "after_flush")
def _record(session: Session, _context: Any) -> None:
    changed = [
        (d, d in session.new) for d in (*session.new, *session.dirty) if isinstance(d, Deployment)
    ]
    found = [(d, kind) for d, new in changed if (kind := event_type(d, new=new))]
    if not found:
        return
    connection = session.connection()
    project_ids = {d.project_id for d, _ in found}
    teams = dict(
        connection.execute(
            select(Project.id, Project.team_id).where(Project.id.in_(project_ids))
        ).all()
    )
    emit_rows(
        connection,
        [
            row(
                kind,
                team_id=teams.get(d.project_id),
                project_id=d.project_id,
                deployment_id=d.id,
                data=status_payload(d),
            )
            for d, kind in found
        ],
    )
