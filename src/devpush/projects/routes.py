"""Project routes: create under a team, list, show, update, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from devpush.api.deps import PlatformDep, SessionDep, client_ip
from devpush.api.schemas import DeletionAccepted
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.projects import env, service
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.projects.repository import check_local_url
from devpush.projects.schemas import (
    EnvironmentRead,
    ProjectCreate,
    ProjectRead,
    ProjectUpdate,
)
from devpush.queue import enqueue_delete_project
from devpush.settings import Settings
from devpush.teams.access import Action, load_team

router = APIRouter(tags=["projects"])


async def project_read(session: SessionDep, settings: Settings, project: Project) -> ProjectRead:
    envs = await service.list_environments(session=session, project_id=project.id)
    return ProjectRead(
        id=project.id,
        team_id=project.team_id,
        name=project.name,
        slug=project.slug,
        repo_url=project.repo_url,
        production_branch=project.production_branch,
        config=dict(project.config),
        env_var_keys=await env.env_var_keys(session=session, project_id=project.id),
        environments=[
            EnvironmentRead(
                id=e.id,
                name=e.name,
                slug=e.slug,
                branch_pattern=e.branch_pattern,
                is_production=e.is_production,
                replicas=e.replicas,
                url=settings.deploy_url(
                    project.slug if e.is_production else f"{project.slug}-env-{e.slug}"
                ),
            )
            for e in envs
        ],
        preview_deployments=project.preview_deployments,
        status=project.status,
        url=settings.deploy_url(project.slug),
        created_at=project.created_at,
    )


@router.post("/teams/{team}/projects", response_model=ProjectRead, status_code=201)
async def create_project(
    team: str,
    body: ProjectCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ProjectRead:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.manage)
    if body.repo_url:
        check_local_url(platform.settings, body.repo_url, admin=principal.is_admin)
    if body.runtime:
        platform.runtimes.check(body.runtime)
    project = await service.create_project(session=session, team_id=row.id, body=body)
    await record(
        session=session,
        principal=principal,
        action="project.create",
        resource_type="project",
        resource_id=project.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"name": project.name},
    )
    return await project_read(session, platform.settings, project)


@router.get("/teams/{team}/projects", response_model=list[ProjectRead])
async def list_projects(
    team: str, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> list[ProjectRead]:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.read)
    return [
        await project_read(session, platform.settings, p)
        for p in await service.list_projects(session=session, team_id=row.id)
    ]


@router.get("/projects/{project_id}", response_model=ProjectRead)
async def get_project(
    project_id: str, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> ProjectRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    return await project_read(session, platform.settings, project)


@router.patch("/projects/{project_id}", response_model=ProjectRead)
async def update_project(
    project_id: str,
    body: ProjectUpdate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ProjectRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    if body.repo_url:
        check_local_url(platform.settings, body.repo_url, admin=principal.is_admin)
    if body.runtime:
        platform.runtimes.check(body.runtime)
    await service.update_project(session=session, project=project, body=body)
    await record(
        session=session,
        principal=principal,
        action="project.update",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"fields": sorted(body.model_fields_set)},
    )
    return await project_read(session, platform.settings, project)


@router.delete("/projects/{project_id}", status_code=202, response_model=DeletionAccepted)
async def delete_project(
    project_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    delete_volumes: Annotated[
        bool,
        Query(description="Also delete its volumes' data (required when any holds data)"),
    ] = False,
) -> DeletionAccepted:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    await service.check_deletion(
        p=platform, session=session, project=project, delete_volumes=delete_volumes
    )
    project.status = "deleting"
    await record(
        session=session,
        principal=principal,
        action="project.delete",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    await session.commit()
    await enqueue_delete_project(platform.redis, project.id)
    return DeletionAccepted(id=project.id)


async def _set_paused(
    project_id: str,
    paused: bool,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ProjectRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    service.set_paused(project=project, paused=paused)
    await record(
        session=session,
        principal=principal,
        action="project.pause" if paused else "project.resume",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    return await project_read(session, platform.settings, project)


@router.post("/projects/{project_id}/pause", response_model=ProjectRead)
async def pause_project(
    project_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ProjectRead:
    """Keep serving what is live, but refuse new deployments."""
    return await _set_paused(project_id, True, request, session, principal, platform)


@router.post("/projects/{project_id}/resume", response_model=ProjectRead)
async def resume_project(
    project_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ProjectRead:
    return await _set_paused(project_id, False, request, session, principal, platform)
