"""Derive a project's Traefik routes from the database and write them (idempotent)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.deployments.models import Alias, AliasType, Deployment
from devpush.domains.models import Domain
from devpush.projects.models import Project
from devpush.proxy import traefik
from devpush.settings import Settings


def routed_upstreams(first: str | None, replicas: list[dict[str, Any]] | None) -> list[str]:
    """Every routed upstream of a deployment: replica 0's, then the others' (replicas.py)."""
    extra = [str(value["upstream"]) for value in replicas or [] if value.get("upstream")]
    return ([first] if first else []) + extra


async def project_routes(
    *, session: AsyncSession, settings: Settings, project: Project
) -> traefik.ProjectRoutes:
    aliases = list(await session.scalars(select(Alias).where(Alias.project_id == project.id)))
    ids = {a.deployment_id for a in aliases if a.deployment_id}
    rows = await session.execute(
        select(
            Deployment.id,
            Deployment.upstream,
            Deployment.replicas,
            Deployment.config["health_path"].as_string().label("health_path"),
        ).where(Deployment.id.in_(ids))
    )
    upstreams: dict[str, list[str]] = {}
    health: dict[str, str] = {}
    for row in rows:
        upstreams[row.id] = routed_upstreams(row.upstream, row.replicas)
        health[row.id] = row.health_path or "/"
    hosts: dict[str, set[str]] = defaultdict(set)
    env_alias: dict[str, str] = {}
    for alias in aliases:
        if alias.deployment_id and upstreams.get(alias.deployment_id):
            hosts[alias.deployment_id].add(f"{alias.value}.{settings.deploy_domain}")
            if alias.type == AliasType.environment and alias.environment_id:
                env_alias[alias.environment_id] = alias.deployment_id
    redirects = []
    domains = await session.scalars(
        select(Domain).where(Domain.project_id == project.id, Domain.status == "verified")
    )
    for domain in domains:
        target = env_alias.get(domain.environment_id)
        if domain.kind == "redirect" and domain.redirect_to:
            redirects.append(traefik.Redirect(hostname=domain.hostname, target=domain.redirect_to))
        elif target:
            hosts[target].add(domain.hostname)
    routes = tuple(
        traefik.Route(
            key=dep_id,
            upstreams=tuple(upstreams[dep_id]),
            hostnames=tuple(sorted(names)),
            health_path=health[dep_id],
        )
        for dep_id, names in sorted(hosts.items())
    )
    return traefik.ProjectRoutes(slug=project.slug, routes=routes, redirects=tuple(redirects))


async def sync_project(*, session: AsyncSession, settings: Settings, project_id: str) -> bool:
    """Rewrite the project's dynamic file from the database; True when it changed."""
    project = await session.get(Project, project_id)
    if project is None or project.status == "deleting":
        slug = project.slug if project else None
        return traefik.remove_project(settings, slug) if slug else False
    routes = await project_routes(session=session, settings=settings, project=project)
    return traefik.write_project(settings, routes)


async def sync_all(
    *, session: AsyncSession, settings: Settings, platform: bool = True
) -> list[str]:
    """Regenerate every project's file and remove files of projects that are gone, then the
    platform's file unless `platform` is false (a one-off migration container of the next
    colour must not point the dashboard route at itself)."""
    changed = []
    slugs = set()
    for project in await session.scalars(select(Project).where(Project.status != "deleting")):
        slugs.add(project.slug)
        if await sync_project(session=session, settings=settings, project_id=project.id):
            changed.append(project.slug)
    for slug in traefik.read_dynamic(settings):
        if slug not in slugs:
            traefik.remove_project(settings, slug)
            changed.append(slug)
    if platform:
        traefik.write_platform_config(settings)
    return changed
