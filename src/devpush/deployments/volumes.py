"""A project's volumes as its users see them: what is declared (the project's settings, and
each environment's live deployment, whose devpush.toml may declare more), and every copy that
holds data, with the space it uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.deployments import service as deployments
from devpush.deployments.models import AliasType, Deployment
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects import volumes
from devpush.projects.models import Project
from devpush.projects.schemas import VolumeCopy, VolumeRead


async def _declared(session: AsyncSession, project: Project, names: dict[str, str]) -> list[Any]:
    """The project's own declarations, then those of each environment's live deployment."""
    found = {v["name"]: v for v in volumes.declared(project.config)}
    for environment_id in names:
        aliases = await deployments.environment_aliases(
            session=session, environment_id=environment_id
        )
        live = next((a for a in aliases if a.type == AliasType.environment), None)
        deployment = await session.get(Deployment, live.deployment_id) if live else None
        if deployment is not None:
            found |= {v["name"]: v for v in volumes.declared(deployment.config)}
    return list(found.values())


async def volume_report(
    *, session: AsyncSession, p: Platform, project: Project
) -> list[VolumeRead]:
    """Declared volumes with their copies, then copies of volumes no longer declared (their
    data is kept until the project is deleted)."""
    environments = await projects.list_environments(session=session, project_id=project.id)
    names = {e.id: e.name for e in environments}
    copies: dict[str, list[VolumeCopy]] = {}
    for runtime, used in await projects.volume_usage(p, project.id):
        copies.setdefault(used.name, []).append(
            VolumeCopy(
                environment_id=used.environment_id,
                environment=names.get(used.environment_id),
                runtime=runtime,
                used_bytes=used.used_bytes,
                size_mb=used.size_mb if used.enforced else None,
            )
        )
    report = [
        VolumeRead(
            name=v["name"],
            mount_path=v["mount_path"],
            size_mb=v.get("size_mb"),
            copies=copies.pop(v["name"], []),
        )
        for v in await _declared(session, project, names)
    ]
    report += [
        VolumeRead(name=name, mount_path=None, size_mb=None, copies=kept)
        for name, kept in sorted(copies.items())
    ]
    return report
