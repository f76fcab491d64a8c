"""Env var routes: values are write-only, except through `reveal` with an admin token."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from devpush.api.deps import SecretAnswer, SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.errors import Forbidden
from devpush.projects import env
from devpush.projects.access import load_project
from devpush.teams.access import Action

router = APIRouter(tags=["env vars"])
EnvironmentQuery = Annotated[
    str | None,
    Query(max_length=40, description="Environment name; omitted: the project-wide variable"),
]


class EnvVarSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(max_length=65536)
    secret: bool = Field(False, description="Mask the value in logs; reveal needs admin")
    previews: StrictBool = Field(
        False,
        description="A project-wide secret also goes to preview deployments (pull requests, "
        "branches matching no environment), which otherwise don't get it. Ignored for plain "
        "variables, which reach every deployment; refused for an environment's variable.",
    )


class EnvVarRead(BaseModel):
    key: str
    environment: str | None
    secret: bool
    previews: bool
    updated_at: datetime


class EnvVarRevealed(EnvVarRead):
    value: str


def _read(info: env.EnvVarInfo) -> EnvVarRead:
    return EnvVarRead(
        key=info.key,
        environment=info.environment,
        secret=info.secret,
        previews=info.previews,
        updated_at=info.updated_at,
    )


@router.get("/projects/{project_id}/env", response_model=list[EnvVarRead])
async def list_env(
    project_id: str, session: SessionDep, principal: PrincipalDep
) -> list[EnvVarRead]:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.read
    )
    return [_read(v) for v in await env.list_vars(session=session, project_id=project.id)]


@router.put("/projects/{project_id}/env/{key}", response_model=EnvVarRead)
async def set_env(
    project_id: str,
    key: str,
    body: EnvVarSet,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    environment: EnvironmentQuery = None,
) -> EnvVarRead:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    info = await env.set_var(
        session=session,
        project_id=project.id,
        key=key,
        value=body.value,
        environment=environment,
        secret=body.secret,
        previews=body.previews,
    )
    await record(
        session=session,
        principal=principal,
        action="env.set",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"key": key, "environment": environment, "previews": info.previews},
    )
    return _read(info)


@router.delete("/projects/{project_id}/env/{key}", status_code=204)
async def unset_env(
    project_id: str,
    key: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    environment: EnvironmentQuery = None,
) -> Response:
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    await env.unset_var(session=session, project_id=project.id, key=key, environment=environment)
    await record(
        session=session,
        principal=principal,
        action="env.unset",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"key": key, "environment": environment},
    )
    return Response(status_code=204)


@router.post(
    "/projects/{project_id}/env/{key}/reveal",
    response_model=EnvVarRevealed,
    dependencies=[SecretAnswer],
)
async def reveal_env(
    project_id: str,
    key: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    environment: EnvironmentQuery = None,
) -> EnvVarRevealed:
    """Show a value. Needs the `admin` scope and an admin role; every reveal is audited."""
    project = await load_project(
        session=session, principal=principal, project_id=project_id, action=Action.manage
    )
    if "admin" not in principal.scopes:
        raise Forbidden("revealing a value needs a token with the 'admin' scope")
    value = await env.reveal(
        session=session, project_id=project.id, key=key, environment=environment
    )
    await record(
        session=session,
        principal=principal,
        action="env.reveal",
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data={"key": key, "environment": environment},
    )
    infos = [
        v
        for v in await env.list_vars(session=session, project_id=project.id)
        if v.key == key and v.environment == environment
    ]
    return EnvVarRevealed(**_read(infos[0]).model_dump(), value=value)
