"""Custom domains: add (pending), verify through a DNS TXT record, route or redirect, remove.

A route-type domain serves whatever its environment's alias serves, so it follows deploys,
rollbacks and promotes. Verification asks for `_devpush-challenge.<hostname>` TXT `<token>`.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.resolver
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import utcnow
from devpush.domains.models import Domain
from devpush.errors import Conflict, Invalid, NotFound
from devpush.outbox.emit import emit
from devpush.projects.models import Environment, Project
from devpush.settings import Settings

HOSTNAME = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
CHALLENGE_PREFIX = "_devpush-challenge"


def normalize_hostname(value: str, settings: Settings) -> str:
    host = value.strip().lower().rstrip(".")
    if not HOSTNAME.match(host):
        raise Invalid(f"{value[:80]!r} is not a valid domain name (like app.example.com)")
    if host == settings.app_hostname or host.endswith("." + settings.deploy_domain):
        raise Invalid(f"{host} belongs to the platform; choose a domain of your own")
    return host


async def add(
    *,
    session: AsyncSession,
    settings: Settings,
    project_id: str,
    environment_id: str,
    hostname: str,
    kind: str = "route",
    redirect_to: str | None = None,
) -> Domain:
    host = normalize_hostname(hostname, settings)
    environment = await session.get(Environment, environment_id)
    if environment is None or environment.project_id != project_id:
        raise Invalid("environment does not belong to this project")
    target = None
    if kind == "redirect":
        if not redirect_to:
            raise Invalid("a redirect domain needs redirect_to (the domain to send visitors to)")
        target = redirect_to.strip().lower().rstrip(".")
        if not HOSTNAME.match(target) and not target.endswith("." + settings.deploy_domain):
            raise Invalid(f"{redirect_to[:80]!r} is not a valid domain to redirect to")
        if target == host:
            raise Invalid("a domain cannot redirect to itself")
    elif kind != "route":
        raise Invalid("kind must be 'route' or 'redirect'")
    if await session.scalar(select(Domain.id).where(Domain.hostname == host)):
        raise Conflict(f"{host} is already added to a project")
    domain = Domain(
        project_id=project_id,
        environment_id=environment_id,
        hostname=host,
        kind=kind,
        redirect_to=target,
        verification_token=secrets.token_hex(16),
    )
    session.add(domain)
    if not settings.verify_domains:
        await _verified(session, domain)
    await session.flush()
    return domain


async def get(*, session: AsyncSession, project_id: str, domain_id: str) -> Domain:
    domain = await session.get(Domain, domain_id) if len(domain_id) <= 32 else None
    if domain is None or domain.project_id != project_id:
        raise NotFound("no such domain")
    return domain


async def list_for_project(*, session: AsyncSession, project_id: str) -> list[Domain]:
    rows = await session.scalars(
        select(Domain).where(Domain.project_id == project_id).order_by(Domain.hostname)
    )
    return list(rows)


def challenge_name(domain: Domain) -> str:
    return f"{CHALLENGE_PREFIX}.{domain.hostname}"


async def lookup_txt(name: str, settings: Settings) -> list[str]:
    resolver = dns.asyncresolver.Resolver(configure=settings.dns_nameserver is None)
    if settings.dns_nameserver:
        host, _, port = settings.dns_nameserver.partition(":")
        resolver.nameservers = [host]
        resolver.port = int(port or 53)
    resolver.lifetime = 3.0
    try:
        answer = await resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return []
    except dns.exception.Timeout:
        return []
    return [b"".join(r.strings).decode(errors="replace") for r in answer]


async def verify(*, session: AsyncSession, settings: Settings, domain: Domain) -> Domain:
    """Check the TXT record; the domain is served once verified."""
    if domain.status == "verified":
        return domain
    records = await lookup_txt(challenge_name(domain), settings)
    if domain.verification_token in records:
        await _verified(session, domain)
    else:
        domain.status = "failed"
    await session.flush()
    return domain


async def _verified(session: AsyncSession, domain: Domain) -> None:
    """Served from now on, and `domain.verified` in the same transaction."""
    domain.status, domain.verified_at = "verified", utcnow()
    await session.flush()
    await emit_domain(session, domain, "domain.verified")


async def emit_domain(session: AsyncSession, domain: Domain, kind: str, **data: Any) -> None:
    project = await session.get(Project, domain.project_id)
    await emit(
        session,
        kind,
        team_id=project.team_id if project else None,
        project_id=domain.project_id,
        domain_id=domain.id,
        data={
            "hostname": domain.hostname,
            "kind": domain.kind,
            "environment_id": domain.environment_id,
            "status": domain.status,
            **data,
        },
    )


async def remove(*, session: AsyncSession, domain: Domain) -> None:
    await session.delete(domain)
    await session.flush()
