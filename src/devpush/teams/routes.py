"""Team routes: list, create, members."""

from __future__ import annotations

from fastapi import APIRouter, Request

from devpush.api.deps import PrincipalDep, SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.authz import Action, load_team
from devpush.teams import service
from devpush.teams.models import Role
from devpush.teams.schemas import MemberRead, TeamCreate, TeamRead

router = APIRouter(prefix="/teams", tags=["teams"])


@router.get("", response_model=list[TeamRead])
async def list_teams(session: SessionDep, principal: PrincipalDep) -> list[TeamRead]:
    rows = await service.list_teams(session=session, user_id=principal.user_id)
    return [
        TeamRead(
            id=t.id,
            slug=t.slug,
            name=t.name,
            personal=t.personal,
            role=role,
            created_at=t.created_at,
        )
        for t, role in rows
        if principal.token_team_id in (None, t.id)
    ]


@router.post("", response_model=TeamRead, status_code=201)
async def create_team(
    body: TeamCreate, request: Request, session: SessionDep, principal: PrincipalDep
) -> TeamRead:
    team = await service.create_team(session=session, owner_id=principal.user_id, name=body.name)
    await record(
        session=session,
        principal=principal,
        action="team.create",
        resource_type="team",
        resource_id=team.id,
        team_id=team.id,
        ip=client_ip(request),
    )
    return TeamRead(
        id=team.id,
        slug=team.slug,
        name=team.name,
        personal=team.personal,
        role=Role.owner,
        created_at=team.created_at,
    )


@router.get("/{team}", response_model=TeamRead)
async def get_team(team: str, session: SessionDep, principal: PrincipalDep) -> TeamRead:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.read)
    role = next(
        r
        for t, r in await service.list_teams(session=session, user_id=principal.user_id)
        if t.id == row.id
    )
    return TeamRead(
        id=row.id,
        slug=row.slug,
        name=row.name,
        personal=row.personal,
        role=role,
        created_at=row.created_at,
    )


@router.get("/{team}/members", response_model=list[MemberRead])
async def list_members(team: str, session: SessionDep, principal: PrincipalDep) -> list[MemberRead]:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.read)
    members = await service.list_members(session=session, team_id=row.id)
    return [MemberRead(user_id=u.id, email=u.email, name=u.name, role=r) for u, r in members]
