"""Team routes: list, create, rename, delete; members (roles, removal, leaving); invites
(create, list, resend, revoke, accept). Every action the team pages offer is here too."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import PlatformDep, SecretAnswer, SessionDep, client_ip
from devpush.api.schemas import DeletionAccepted
from devpush.audit.service import record
from devpush.auth.deps import PrincipalDep
from devpush.auth.models import User
from devpush.auth.service import Principal
from devpush.db import utcnow
from devpush.errors import Forbidden, NotFound
from devpush.queue import enqueue_delete_team
from devpush.teams import service
from devpush.teams.access import Action, load_team, role_in_team
from devpush.teams.models import Role, Team, TeamInvite
from devpush.teams.schemas import (
    InviteCreate,
    InviteRead,
    MemberRead,
    MemberUpdate,
    TeamCreate,
    TeamRead,
    TeamUpdate,
)

router = APIRouter(tags=["teams"])
Id = Annotated[str, Path(max_length=32)]
Token = Annotated[str, Path(max_length=200)]


def team_read(team: Team, role: Role) -> TeamRead:
    return TeamRead(
        id=team.id,
        slug=team.slug,
        name=team.name,
        personal=team.personal,
        role=role,
        created_at=team.created_at,
    )


def invite_read(invite: TeamInvite) -> InviteRead:
    return InviteRead(
        id=invite.id,
        email=invite.email,
        role=invite.role,
        invited_by=invite.invited_by,
        expires_at=invite.expires_at,
        expired=invite.expires_at <= utcnow(),
        created_at=invite.created_at,
    )


async def team_and_role(
    session: AsyncSession, principal: Principal, team_ref: str, action: Action
) -> tuple[Team, Role]:
    team = await load_team(session=session, principal=principal, team_ref=team_ref, action=action)
    role = await role_in_team(session=session, user_id=principal.user_id, team_id=team.id)
    assert role is not None
    return team, role


@router.get("/teams", response_model=list[TeamRead])
async def list_teams(session: SessionDep, principal: PrincipalDep) -> list[TeamRead]:
    rows = await service.list_teams(session=session, user_id=principal.user_id)
    return [team_read(t, role) for t, role in rows if principal.token_team_id in (None, t.id)]


@router.post("/teams", response_model=TeamRead, status_code=201)
async def create_team(
    body: TeamCreate, request: Request, session: SessionDep, principal: PrincipalDep
) -> TeamRead:
    if "admin" not in principal.scopes or principal.token_team_id is not None:
        raise Forbidden("creating a team needs a token with the 'admin' scope, for no one team")
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
    return team_read(team, Role.owner)


@router.get("/teams/{team}", response_model=TeamRead)
async def get_team(team: str, session: SessionDep, principal: PrincipalDep) -> TeamRead:
    row, role = await team_and_role(session, principal, team, Action.read)
    return team_read(row, role)


@router.patch("/teams/{team}", response_model=TeamRead)
async def rename_team(
    team: str, body: TeamUpdate, request: Request, session: SessionDep, principal: PrincipalDep
) -> TeamRead:
    row, role = await team_and_role(session, principal, team, Action.manage)
    await service.rename_team(session=session, team=row, name=body.name)
    await record(
        session=session,
        principal=principal,
        action="team.rename",
        resource_type="team",
        resource_id=row.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"name": row.name},
    )
    return team_read(row, role)


@router.delete("/teams/{team}", status_code=202, response_model=DeletionAccepted)
async def delete_team(
    team: str,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> DeletionAccepted:
    """Delete the team with its projects and deployments (a job); owners only."""
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.own)
    service.mark_deleting(team=row)
    await record(
        session=session,
        principal=principal,
        action="team.delete",
        resource_type="team",
        resource_id=row.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    await session.commit()
    await enqueue_delete_team(platform.redis, row.id)
    return DeletionAccepted(id=row.id)


# ---- members -----------------------------------------------------------------------------------
@router.get("/teams/{team}/members", response_model=list[MemberRead])
async def list_members(team: str, session: SessionDep, principal: PrincipalDep) -> list[MemberRead]:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.read)
    members = await service.list_members(session=session, team_id=row.id)
    return [MemberRead(user_id=u.id, email=u.email, name=u.name, role=r) for u, r in members]


@router.get("/teams/{team}/members/{user_id}", response_model=MemberRead)
async def get_member(
    team: str, user_id: Id, session: SessionDep, principal: PrincipalDep
) -> MemberRead:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.read)
    user, role = await service.get_member(session=session, team_id=row.id, user_id=user_id)
    return MemberRead(user_id=user.id, email=user.email, name=user.name, role=role)


@router.patch("/teams/{team}/members/{user_id}", response_model=MemberRead)
async def update_member(
    team: str,
    user_id: Id,
    body: MemberUpdate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
) -> MemberRead:
    """Change a role. Admins manage members and admins; only owners make or unmake owners;
    the last owner cannot be demoted (409)."""
    row, actor_role = await team_and_role(session, principal, team, Action.manage)
    await service.change_role(
        session=session, team_id=row.id, user_id=user_id, role=body.role, actor_role=actor_role
    )
    await record(
        session=session,
        principal=principal,
        action="member.role",
        resource_type="user",
        resource_id=user_id,
        team_id=row.id,
        ip=client_ip(request),
        data={"role": body.role.value},
    )
    user, role = await service.get_member(session=session, team_id=row.id, user_id=user_id)
    return MemberRead(user_id=user.id, email=user.email, name=user.name, role=role)


@router.delete("/teams/{team}/members/{user_id}", status_code=204)
async def remove_member(
    team: str, user_id: Id, request: Request, session: SessionDep, principal: PrincipalDep
) -> Response:
    """Remove a member (admins), or leave the team (your own id). The last owner stays."""
    leaving = user_id == principal.user_id
    row, actor_role = await team_and_role(
        session, principal, team, Action.read if leaving else Action.manage
    )
    await service.remove_member(
        session=session, team_id=row.id, user_id=user_id, actor_role=actor_role
    )
    await record(
        session=session,
        principal=principal,
        action="member.leave" if leaving else "member.remove",
        resource_type="user",
        resource_id=user_id,
        team_id=row.id,
        ip=client_ip(request),
    )
    return Response(status_code=204)


# ---- invites -------------------------------------------------------------------------------------
@router.post(
    "/teams/{team}/invites",
    response_model=InviteRead,
    status_code=201,
    dependencies=[SecretAnswer],  # the one-time link, when no mail could carry it
)
async def create_invite(
    team: str,
    body: InviteCreate,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> InviteRead:
    """Invite an address; the link goes out by mail (without SMTP, it is in this answer's
    `url`, for you to hand over)."""
    row, actor_role = await team_and_role(session, principal, team, Action.manage)
    invite, token = await service.create_invite(
        session=session,
        team_id=row.id,
        email=body.email,
        role=body.role,
        invited_by=principal.user_id,
        actor_role=actor_role,
    )
    await record(
        session=session,
        principal=principal,
        action="invite.create",
        resource_type="invite",
        resource_id=invite.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"email": invite.email, "role": invite.role.value},
    )
    inviter = await session.get(User, principal.user_id)
    url = await service.send_invite(
        platform.settings, team=row, inviter=inviter, invite=invite, token=token
    )
    return invite_read(invite).model_copy(update={"url": url})


@router.get("/teams/{team}/invites", response_model=list[InviteRead])
async def list_invites(team: str, session: SessionDep, principal: PrincipalDep) -> list[InviteRead]:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.manage)
    return [invite_read(i) for i in await service.list_invites(session=session, team_id=row.id)]


@router.post(
    "/teams/{team}/invites/{invite_id}/resend",
    response_model=InviteRead,
    dependencies=[SecretAnswer],
)
async def resend_invite(
    team: str,
    invite_id: Id,
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    platform: PlatformDep,
) -> InviteRead:
    """Mail a fresh link (valid 7 days again); the previous link stops working. Without SMTP
    the new link is in this answer's `url`."""
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.manage)
    invite = await service.get_invite(session=session, team_id=row.id, invite_id=invite_id)
    token = await service.resend_invite(session=session, invite=invite)
    await record(
        session=session,
        principal=principal,
        action="invite.resend",
        resource_type="invite",
        resource_id=invite.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    inviter = await session.get(User, principal.user_id)
    url = await service.send_invite(
        platform.settings, team=row, inviter=inviter, invite=invite, token=token
    )
    return invite_read(invite).model_copy(update={"url": url})


@router.delete("/teams/{team}/invites/{invite_id}", status_code=204)
async def revoke_invite(
    team: str, invite_id: Id, request: Request, session: SessionDep, principal: PrincipalDep
) -> Response:
    row = await load_team(session=session, principal=principal, team_ref=team, action=Action.manage)
    invite = await service.get_invite(session=session, team_id=row.id, invite_id=invite_id)
    await service.revoke_invite(session=session, invite=invite)
    await record(
        session=session,
        principal=principal,
        action="invite.revoke",
        resource_type="invite",
        resource_id=invite.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    return Response(status_code=204)


@router.post("/invites/{token}/accept", response_model=TeamRead)
async def accept_invite(
    token: Token, request: Request, session: SessionDep, principal: PrincipalDep
) -> TeamRead:
    """Join the team, as the user the invitation was mailed to."""
    if principal.token_team_id is not None:
        raise Forbidden("a team-limited token cannot join other teams")
    user = await session.get(User, principal.user_id)
    if user is None:
        raise NotFound("no such user")
    team = await service.accept_invite(session=session, token=token, user=user)
    await record(
        session=session,
        principal=principal,
        action="invite.accept",
        resource_type="team",
        resource_id=team.id,
        team_id=team.id,
        ip=client_ip(request),
    )
    role = await role_in_team(session=session, user_id=user.id, team_id=team.id)
    assert role is not None
    return team_read(team, role)
