"""A user's own account: deleting it (a job), shared by the account page and the API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.models import User
from devpush.errors import Conflict
from devpush.teams.service import teams_needing_owner


async def start_deletion(*, session: AsyncSession, user: User) -> None:
    """Mark the account for deletion; teams that would lose their only owner block it."""
    blocking = await teams_needing_owner(session=session, user_id=user.id)
    if blocking:
        names = ", ".join(t.name for t in blocking)
        raise Conflict(f"make someone else owner of {names} first, or delete those teams")
    user.status = "deleting"
