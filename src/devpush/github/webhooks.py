"""GitHub webhooks: checking a delivery (signature, headers, shape) fast enough to answer
within a second, and the `github_webhook` job that acts on it afterwards.

The route stores each delivery once, keyed by X-GitHub-Delivery (a redelivery is a no-op),
with the validated event; the job claims the row and runs the handler for its event:

  ping                          nothing (GitHub's hello)
  installation                  created / deleted / suspend / unsuspend: keep the row in step;
                                projects whose installation goes away are marked disconnected
  installation_repositories     added / removed: reconnect or mark the projects of those repos
  repository                    renamed / transferred: projects follow; deleted: marked
  push                          a branch deploys (environments, or previews); a deleted branch
                                takes its preview down; tags deploy nothing
  pull_request                  opened / synchronize / reopened: preview `{project}-pr-{n}`
                                (same repository, or forks the project allows); closed: removed
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import new_id, utcnow
from devpush.errors import DevpushError, Invalid, NotConfigured, Unauthorized
from devpush.github import service
from devpush.github.models import GithubDelivery, GithubPullRequest
from devpush.github.schemas import (
    EVENTS,
    InstallationEvent,
    InstallationRepositoriesEvent,
    PullRequestEvent,
    PushEvent,
    RepositoryEvent,
)
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects.models import Project
from devpush.projects.repository import github_clone_url
from devpush.settings import Settings
from devpush.sources import branches

log = logging.getLogger("devpush.github")
MAX_BODY = 5 * 1024 * 1024
DELIVERY = re.compile(r"^[A-Za-z0-9-]{1,64}$")
EVENT = re.compile(r"^[a-z_]{1,64}$")
KEEP_DELIVERIES_DAYS = 30
PR_DEPLOY_ACTIONS = ("opened", "synchronize", "reopened")


# ---- checking a delivery (the route) ----------------------------------------------------
def verify_signature(settings: Settings, body: bytes, header: str | None) -> None:
    """X-Hub-Signature-256 must be the HMAC-SHA256 of the raw body under the webhook secret."""
    if not settings.github_webhook_secret:
        raise NotConfigured("GitHub webhooks are not configured: set DEVPUSH_GITHUB_WEBHOOK_SECRET")
    expected = (
        "sha256="
        + hmac.new(settings.github_webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    )
    if not header or not hmac.compare_digest(expected.encode(), header.strip().encode()):
        raise Unauthorized("the X-Hub-Signature-256 signature is missing or does not match")


def parse(event: str | None, delivery: str | None, body: bytes) -> BaseModel | None:
    """The validated event, or None for an event devpush does not use. Raises Invalid."""
    if not event or not EVENT.match(event):
        raise Invalid("the X-GitHub-Event header is missing or malformed")
    if not delivery or not DELIVERY.match(delivery):
        raise Invalid("the X-GitHub-Delivery header is missing or malformed")
    model = EVENTS.get(event)
    if model is None:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: RecursionError
        raise Invalid("the body is not JSON (or nests too deeply)") from None
    if not isinstance(data, dict):
        raise Invalid("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:5]
        ]
        message = f"the {event} payload is not one devpush understands: " + "; ".join(problems)
        raise Invalid(message) from None


async def store(*, session: AsyncSession, delivery: str, event: str, parsed: BaseModel) -> bool:
    """Record a delivery once; False when it was seen before (a redelivery)."""
    payload = parsed.model_dump(mode="json")
    result = await session.execute(
        insert(GithubDelivery)
        .values(
            id=delivery,
            event=event,
            action=payload.get("action"),
            payload=payload,
            status="received",
            received_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(GithubDelivery.id)
    )
    return result.scalar() is not None


# ---- acting on a delivery (the job) ------------------------------------------------------
Handler = Callable[[Platform, AsyncSession, Any], Awaitable[None]]


async def process(p: Platform, delivery_id: str) -> None:
    """Run the delivery's handler once. The row is marked done in the transaction of the
    handler's first commit, so a rerun (arq may retry) does not deploy twice."""
    async with p.sessions() as session:
        row = await session.get(GithubDelivery, delivery_id, with_for_update=True)
        if row is None or row.status != "received":
            return
        event = EVENTS[row.event].model_validate(row.payload)
        row.status, row.processed_at = "done", utcnow()
        try:
            await HANDLERS[row.event](p, session, event)
            await session.commit()
        except DevpushError as exc:
            await session.rollback()
            log.warning("webhook failed", extra={"delivery": delivery_id, "error": exc.message})
            await session.execute(
                update(GithubDelivery)
                .where(GithubDelivery.id == delivery_id)
                .values(status="failed", error=exc.message[:2000], processed_at=utcnow())
            )
            await session.commit()
    await _prune(p)


async def _prune(p: Platform) -> None:
    async with p.sessions() as session:
        await session.execute(
            delete(GithubDelivery).where(
                GithubDelivery.received_at < utcnow() - timedelta(days=KEEP_DELIVERIES_DAYS)
            )
        )
        await session.commit()


async def _projects(
    session: AsyncSession, repo_id: int, *, connected_only: bool = True
) -> list[Project]:
    stmt = select(Project).where(Project.github_repo_id == repo_id, Project.status != "deleting")
    if connected_only:
        stmt = stmt.where(
            Project.repo_status.is_(None), Project.github_installation_id.is_not(None)
        )
    return list(await session.scalars(stmt.order_by(Project.created_at)))


async def on_ping(p: Platform, session: AsyncSession, event: Any) -> None:
    log.info("GitHub says hello")


async def on_push(p: Platform, session: AsyncSession, event: PushEvent) -> None:
    branch = event.branch
    if branch is None:
        return  # tags and other refs deploy nothing
    for project in await _projects(session, event.repository.id):
        if event.branch_deleted:
            await branches.retire(p, project_id=project.id, branch=branch)
            continue
        await branches.deploy_push(
            session=session,
            p=p,
            project=project,
            branch=branch,
            commit_sha=event.after,
            trigger="github_push",
        )


def fork_allowed(project: Project, event: PullRequestEvent) -> bool:
    """Pull requests from the same repository always; from forks only as the project allows."""
    head = event.pull_request.head.repo
    if head is None:
        return False
    if head.id == event.pull_request.base.repo.id:
        return True
    allowed = {a.lower() for a in project.allowed_forks or []}
    owner = head.full_name.split("/", 1)[0].lower()
    return "*" in allowed or owner in allowed or head.full_name.lower() in allowed


async def on_pull_request(p: Platform, session: AsyncSession, event: PullRequestEvent) -> None:
    pr = event.pull_request
    if event.action not in (*PR_DEPLOY_ACTIONS, "closed"):
        return
    for project in await _projects(session, event.repository.id):
        if event.action == "closed":
            await _remember_pr(session, project.id, event, state="closed")
            await branches.retire(p, project_id=project.id, pr_number=pr.number)
            continue
        if not project.preview_deployments or not fork_allowed(project, event):
            log.info("pull request not previewed", extra={"project": project.slug, "pr": pr.number})
            continue
        if await _fork_branch_names_an_environment(session, project, event):
            # deployments.create would hand a fork's code that environment's variables
            log.warning("fork PR skipped", extra={"project": project.slug, "pr": pr.number})
            continue
        await _remember_pr(session, project.id, event, state="open")
        await branches.deploy_push(
            session=session,
            p=p,
            project=project,
            branch=pr.head.ref,
            commit_sha=pr.head.sha,
            trigger="github_pr",
            pr_number=pr.number,
        )


async def _fork_branch_names_an_environment(
    session: AsyncSession, project: Project, event: PullRequestEvent
) -> bool:
    head = event.pull_request.head
    if head.repo is not None and head.repo.id == event.pull_request.base.repo.id:
        return False
    environment = await projects.match_environment(
        session=session, project_id=project.id, branch=head.ref
    )
    return environment is not None


async def _remember_pr(
    session: AsyncSession, project_id: str, event: PullRequestEvent, *, state: str
) -> None:
    pr = event.pull_request
    values = {"head_ref": pr.head.ref, "head_sha": pr.head.sha, "state": state}
    await session.execute(
        insert(GithubPullRequest)
        .values(id=new_id(), project_id=project_id, number=pr.number, **values)
        .on_conflict_do_update(index_elements=["project_id", "number"], set_=values)
    )


async def on_installation(p: Platform, session: AsyncSession, event: InstallationEvent) -> None:
    installation = event.installation
    if event.action == "deleted":
        await service.delete_installation(session=session, installation_id=installation.id)
        await _mark(session, Project.github_installation_id == installation.id, "disconnected")
    elif event.action in ("suspend", "unsuspend"):
        await service.upsert_installation(session=session, installation=installation)
        await service.set_suspended(
            session=session, installation_id=installation.id, suspended=event.action == "suspend"
        )
    elif event.action in ("created", "new_permissions_accepted"):
        await service.upsert_installation(session=session, installation=installation)
        repo_ids = [r.id for r in event.repositories or []]
        await _reconnect(session, repo_ids, installation.id)


async def on_installation_repositories(
    p: Platform, session: AsyncSession, event: InstallationRepositoriesEvent
) -> None:
    installation = event.installation
    await service.upsert_installation(session=session, installation=installation)
    await _reconnect(session, [r.id for r in event.repositories_added], installation.id)
    removed = [r.id for r in event.repositories_removed]
    if removed:
        await _mark(
            session,
            Project.github_repo_id.in_(removed)
            & (Project.github_installation_id == installation.id),
            "disconnected",
        )


async def on_repository(p: Platform, session: AsyncSession, event: RepositoryEvent) -> None:
    repo = event.repository
    if event.action == "deleted":
        await _mark(session, Project.github_repo_id == repo.id, "deleted")
        return
    if event.action not in ("renamed", "transferred"):
        return
    for project in await _projects(session, repo.id, connected_only=False):
        project.github_repo_full_name = repo.full_name
        project.repo_url = github_clone_url(p.settings, repo.full_name)
        if event.installation is not None:
            project.github_installation_id = event.installation.id


async def _mark(session: AsyncSession, condition: Any, status: str) -> None:
    await session.execute(update(Project).where(condition).values(repo_status=status))


async def _reconnect(session: AsyncSession, repo_ids: list[int], installation_id: int) -> None:
    """Disconnected projects of these repositories fetch through this installation again."""
    if not repo_ids:
        return
    await session.execute(
        update(Project)
        .where(Project.github_repo_id.in_(repo_ids), Project.repo_status == "disconnected")
        .values(github_installation_id=installation_id, repo_status=None)
    )


HANDLERS: dict[str, Handler] = {
    "ping": on_ping,
    "push": on_push,
    "pull_request": on_pull_request,
    "installation": on_installation,
    "installation_repositories": on_installation_repositories,
    "repository": on_repository,
}
