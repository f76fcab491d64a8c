"""Teams and memberships."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.models import User
from devpush.errors import Conflict, Invalid
from devpush.naming import slugify
from devpush.teams.models import Role, Team, TeamMember


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
