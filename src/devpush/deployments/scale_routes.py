"""Scale an environment: its replica count, applied to its live deployment at once and to
its next deployments (deployments/replicas.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from devpush.api.deps import PlatformDep, SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.deployments import replicas
from devpush.projects.access import load_project
from devpush.projects.limits import MAX_REPLICAS
from devpush.queue import enqueue_scale
from devpush.teams.access import Action

router = APIRouter(tags=["deployments"])


class ScaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: int = Field(ge=1, le=MAX_REPLICAS, description="Instances of the web process")


class ScaleRead(BaseModel):
    environment: str
    replicas: int
    deployment_id: str | None = Field(
        description="The live deployment being scaled now (None: the next deployment runs them)"
    )


@router.post(
    "/projects/{project_id}/environments/{environment}/scale",
    response_model=ScaleRead,
    status_code=202,
)
async def scale_environment(
    project_id: str,
    environment: str,
    body: ScaleIn,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> ScaleRead:
    """Set the environment's replica count. Its live deployment starts or retires replicas
    within seconds, without a redeploy (its log says so); new ones serve once they answer."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.deploy
    )
    scaled = await replicas.set_count(
        session=session, project=project, environment=environment, count=body.replicas
    )
    await record(
        session=session,
        principal=principal,
        action="environment.scale",
        resource_type="environment",
        resource_id=scaled.environment.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"replicas": body.replicas},
    )
    await session.commit()
    if scaled.deployment_id:
        await enqueue_scale(platform.redis, scaled.deployment_id)
    return ScaleRead(
        environment=scaled.environment.slug,
        replicas=body.replicas,
        deployment_id=scaled.deployment_id,
    )
