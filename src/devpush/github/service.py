"""GitHub App installations: rows kept in step with the webhooks, installation tokens cached
encrypted and refreshed before they expire, and the repositories a team can connect."""

from __future__ import annotations

from datetime import datetime, timedelta

from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import crypto
from devpush.db import session_scope, utcnow
from devpush.errors import Conflict, NotFound
from devpush.github.client import GithubClient, check_full_name
from devpush.github.models import GithubInstallation
from devpush.github.schemas import Installation, RepositoryRead
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.projects.repository import github_clone_url
from devpush.settings import Settings
from devpush.signing import secret_key

# Refresh a cached token this long before GitHub's expiry (tokens last an hour).
TOKEN_MARGIN = timedelta(minutes=5)
# The install flow may link an installation to a team only this soon after it was made.
CLAIM_WINDOW = timedelta(minutes=30)


async def upsert_installation(
    *, session: AsyncSession, installation: Installation
) -> GithubInstallation:
    row = await session.get(GithubInstallation, installation.id, with_for_update=True)
    if row is None:
        row = GithubInstallation(id=installation.id)
        session.add(row)
    row.account_login = installation.account.login
    row.account_type = installation.account.type
    await session.flush()
    return row


async def delete_installation(*, session: AsyncSession, installation_id: int) -> None:
    row = await session.get(GithubInstallation, installation_id)
    if row is not None:
        await session.delete(row)


async def set_suspended(*, session: AsyncSession, installation_id: int, suspended: bool) -> None:
    row = await session.get(GithubInstallation, installation_id, with_for_update=True)
    if row is not None:
        row.suspended_at = utcnow() if suspended else None
        row.token_enc = row.token_expires_at = None


async def installation_token(*, p: Platform, installation_id: int) -> str:
    """A valid installation token: the cached one, or a fresh one (then cached, encrypted)."""
    async with session_scope(p.sessions) as session:
        row = await session.get(GithubInstallation, installation_id)
        if row is not None and row.suspended_at is not None:
            raise Conflict(
                f"the GitHub App installation on {row.account_login} is suspended; "
                "unsuspend it on GitHub to deploy"
            )
        if (
            row is not None
            and row.token_enc
            and row.token_expires_at is not None
            and row.token_expires_at - utcnow() > TOKEN_MARGIN
        ):
            return crypto.decrypt(row.token_enc)
    async with GithubClient(p.settings) as gh:
        fresh = await gh.create_installation_token(installation_id)
    async with session_scope(p.sessions) as session:
        row = await session.get(GithubInstallation, installation_id, with_for_update=True)
        if row is not None:
            row.token_enc = crypto.encrypt(fresh.token)
            row.token_expires_at = fresh.expires_at
    return fresh.token


async def team_installations(*, session: AsyncSession, team_id: str) -> list[GithubInstallation]:
    rows = await session.scalars(
        select(GithubInstallation)
        .where(GithubInstallation.team_id == team_id, GithubInstallation.suspended_at.is_(None))
        .order_by(GithubInstallation.account_login)
    )
    return list(rows)


async def list_repositories(*, p: Platform, team_id: str) -> list[RepositoryRead]:
    """Every repository the team's installations can see (for the "new project" page)."""
    async with session_scope(p.sessions) as session:
        ids = [i.id for i in await team_installations(session=session, team_id=team_id)]
    repos: list[RepositoryRead] = []
    for installation_id in ids:
        token = await installation_token(p=p, installation_id=installation_id)
        async with GithubClient(p.settings) as gh:
            for repo in await gh.list_repositories(token):
                repos.append(_repository(repo, installation_id))
    return sorted(repos, key=lambda r: r.full_name.lower())


async def find_repository(*, p: Platform, team_id: str, full_name: str) -> RepositoryRead:
    """The repository `full_name` as one of the team's installations sees it, or NotFound."""
    check_full_name(full_name)
    async with session_scope(p.sessions) as session:
        ids = [i.id for i in await team_installations(session=session, team_id=team_id)]
    for installation_id in ids:
        token = await installation_token(p=p, installation_id=installation_id)
        async with GithubClient(p.settings) as gh:
            try:
                return _repository(await gh.get_repository(token, full_name), installation_id)
            except NotFound:
                continue
    raise NotFound(
        f"none of this team's GitHub installations can see {full_name}; install the App on "
        "its owner and grant it the repository"
    )


async def claim_installation(*, p: Platform, installation_id: int, team_id: str) -> None:
    """Link a just-made installation to the team whose member started the install flow."""
    async with GithubClient(p.settings) as gh:
        data = await gh.get_installation(installation_id)
    installation = Installation.model_validate(data)
    installed_at = _timestamp(data.get("created_at"))
    async with session_scope(p.sessions) as session:
        row = await session.get(GithubInstallation, installation_id, with_for_update=True)
        if row is None:
            row = await upsert_installation(session=session, installation=installation)
        if row.team_id == team_id:
            return
        made = min(installed_at or row.created_at, row.created_at)
        if row.team_id is not None or utcnow() - made > CLAIM_WINDOW:
            raise Conflict(
                f"the installation on {installation.account.login} is already linked, or too "
                "old to link this way; ask a platform admin"
            )
        row.team_id = team_id


def _timestamp(value: object) -> datetime | None:
    """GitHub's ISO 8601 timestamps ("2019-05-13T19:19:59Z", or with an offset)."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _repository(repo: dict[str, object], installation_id: int) -> RepositoryRead:
    return RepositoryRead(
        id=int(str(repo["id"])),
        full_name=str(repo["full_name"]),
        private=bool(repo.get("private")),
        default_branch=str(repo["default_branch"]) if repo.get("default_branch") else None,
        installation_id=installation_id,
        html_url=str(repo["html_url"]) if repo.get("html_url") else None,
    )


INSTALL_STATE_MAX_AGE = 3600  # seconds an "install the App" link stays valid


def install_state_signer(settings: Settings) -> URLSafeTimedSerializer:
    """Signs the team and user an App installation is started for (GitHub hands the state back
    to the setup page)."""
    return URLSafeTimedSerializer(secret_key(settings), salt="devpush.github.install")


def connect_github(*, settings: Settings, project: Project, repository: RepositoryRead) -> None:
    project.github_installation_id = repository.installation_id
    project.github_repo_id = repository.id
    project.github_repo_full_name = repository.full_name
    project.repo_url = github_clone_url(settings, repository.full_name)
    project.repo_status = None
    project.repo_credentials_enc = None  # the installation token replaces any stored secret


def disconnect_github(*, project: Project) -> None:
    project.github_installation_id = project.github_repo_id = None
    project.github_repo_full_name = project.repo_status = project.repo_url = None
