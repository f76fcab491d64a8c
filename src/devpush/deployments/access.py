"""Loading a deployment for a principal: through its project's access check."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal
from devpush.deployments.models import Deployment
from devpush.errors import NotFound
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.teams.access import Action


async def load_deployment(
    *, session: AsyncSession, principal: Principal, deployment_id: str, action: Action
) -> tuple[Deployment, Project]:
    deployment = await session.get(Deployment, deployment_id) if len(deployment_id) <= 32 else None
    if deployment is None:
        raise NotFound("no such deployment")
    project = await load_project(
        session=session, principal=principal, project_id=deployment.project_id, action=action
    )
    return deployment, project
