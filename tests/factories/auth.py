"""Users, teams and tokens for tests, made through the real services."""

from __future__ import annotations

from dataclasses import dataclass

from devpush.auth import service as auth
from devpush.auth.models import User
from devpush.db import session_scope
from devpush.platform import Platform
from devpush.teams import service as teams
from devpush.teams.models import Role, TeamMember


@dataclass
class Account:
    user_id: str
    team_id: str
    team_slug: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def make_account(
    p: Platform,
    email: str,
    *,
    scopes: list[str] | None = None,
    expires_days: int | None = None,
    admin: bool = False,
) -> Account:
    """A user with a team of their own and an API token; `admin` makes them a platform admin
    (who alone may use file:// repositories)."""
    async with session_scope(p.sessions) as session:
        user = await auth.create_user(session=session, email=email, is_admin=admin)
        team = await teams.create_team(session=session, owner_id=user.id, name=f"{user.name} team")
        _, token = await auth.create_token(
            session=session, user_id=user.id, scopes=scopes, expires_days=expires_days
        )
        return Account(user_id=user.id, team_id=team.id, team_slug=team.slug, token=token)


async def add_member(p: Platform, account: Account, team_id: str, role: Role) -> None:
    async with session_scope(p.sessions) as session:
        session.add(TeamMember(team_id=team_id, user_id=account.user_id, role=role))


async def token_for(p: Platform, user_id: str, **kwargs: object) -> str:
    async with session_scope(p.sessions) as session:
        _, token = await auth.create_token(session=session, user_id=user_id, **kwargs)  # type: ignore[arg-type]
        return token


async def promote(p: Platform, user_id: str) -> None:
    """Makes the user a platform admin (file:// repositories, the admin page)."""
    async with session_scope(p.sessions) as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.is_admin = True
