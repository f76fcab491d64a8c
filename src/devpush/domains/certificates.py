"""TLS mode: does Traefik hold a certificate for each verified custom domain?

Traefik's ACME resolver keeps the certificates it obtained in its storage file (acme.json:
`{resolver: {"Certificates": [{"domain": {"main", "sans"}, ...}]}}`). A domain it still has
no certificate for `certificate_grace` seconds after verification is marked `failed` and
`domain.certificate_failed` is sent once; one that gets its certificate later is `issued`
again. The monitor runs this with its reconciliation."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import utcnow
from devpush.domains.models import Domain
from devpush.domains.service import emit_domain
from devpush.settings import Settings


def acme_storage(settings: Settings) -> Path:
    return settings.data_path / "traefik" / "acme.json"


def certified_hostnames(settings: Settings) -> set[str] | None:
    """The hostnames the resolver holds certificates for; None when TLS mode is off or the
    file can't be read (then nothing is judged)."""
    if not (settings.https_port and settings.cert_resolver):
        return None
    try:
        stored = json.loads(acme_storage(settings).read_text() or "{}")
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        return None
    resolver = stored.get(settings.cert_resolver) or {}
    names: set[str] = set()
    for certificate in resolver.get("Certificates") or []:
        domain = certificate.get("domain") or {}
        names.update(n.lower() for n in [domain.get("main"), *(domain.get("sans") or [])] if n)
    return names


async def check(*, session: AsyncSession, settings: Settings) -> list[Domain]:
    """Mark verified domains issued or failed; returns those newly failed."""
    certified = certified_hostnames(settings)
    if certified is None:
        return []
    domains = await session.scalars(
        select(Domain).where(Domain.status == "verified").with_for_update(skip_locked=True)
    )
    deadline = utcnow() - timedelta(seconds=settings.certificate_grace)
    failed = []
    for domain in domains:
        if domain.hostname in certified:
            domain.certificate = "issued"
        elif domain.certificate is None and domain.verified_at and domain.verified_at < deadline:
            domain.certificate = "failed"
            await session.flush()
            await emit_domain(
                session,
                domain,
                "domain.certificate_failed",
                reason=f"Traefik has no certificate for {domain.hostname} "
                f"{settings.certificate_grace:.0f}s after it was verified; see Traefik's log "
                "(the ACME challenge needs the domain's DNS to point at this server)",
            )
            failed.append(domain)
    return failed
