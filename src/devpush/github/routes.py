"""GitHub routes: the webhook (`POST /api/github/webhook`) outside /api/v1; under /api/v1 the
repositories a team can connect, the install link, and connecting a project to a repository.
The App's setup callback (`GET /github/setup`) is a page: web/github_pages.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from devpush.api.deps import PlatformDep, SessionDep, client_ip
from devpush.api.errors import error_response
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.errors import DevpushError, NotConfigured
from devpush.github import service, webhooks
from devpush.github.schemas import ConnectRepository, InstallUrl, RepositoryRead
from devpush.projects.access import load_project
from devpush.queue import enqueue_github_webhook
from devpush.sources import service as sources
from devpush.sources.schemas import GitSourceRead
from devpush.teams.access import Action, authorize_team, load_team
from devpush.teams.models import Team
from devpush.teams.service import list_teams

router = APIRouter(tags=["github"])
webhook_router = APIRouter(include_in_schema=False)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (before parsing) once it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@webhook_router.post("/api/github/webhook")
async def github_webhook(request: Request, session: SessionDep, platform: PlatformDep) -> Response:
    """Check, record once, queue. The work happens in the `github_webhook` job."""
    try:
        body = await read_body(request, webhooks.MAX_BODY)
    except BodyTooLarge:
        limit = webhooks.MAX_BODY // (1024 * 1024)
        return error_response(413, "too_large", f"webhook bodies are limited to {limit} MiB")
    webhooks.verify_signature(platform.settings, body, request.headers.get("x-hub-signature-256"))
    event = request.headers.get("x-github-event")
    delivery = request.headers.get("x-github-delivery")
    parsed = webhooks.parse(event, delivery, body)
    if parsed is None or event is None or delivery is None:
        return JSONResponse({"status": "ignored", "delivery": delivery}, status_code=202)
    if not await webhooks.store(session=session, delivery=delivery, event=event, parsed=parsed):
        return JSONResponse({"status": "duplicate", "delivery": delivery}, status_code=200)
    await session.commit()
    await enqueue_github_webhook(platform.redis, delivery)
    return JSONResponse({"status": "queued", "delivery": delivery}, status_code=202)


# ---- installing the App -------------------------------------------------------------------
@router.get("/github/install-url", response_model=InstallUrl)
async def install_url(
    team: Annotated[str, Query(min_length=1, max_length=63)],
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> InstallUrl:
    """Where to install the App so that its installation is linked to this team."""
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.manage)
    settings = platform.settings
    if not settings.github_app_slug:
        raise NotConfigured("set DEVPUSH_GITHUB_APP_SLUG to link installations from devpush")
    state = service.install_state_signer(settings).dumps(
        {"team_id": row.id, "user_id": principal.user_id}
    )
    base = settings.github_url.rstrip("/")
    return InstallUrl(url=f"{base}/apps/{settings.github_app_slug}/installations/new?state={state}")


# ---- repositories and projects ------------------------------------------------------------
@router.get("/github/repositories", response_model=list[RepositoryRead])
async def list_repositories(
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    team: Annotated[str | None, Query(min_length=1, max_length=63)] = None,
) -> list[RepositoryRead]:
    """Repositories the App can see for `team` (default: every team of the caller)."""
    if team is not None:
        team_ids = [
            (
                await load_team(
                    session=session, principal=principal, team_ref=team, action=Action.read
                )
            ).id
        ]
    else:
        team_ids = []
        for row, _role in await list_teams(session=session, user_id=principal.user_id):
            try:
                await authorize_team(
                    session=session, principal=principal, team_id=row.id, action=Action.read
                )
            except DevpushError:
                continue
            team_ids.append(row.id)
    repos: list[RepositoryRead] = []
    for team_id in team_ids:
        repos.extend(await service.list_repositories(p=platform, team_id=team_id))
    return repos


@router.put("/projects/{project_id}/github", response_model=GitSourceRead)
async def connect_repository(
    project_id: str,
    body: ConnectRepository,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> GitSourceRead:
    """Deploy the project from a GitHub repository one of its team's installations can see."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    repository = await service.find_repository(
        p=platform, team_id=project.team_id, full_name=body.repository
    )
    service.connect_github(settings=platform.settings, project=project, repository=repository)
    await record(
        session=session,
        principal=principal,
        action="project.github.connect",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"repository": repository.full_name},
    )
    team = await session.get(Team, project.team_id)
    assert team is not None
    return sources.read(platform.settings, project, team.slug)


@router.delete("/projects/{project_id}/github", response_model=GitSourceRead)
async def disconnect_repository(
    project_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> GitSourceRead:
    """Stop deploying from GitHub: the project's source becomes its push remote."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    service.disconnect_github(project=project)
    await record(
        session=session,
        principal=principal,
        action="project.github.disconnect",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    team = await session.get(Team, project.team_id)
    assert team is not None
    return sources.read(platform.settings, project, team.slug)
