"""Git source routes: a project's source settings and deploy hook (under /api/v1), and the
deploy hook itself (`POST /api/hooks/deploy/{project_id}/{token}`, outside /api/v1: its secret
URL is its credential)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from devpush.api.deps import PlatformDep, SecretAnswer, SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.deployments import actions
from devpush.deployments import service as deployments
from devpush.errors import Invalid
from devpush.projects.access import load_project
from devpush.projects.models import Environment
from devpush.sources import branches, service
from devpush.sources.schemas import DeployHookAnswer, DeployHookCreated, GitSourceRead
from devpush.teams.access import Action
from devpush.teams.models import Team

router = APIRouter(tags=["git"])
hooks_router = APIRouter(tags=["git"])


@router.get("/projects/{project_id}/git", response_model=GitSourceRead)
async def get_git_source(
    project_id: str, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> GitSourceRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    team = await session.get(Team, project.team_id)
    assert team is not None
    return service.read(platform.settings, project, team.slug)


@router.post(
    "/projects/{project_id}/deploy-hook",
    response_model=DeployHookCreated,
    status_code=201,
    dependencies=[SecretAnswer],
)
async def create_deploy_hook(
    project_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DeployHookCreated:
    """Create (or replace) the deploy hook; its URL is shown this once."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    token = service.create_deploy_hook(project=project)
    await record(
        session=session,
        principal=principal,
        action="project.deploy_hook.create",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    return DeployHookCreated(
        url=f"{platform.settings.app_url}/api/hooks/deploy/{project.id}/{token}"
    )


@router.delete("/projects/{project_id}/deploy-hook", status_code=204)
async def delete_deploy_hook(
    project_id: str, request: Request, session: SessionDep, principal: PrincipalDep
) -> Response:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    service.delete_deploy_hook(project=project)
    await record(
        session=session,
        principal=principal,
        action="project.deploy_hook.delete",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    return Response(status_code=204)


@hooks_router.post(
    "/api/hooks/deploy/{project_id}/{token}", response_model=DeployHookAnswer, status_code=201
)
async def deploy_hook(
    project_id: str,
    token: str,
    request: Request,
    session: SessionDep,
    platform: PlatformDep,
    branch: Annotated[str | None, Query(max_length=255)] = None,
) -> DeployHookAnswer:
    """Deploy `branch` (default: the production branch) at its newest commit."""
    project = await service.project_for_hook(session=session, project_id=project_id, token=token)
    branch = branch or project.production_branch
    if not branches.valid_branch(branch):
        raise Invalid(f"{branch[:80]!r} is not a valid branch name")
    deployment = await actions.create_and_enqueue(
        session=session,
        p=platform,
        principal=None,
        project=project,
        branch=branch,
        commit_sha=None,
        trigger="deploy_hook",
        ip=client_ip(request),
    )
    environment = (
        await session.get(Environment, deployment.environment_id)
        if deployment.environment_id
        else None
    )
    urls = deployments.urls(
        platform.settings, deployments.alias_specs(project, deployment, environment)
    )
    return DeployHookAnswer(
        id=deployment.id,
        branch=deployment.branch,
        status=deployment.status.value,
        url=urls["deployment"],
    )
