"""Deployment routes: create, list, show, cancel, rollback, promote, redeploy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import PlatformDep, SessionDep, client_ip
from devpush.api.responses import json_response
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.auth.service import Principal
from devpush.db import reads_only
from devpush.deployments import actions, listing, plans, service
from devpush.deployments.access import load_deployment
from devpush.deployments.models import Deployment
from devpush.deployments.routing import routed_upstreams
from devpush.deployments.schemas import (
    DeploymentCreate,
    DeploymentPage,
    DeploymentRead,
    PlanRead,
)
from devpush.platform import Platform
from devpush.projects.access import load_project, project_ref
from devpush.projects.models import Environment, Project
from devpush.teams.access import Action

router = APIRouter(tags=["deployments"])


async def deployment_read(
    session: AsyncSession, p: Platform, d: Deployment, project: Project
) -> DeploymentRead:
    environment = await session.get(Environment, d.environment_id) if d.environment_id else None
    return read_with_environment(p, d, project, environment)


def read_with_environment(
    p: Platform, d: service.Listed, project: Project, environment: service.EnvironmentLike | None
) -> DeploymentRead:
    """The API view of a deployment whose environment the caller loaded."""
    return DeploymentRead(**read_fields(p, d, project, environment))


def read_fields(
    p: Platform,
    d: service.Listed,
    project: service.Slugged,
    environment: service.EnvironmentLike | None,
) -> dict[str, Any]:
    """DeploymentRead's fields as plain data. The list encodes these with orjson (no model
    per item to build, validate and dump again); tests/integration/test_deployment_list.py
    holds its items equal to the models."""
    specs = service.alias_specs(project, d, environment)
    return {
        "id": d.id,
        "project_id": d.project_id,
        "environment_id": d.environment_id,
        "branch": d.branch,
        "commit_sha": d.commit_sha,
        "commit_message": d.commit_message,
        "commit_author": d.commit_author,
        "trigger": d.trigger,
        "pr_number": d.pr_number,
        "status": d.status.value,
        "conclusion": d.conclusion.value if d.conclusion else None,
        "error": d.error,
        "instance_health": d.instance_health.value if d.instance_health else None,
        "exit_code": d.exit_code,
        "crash_log": d.crash_log,
        "replicas": len(routed_upstreams(d.upstream, d.replicas)),
        "runtime": d.runtime,
        "config": d.config,
        "urls": service.urls(p.settings, specs),
        "created_at": d.created_at,
        "prepare_started_at": d.prepare_started_at,
        "deploy_started_at": d.deploy_started_at,
        "ready_at": d.ready_at,
        "concluded_at": d.concluded_at,
        "timings": d.timings or {},
    }


@router.post("/projects/{project_id}/deployments", response_model=DeploymentRead, status_code=201)
async def create_deployment(
    project_id: str,
    body: DeploymentCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DeploymentRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.deploy
    )
    deployment = await actions.create_and_enqueue(
        session=session,
        p=platform,
        principal=principal,
        project=project,
        branch=body.branch or project.production_branch,
        commit_sha=body.commit_sha,
        trigger="api",
        ip=client_ip(request),
    )
    return await deployment_read(session, platform, deployment, project)


@router.get("/projects/{project_id}/deployments", response_model=DeploymentPage)
async def list_deployments(
    project_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    branch: Annotated[str | None, Query(max_length=255)] = None,
    environment_id: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    await reads_only(session)
    project = await project_ref(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    rows, next_cursor = await listing.list_with_environments(
        session=session,
        project_id=project.id,
        limit=limit,
        cursor=cursor,
        branch=branch,
        environment_id=environment_id,
        status=status,
    )
    items = [read_fields(platform, d, project, env) for d, env in rows]
    return json_response({"items": items, "next_cursor": next_cursor})


@router.get("/projects/{project_id}/plan", response_model=PlanRead)
async def get_plan(
    project_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
    branch: Annotated[
        str | None, Query(max_length=255, description="Default: the production branch")
    ] = None,
) -> PlanRead:
    """The build plan of the branch's latest commit, detected as a deployment would, without
    deploying. 422 with the reason when the tree can't be built."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    chosen = branch or project.production_branch
    plan, sha = await plans.plan_project(platform, project, chosen)
    return PlanRead(branch=chosen, commit_sha=sha, plan=plan.to_json(), lines=plan.lines())


@router.get("/deployments/{deployment_id}", response_model=DeploymentRead)
async def get_deployment(
    deployment_id: str, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> DeploymentRead:
    deployment, project = await load_deployment(
        session=session, principal=principal, deployment_id=deployment_id, action=Action.read
    )
    return await deployment_read(session, platform, deployment, project)


@router.post("/deployments/{deployment_id}/cancel", response_model=DeploymentRead)
async def cancel_deployment(
    deployment_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DeploymentRead:
    deployment, project = await load_deployment(
        session=session, principal=principal, deployment_id=deployment_id, action=Action.deploy
    )
    await record(
        session=session,
        principal=principal,
        action="deployment.cancel",
        resource_type="deployment",
        resource_id=deployment.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    await actions.cancel(platform, session, deployment)
    await session.refresh(deployment)
    return await deployment_read(session, platform, deployment, project)


SwitchFlow = Callable[[Platform, AsyncSession, Deployment, Project], Awaitable[Deployment]]


async def _switch(
    name: str,
    switch: SwitchFlow,
    deployment_id: str,
    request: Request,
    session: AsyncSession,
    principal: Principal,
    platform: Platform,
) -> DeploymentRead:
    """Rollback and promote: audit, point the aliases, answer with the deployment now served."""
    deployment, project = await load_deployment(
        session=session, principal=principal, deployment_id=deployment_id, action=Action.deploy
    )
    await record(
        session=session,
        principal=principal,
        action=f"deployment.{name}",
        resource_type="deployment",
        resource_id=deployment.id,
        team_id=project.team_id,
        ip=client_ip(request),
    )
    target = await switch(platform, session, deployment, project)
    return await deployment_read(session, platform, target, project)


@router.post("/deployments/{deployment_id}/rollback", response_model=DeploymentRead)
async def rollback_deployment(
    deployment_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DeploymentRead:
    """Serve the environment's previous deployment again (or this older one), instantly."""
    return await _switch(
        "rollback", actions.rollback, deployment_id, request, session, principal, platform
    )


@router.post("/deployments/{deployment_id}/promote", response_model=DeploymentRead)
async def promote_deployment(
    deployment_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DeploymentRead:
    """Serve this deployment (e.g. a preview branch) on production."""
    return await _switch(
        "promote", actions.promote, deployment_id, request, session, principal, platform
    )


@router.post(
    "/deployments/{deployment_id}/redeploy", response_model=DeploymentRead, status_code=201
)
async def redeploy(
    deployment_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DeploymentRead:
    """A new deployment of the same commit, with the project's current settings and env."""
    deployment, project = await load_deployment(
        session=session, principal=principal, deployment_id=deployment_id, action=Action.deploy
    )
    new = await actions.create_and_enqueue(
        session=session,
        p=platform,
        principal=principal,
        project=project,
        branch=deployment.branch,
        commit_sha=deployment.commit_sha,
        trigger="redeploy",
        ip=client_ip(request),
    )
    return await deployment_read(session, platform, new, project)
