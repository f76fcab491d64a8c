"""`GET /projects/{id}/volumes`: the project's volumes and the space each copy uses."""

from __future__ import annotations

from fastapi import APIRouter

from devpush.api.deps import PlatformDep, SessionDep
from devpush.auth.deps import PrincipalDep
from devpush.deployments.volumes import volume_report
from devpush.projects.access import load_project
from devpush.projects.schemas import VolumeRead
from devpush.teams.access import Action

router = APIRouter(tags=["projects"])


@router.get("/projects/{project_id}/volumes", response_model=list[VolumeRead])
async def list_volumes(
    project_id: str, session: SessionDep, principal: PrincipalDep, platform: PlatformDep
) -> list[VolumeRead]:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    return await volume_report(session=session, p=platform, project=project)
