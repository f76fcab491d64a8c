"""The world the authorization matrix runs in, made through the real services.

Team A has an owner, an admin and a member. The outsider belongs to team B only. The platform
admin (`is_admin`) belongs to no team of A's: being a platform admin must not open teams. The
anonymous caller has no credentials (but a session with a CSRF token, so that pages refuse it
for being signed out rather than for a missing token).

Team A owns a project with an env var, a succeeded deployment, a domain, a pending invite (to a
third party) and a deploy hook. Routes that destroy or use up what they act on get a fresh
resource per call from the `fresh_*` factories, so every role meets the same state.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI

from devpush.accounts import signup
from devpush.auth import service as auth
from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Status
from devpush.domains import service as domains
from devpush.github.models import GithubInstallation
from devpush.platform import Platform
from devpush.projects import env
from devpush.projects import service as projects
from devpush.projects.models import Project
from devpush.projects.schemas import ProjectCreate
from devpush.runtime.base import RuntimeHandle
from devpush.sources import service as sources
from devpush.teams import service as teams
from devpush.teams.models import Role, TeamMember
from tests.integration.github.helpers import SECRET

TEAM_ROLES = ("owner", "admin", "member")
ROLES = ("owner", "admin", "member", "outsider", "platform_admin", "anonymous")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
INSTALLATION_ID = 1  # the installation the GitHub fixture payloads name
REPO = "Codertocat/Hello-World"
WEBHOOK_SECRET = SECRET  # the integration tests' signing helpers use it


@dataclass
class Caller:
    """One role: its user, API token, and a browser (own cookie jar) signed in as it."""

    role: str
    http: httpx.AsyncClient
    user_id: str | None = None
    email: str | None = None
    token: str | None = None
    csrf: str = ""

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@dataclass
class World:
    platform: Platform
    app: FastAPI
    callers: dict[str, Caller] = field(default_factory=dict)
    team_id: str = ""
    team_slug: str = ""
    project_id: str = ""
    project_name: str = ""
    production_env_id: str = ""
    deployment_id: str = ""
    domain_id: str = ""
    invite_id: str = ""
    invite_token: str = ""
    env_key: str = "SHARED_KEY"
    victim_id: str = ""
    rule_id: str = ""
    _n: itertools.count[int] = field(default_factory=itertools.count)

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self._n)}"

    # ---- building --------------------------------------------------------------------------
    async def build(self) -> None:
        p = self.platform
        async with session_scope(p.sessions) as session:
            users: dict[str, Any] = {}
            for role in ("owner", "admin", "member", "outsider", "platform_admin"):
                users[role] = await auth.create_user(
                    session=session,
                    email=f"{role.replace('_', '-')}@example.com",
                    is_admin=role == "platform_admin",
                )
            team = await teams.create_team(
                session=session, owner_id=users["owner"].id, name="Team A"
            )
            self.team_id, self.team_slug = team.id, team.slug
            for role in ("admin", "member"):
                session.add(TeamMember(team_id=team.id, user_id=users[role].id, role=Role(role)))
            await teams.create_team(session=session, owner_id=users["outsider"].id, name="Team B")
            victim = await auth.create_user(session=session, email="victim@example.com")
            session.add(TeamMember(team_id=team.id, user_id=victim.id, role=Role.member))
            self.victim_id = victim.id
            tokens = {}
            for role, user in users.items():
                _, tokens[role] = await auth.create_token(session=session, user_id=user.id)
            invite, self.invite_token = await teams.create_invite(
                session=session,
                team_id=team.id,
                email="third-party@example.com",
                role=Role.member,
                invited_by=users["owner"].id,
                actor_role=Role.owner,
            )
            self.invite_id = invite.id
            rule = await signup.add_rule(
                session=session, kind="email", value="allowed@example.com", created_by=None
            )
            self.rule_id = rule.id
            session.add(
                GithubInstallation(
                    id=INSTALLATION_ID,
                    account_login="Codertocat",
                    account_type="User",
                    team_id=team.id,
                )
            )
        self.project_id = await self.fresh_project(name="shop")
        self.project_name = "shop"
        self.deployment_id = await self.fresh_deployment(succeeded=True, branch="main")
        self.domain_id = await self.fresh_domain()
        async with session_scope(p.sessions) as session:
            await env.set_var(
                session=session, project_id=self.project_id, key=self.env_key, value="v"
            )
            envs = await projects.list_environments(session=session, project_id=self.project_id)
            self.production_env_id = next(e.id for e in envs if e.is_production)
        for role in ROLES:
            user = users.get(role)
            caller = Caller(
                role=role,
                http=self._http(),
                user_id=user.id if user else None,
                email=user.email if user else None,
                token=tokens.get(role),
            )
            await self.sign_in(caller)
            self.callers[role] = caller

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://localhost", timeout=30
        )

    async def sign_in(self, caller: Caller) -> None:
        """A browser session for the caller (through a real sign-in link), and its CSRF token."""
        if caller.user_id is not None:
            async with session_scope(self.platform.sessions) as session:
                link = await auth.create_sign_in_link(session=session, user_id=caller.user_id)
            response = await caller.http.get(f"/auth/link/{link}")
            assert response.status_code == 303, response.text
        page = await caller.http.get("/account" if caller.user_id else "/auth/sign-in")
        match = CSRF.search(page.text)
        assert match, page.text[:300]
        caller.csrf = match.group(1)

    async def close(self) -> None:
        for caller in self.callers.values():
            await caller.http.aclose()

    # ---- fresh resources ---------------------------------------------------------------------
    async def fresh_team(self) -> str:
        """A team with the same members and roles as team A; returns its slug."""
        async with session_scope(self.platform.sessions) as session:
            team = await teams.create_team(
                session=session,
                owner_id=self.callers["owner"].user_id or "",
                name=self.unique("Team fresh "),
            )
            for role in ("admin", "member"):
                user_id = self.callers[role].user_id or ""
                session.add(TeamMember(team_id=team.id, user_id=user_id, role=Role(role)))
            return team.slug

    async def fresh_project(self, name: str | None = None) -> str:
        async with session_scope(self.platform.sessions) as session:
            project = await projects.create_project(
                session=session,
                team_id=self.team_id,
                body=ProjectCreate(
                    name=name or self.unique("proj-"), start_command="python3 app.py"
                ),
            )
            return project.id

    async def fresh_deployment(self, *, succeeded: bool, branch: str | None = None) -> str:
        """In flight (status prepare), or succeeded and running (as if the worker was done)."""
        async with session_scope(self.platform.sessions) as session:
            project = await session.get(Project, self.project_id)
            assert project is not None
            deployment, _ = await deployments.create(
                session=session,
                settings=self.platform.settings,
                project=project,
                branch=branch or self.unique("branch-"),
                trigger="api",
            )
            if succeeded:
                deployment.status = Status.completed
                deployment.conclusion = Conclusion.succeeded
                deployment.runtime_handle = RuntimeHandle(
                    backend="process", id=f"fake-{deployment.id}", deployment_id=deployment.id
                ).to_json()
                deployment.upstream = "127.0.0.1:9"
            return deployment.id

    async def fresh_domain(self) -> str:
        async with session_scope(self.platform.sessions) as session:
            envs = await projects.list_environments(session=session, project_id=self.project_id)
            domain = await domains.add(
                session=session,
                settings=self.platform.settings,
                project_id=self.project_id,
                environment_id=next(e.id for e in envs if e.is_production),
                hostname=f"{self.unique('d')}.example.org",
            )
            return domain.id

    async def fresh_invite(self) -> str:
        async with session_scope(self.platform.sessions) as session:
            invite, _ = await teams.create_invite(
                session=session,
                team_id=self.team_id,
                email=f"{self.unique('invitee')}@example.com",
                role=Role.member,
                invited_by=self.callers["owner"].user_id or "",
                actor_role=Role.owner,
            )
            return invite.id

    async def fresh_member(self) -> str:
        """A plain member of team A, to be removed."""
        async with session_scope(self.platform.sessions) as session:
            user = await auth.create_user(
                session=session, email=f"{self.unique('leaver')}@example.com"
            )
            session.add(TeamMember(team_id=self.team_id, user_id=user.id, role=Role.member))
            return user.id

    async def fresh_owner_token(self) -> str:
        """Another API token of the owner (not the one the owner calls with)."""
        async with session_scope(self.platform.sessions) as session:
            token, _ = await auth.create_token(
                session=session, user_id=self.callers["owner"].user_id or ""
            )
            return token.id

    async def fresh_env_key(self) -> str:
        key = self.unique("KEY_")
        async with session_scope(self.platform.sessions) as session:
            await env.set_var(session=session, project_id=self.project_id, key=key, value="x")
        return key

    async def fresh_rule(self) -> str:
        async with session_scope(self.platform.sessions) as session:
            rule = await signup.add_rule(
                session=session,
                kind="email",
                value=f"{self.unique('rule')}@example.com",
                created_by=None,
            )
            return rule.id

    async def fresh_hook_token(self) -> str:
        async with session_scope(self.platform.sessions) as session:
            project = await session.get(Project, self.project_id)
            assert project is not None
            return sources.create_deploy_hook(project=project)

    async def fresh_caller(self, role: str) -> Caller:
        """A new user in the same position as `role` (a co-owner, another admin...), signed in
        with its own browser: for routes that end the caller's session or account."""
        caller = Caller(role=role, http=self._http())
        if role != "anonymous":
            async with session_scope(self.platform.sessions) as session:
                user = await auth.create_user(
                    session=session,
                    email=f"{self.unique(role.replace('_', '-'))}@example.com",
                    is_admin=role == "platform_admin",
                )
                if role in TEAM_ROLES:
                    session.add(TeamMember(team_id=self.team_id, user_id=user.id, role=Role(role)))
                else:
                    await teams.create_team(session=session, owner_id=user.id, name="Own team")
                _, caller.token = await auth.create_token(session=session, user_id=user.id)
                caller.user_id, caller.email = user.id, user.email
        await self.sign_in(caller)
        return caller
