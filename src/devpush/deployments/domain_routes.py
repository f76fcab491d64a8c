"""Domain routes: list, add, verify, remove. Every change rewrites the project's routes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import PlatformDep, SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.deployments.routing import sync_project
from devpush.deployments.service import environment_aliases
from devpush.deployments.traefik_wait import wait_route_live
from devpush.domains import service
from devpush.domains.models import Domain
from devpush.domains.schemas import DomainCreate, DomainRead
from devpush.errors import Invalid
from devpush.platform import Platform
from devpush.projects.access import load_project
from devpush.projects.models import Environment, Project
from devpush.proxy import traefik
from devpush.teams.access import Action

router = APIRouter(tags=["domains"])


def _read(domain: Domain) -> DomainRead:
    return DomainRead(
        id=domain.id,
        hostname=domain.hostname,
        environment_id=domain.environment_id,
        kind=domain.kind,
        redirect_to=domain.redirect_to,
        status=domain.status,
        verification_record=service.challenge_name(domain),
        verification_value=domain.verification_token,
        verified_at=domain.verified_at,
        certificate=domain.certificate,
        created_at=domain.created_at,
    )


@router.get("/projects/{project_id}/domains", response_model=list[DomainRead])
async def list_domains(
    project_id: str, session: SessionDep, principal: PrincipalDep
) -> list[DomainRead]:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    return [
        _read(d) for d in await service.list_for_project(session=session, project_id=project.id)
    ]


async def _serve(
    platform: Platform, session: AsyncSession, project: Project, domain: Domain
) -> None:
    """Rewrite the project's routes; when the domain is live, wait until Traefik serves it."""
    await sync_project(session=session, settings=platform.settings, project_id=project.id)
    if domain.status != "verified":
        return
    if domain.kind == "redirect":
        name = traefik.redirect_router_name(project.slug, domain.hostname)
    else:
        aliases = await environment_aliases(session=session, environment_id=domain.environment_id)
        current = next((a.deployment_id for a in aliases if a.deployment_id), None)
        if current is None:
            return
        name = traefik.router_name(project.slug, current)
    await wait_route_live(platform, name, domain.hostname)


@router.post("/projects/{project_id}/domains", response_model=DomainRead, status_code=201)
async def add_domain(
    project_id: str,
    body: DomainCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DomainRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    environment = await session.scalar(
        select(Environment).where(
            Environment.project_id == project.id, Environment.slug == body.environment
        )
    )
    if environment is None:
        raise Invalid(f"this project has no environment named {body.environment!r}")
    domain = await service.add(
        session=session,
        settings=platform.settings,
        project_id=project.id,
        environment_id=environment.id,
        hostname=body.hostname,
        kind=body.kind,
        redirect_to=body.redirect_to,
    )
    await record(
        session=session,
        principal=principal,
        action="domain.add",
        resource_type="domain",
        resource_id=domain.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"hostname": domain.hostname},
    )
    await _serve(platform, session, project, domain)
    return _read(domain)


@router.post("/projects/{project_id}/domains/{domain_id}/verify", response_model=DomainRead)
async def verify_domain(
    project_id: str,
    domain_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DomainRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    domain = await service.get(session=session, project_id=project.id, domain_id=domain_id)
    await service.verify(session=session, settings=platform.settings, domain=domain)
    await _serve(platform, session, project, domain)
    return _read(domain)


@router.delete("/projects/{project_id}/domains/{domain_id}", status_code=204)
async def remove_domain(
    project_id: str,
    domain_id: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> Response:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    domain = await service.get(session=session, project_id=project.id, domain_id=domain_id)
    await service.remove(session=session, domain=domain)
    await record(
        session=session,
        principal=principal,
        action="domain.remove",
        resource_type="domain",
        resource_id=domain_id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"hostname": domain.hostname},
    )
    await sync_project(session=session, settings=platform.settings, project_id=project.id)
    return Response(status_code=204)
