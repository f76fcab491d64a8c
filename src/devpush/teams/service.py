"""Teams, memberships with roles (the last owner always stays), and invites by email."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth import mail
from devpush.auth.models import User
from devpush.auth.service import hash_secret, normalize_email
from devpush.db import utcnow
from devpush.errors import Conflict, Forbidden, Invalid, NotFound
from devpush.naming import slugify
from devpush.settings import Settings
from devpush.teams.models import Role, Team, TeamInvite, TeamMember


async def _free_slug(session: AsyncSession, name: str) -> str:
    base = slugify(name, max_length=40)
    slug, n = base, 1
    while await session.scalar(select(Team.id).where(Team.slug == slug)):
        n += 1
        slug = f"{base}-{n}"
    return slug


async def create_team(
    *, session: AsyncSession, owner_id: str, name: str, personal: bool = False
) -> Team:
    name = name.strip()
    if not name or len(name) > 100:
        raise Invalid("a team name must be 1 to 100 characters")
    team = Team(name=name, slug=await _free_slug(session, name), personal=personal)
    session.add(team)
    await session.flush()
    session.add(TeamMember(team_id=team.id, user_id=owner_id, role=Role.owner))
    await session.flush()
    return team


async def list_teams(*, session: AsyncSession, user_id: str) -> list[tuple[Team, Role]]:
    rows = await session.execute(
        select(Team, TeamMember.role)
        .join(TeamMember, TeamMember.team_id == Team.id)
        .where(TeamMember.user_id == user_id, Team.status == "active")
        .order_by(Team.created_at)
    )
    return [(team, role) for team, role in rows]


async def list_members(*, session: AsyncSession, team_id: str) -> list[tuple[User, Role]]:
    rows = await session.execute(
        select(User, TeamMember.role)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(TeamMember.team_id == team_id)
        .order_by(TeamMember.created_at)
    )
    return [(user, role) for user, role in rows]


async def owner_count(*, session: AsyncSession, team_id: str) -> int:
    return (
        await session.scalar(
            select(func.count())
            .select_from(TeamMember)
            .where(TeamMember.team_id == team_id, TeamMember.role == Role.owner)
        )
        or 0
    )


async def set_role(*, session: AsyncSession, team_id: str, user_id: str, role: Role) -> None:
    member = await session.get(TeamMember, (team_id, user_id))
    if member is None:
        raise Invalid("that user is not a member of this team")
    if member.role == Role.owner and role != Role.owner:
        if await owner_count(session=session, team_id=team_id) <= 1:
            raise Conflict("the last owner cannot be demoted; make someone else owner first")
    member.role = role


# ---- team settings -----------------------------------------------------------------------------
async def rename_team(*, session: AsyncSession, team: Team, name: str) -> Team:
    """A new display name; the slug (in URLs and push remotes) stays."""
    name = name.strip()
    if not name or len(name) > 100:
        raise Invalid("a team name must be 1 to 100 characters")
    team.name = name
    await session.flush()
    return team


def mark_deleting(*, team: Team) -> None:
    """The first step of deleting a team; the `delete_team` job does the rest."""
    if team.personal:
        raise Conflict("a personal team goes with its account; delete the account instead")
    team.status = "deleting"


# ---- members -----------------------------------------------------------------------------------
async def get_member(*, session: AsyncSession, team_id: str, user_id: str) -> tuple[User, Role]:
    row = (
        await session.execute(
            select(User, TeamMember.role)
            .join(TeamMember, TeamMember.user_id == User.id)
            .where(TeamMember.team_id == team_id, TeamMember.user_id == user_id)
        )
    ).first()
    if row is None:
        raise NotFound("no such member")
    return row[0], row[1]


def _check_owner_change(actor_role: Role, *roles: Role) -> None:
    if Role.owner in roles and actor_role != Role.owner:
        raise Forbidden("only an owner may make or unmake owners")


async def change_role(
    *, session: AsyncSession, team_id: str, user_id: str, role: Role, actor_role: Role
) -> None:
    """Set a member's role. Admins manage members and admins; owners also manage owners.
    The last owner cannot be demoted."""
    _, current = await get_member(session=session, team_id=team_id, user_id=user_id)
    _check_owner_change(actor_role, current, role)
    await set_role(session=session, team_id=team_id, user_id=user_id, role=role)
    await session.flush()


async def remove_member(
    *, session: AsyncSession, team_id: str, user_id: str, actor_role: Role
) -> None:
    """Remove a member (or leave, when it is the actor). The last owner cannot go."""
    _, current = await get_member(session=session, team_id=team_id, user_id=user_id)
    _check_owner_change(actor_role, current)
    if current == Role.owner and await owner_count(session=session, team_id=team_id) <= 1:
        raise Conflict("the last owner cannot leave or be removed; make someone else owner first")
    await session.execute(
        delete(TeamMember).where(TeamMember.team_id == team_id, TeamMember.user_id == user_id)
    )
    await session.flush()


async def teams_needing_owner(*, session: AsyncSession, user_id: str) -> list[Team]:
    """Teams that would be left without an owner (but with members) if the user went."""
    blocking = []
    for team, role in await list_teams(session=session, user_id=user_id):
        if role != Role.owner or await owner_count(session=session, team_id=team.id) > 1:
            continue
        members = await session.scalar(
            select(func.count()).select_from(TeamMember).where(TeamMember.team_id == team.id)
        )
        if (members or 0) > 1:
            blocking.append(team)
    return blocking


# ---- invites -------------------------------------------------------------------------------------
INVITE_TTL = timedelta(days=7)


def _pending() -> ColumnElement[bool]:
    return TeamInvite.accepted_at.is_(None) & TeamInvite.revoked_at.is_(None)


async def create_invite(
    *,
    session: AsyncSession,
    team_id: str,
    email: str,
    role: Role,
    invited_by: str,
    actor_role: Role,
) -> tuple[TeamInvite, str]:
    """A pending invite and its token (mail it; only the hash is stored)."""
    email = normalize_email(email)
    _check_owner_change(actor_role, role)
    member = await session.scalar(
        select(TeamMember.user_id)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.team_id == team_id, User.email == email)
    )
    if member is not None:
        raise Conflict(f"{email} is already a member of this team")
    if await session.scalar(
        select(TeamInvite.id).where(
            TeamInvite.team_id == team_id,
            TeamInvite.email == email,
            _pending(),
            TeamInvite.expires_at > utcnow(),
        )
    ):
        raise Conflict(f"{email} is already invited; resend the invitation instead")
    token = secrets.token_urlsafe(32)
    invite = TeamInvite(
        team_id=team_id,
        email=email,
        role=role,
        token_hash=hash_secret(token),
        invited_by=invited_by,
        expires_at=utcnow() + INVITE_TTL,
    )
    session.add(invite)
    await session.flush()
    return invite, token


async def list_invites(*, session: AsyncSession, team_id: str) -> list[TeamInvite]:
    """Invites not yet accepted or revoked (expired ones included: they can be resent)."""
    rows = await session.scalars(
        select(TeamInvite)
        .where(TeamInvite.team_id == team_id, _pending())
        .order_by(TeamInvite.created_at.desc())
    )
    return list(rows)


async def get_invite(*, session: AsyncSession, team_id: str, invite_id: str) -> TeamInvite:
    invite = await session.get(TeamInvite, invite_id) if len(invite_id) <= 32 else None
    if invite is None or invite.team_id != team_id or not _is_pending(invite):
        raise NotFound("no such invitation")
    return invite


def _is_pending(invite: TeamInvite) -> bool:
    return invite.accepted_at is None and invite.revoked_at is None


async def resend_invite(*, session: AsyncSession, invite: TeamInvite) -> str:
    """A fresh token and expiry; the old link stops working."""
    token = secrets.token_urlsafe(32)
    invite.token_hash = hash_secret(token)
    invite.expires_at = utcnow() + INVITE_TTL
    await session.flush()
    return token


async def revoke_invite(*, session: AsyncSession, invite: TeamInvite) -> None:
    invite.revoked_at = utcnow()
    await session.flush()


async def invite_by_token(*, session: AsyncSession, token: str) -> TeamInvite:
    invite = (
        await session.scalar(
            select(TeamInvite).where(TeamInvite.token_hash == hash_secret(token)).with_for_update()
        )
        if 0 < len(token) <= 200
        else None
    )
    if invite is None or not _is_pending(invite) or invite.expires_at <= utcnow():
        raise NotFound("this invitation is invalid, already used, revoked or expired")
    return invite


async def accept_invite(*, session: AsyncSession, token: str, user: User) -> Team:
    """Join the invite's team; only as the address it was sent to."""
    invite = await invite_by_token(session=session, token=token)
    if invite.email != user.email:
        raise Forbidden(
            f"this invitation is for {invite.email}; sign in with that address to accept it"
        )
    team = await session.get(Team, invite.team_id)
    if team is None or team.status != "active":
        raise NotFound("this invitation's team no longer exists")
    if await session.get(TeamMember, (team.id, user.id)) is None:
        session.add(TeamMember(team_id=team.id, user_id=user.id, role=invite.role))
    invite.accepted_at = utcnow()
    await session.flush()
    return team


async def send_invite(
    settings: Settings, *, team: Team, inviter: User | None, invite: TeamInvite, token: str
) -> str | None:
    """Mail the invite link; shared by the API and the pages. Without SMTP nothing is sent
    and the link is returned instead, for the inviting admin to hand over (it is never
    logged)."""
    who = (inviter.name or inviter.email) if inviter else "A devpush user"
    url = f"{settings.app_url}/invites/{token}"
    message = mail.invite(settings, invite.email, team.name, who, invite.role.value, url)
    return None if await mail.send(settings, message) else url
