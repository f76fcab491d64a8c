"""The one place that decides whether a principal may act on a team's resources.

Every route, page, SSE stream and job entry point resolves its resource through the loaders
here and in projects/access.py and deployments/access.py. A caller who is not a member of the
owning team gets NotFound (never a hint that the resource exists); a member whose role or
token scope is too small gets Forbidden.
"""

from __future__ import annotations

import enum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal
from devpush.errors import Forbidden, NotFound
from devpush.teams.models import ROLE_RANK, Role, Team, TeamMember


class Action(enum.StrEnum):
    read = "read"  # see the team's projects, deployments and logs
    deploy = "deploy"  # create, cancel, rollback, promote, redeploy deployments
    manage = "manage"  # change settings, env vars, domains, members
    own = "own"  # delete the team, change owners


# (minimum role, token scope required)
RULES: dict[Action, tuple[Role, str]] = {
    Action.read: (Role.member, "read"),
    Action.deploy: (Role.member, "deploy"),
    Action.manage: (Role.admin, "admin"),
    Action.own: (Role.owner, "admin"),
}


def _scope_allows(scopes: frozenset[str], needed: str) -> bool:
    # admin implies deploy implies read
    order = ["read", "deploy", "admin"]
    return any(order.index(s) >= order.index(needed) for s in scopes if s in order)


async def role_in_team(*, session: AsyncSession, user_id: str, team_id: str) -> Role | None:
    return await session.scalar(
        select(TeamMember.role).where(TeamMember.team_id == team_id, TeamMember.user_id == user_id)
    )


async def authorize_team(
    *, session: AsyncSession, principal: Principal, team_id: str, action: Action
) -> Role:
    """Return the caller's role in the team, or raise NotFound/Forbidden."""
    role = await role_in_team(session=session, user_id=principal.user_id, team_id=team_id)
    return check(principal, team_id, role, action)


def check(principal: Principal, team_id: str, role: Role | None, action: Action) -> Role:
    """The decision, given the caller's role in the team (None: not a member)."""
    if principal.token_team_id is not None and principal.token_team_id != team_id:
        raise NotFound("no such team")
    if role is None:
        raise NotFound("no such team")
    min_role, scope = RULES[action]
    if not _scope_allows(principal.scopes, scope):
        raise Forbidden(f"this token lacks the '{scope}' scope needed to {action.value}")
    if ROLE_RANK[role] < ROLE_RANK[min_role]:
        raise Forbidden(f"your role ({role.value}) may not {action.value} in this team")
    return role


async def load_team(
    *, session: AsyncSession, principal: Principal, team_ref: str, action: Action
) -> Team:
    """Find a team by id or slug and check access."""
    team = await session.scalar(select(Team).where((Team.id == team_ref) | (Team.slug == team_ref)))
    if team is None or team.status != "active":
        raise NotFound("no such team")
    await authorize_team(session=session, principal=principal, team_id=team.id, action=action)
    return team
