"""The authorization matrix: every route of the app (API, pages, SSE, git, hooks, static) called
by each role against team A's resources, with the one outcome each role must get.

The table below is the specification. `test_every_route_has_an_expectation` reads the app's
route table, so a new route fails the suite until a row says who may call it. Public routes
are rows too (`public(...)`): being public is a decision, written down here.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from devpush.db import session_scope
from devpush.projects import service as projects
from devpush.projects.repository import push_repo
from tests.factories.auth import token_for
from tests.security.matrix import (
    SIGN_IN,
    Case,
    admin_api,
    admin_page,
    but,
    own_api,
    own_page,
    public,
    route_keys,
    run_case,
    team_api,
    team_page,
)
from tests.security.world import REPO, ROLES, Caller, World


# ---- fresh resources for routes that use them up -----------------------------------------------
async def new_team(w: World, role: str) -> dict[str, str]:
    return {"team": await w.fresh_team()}


async def new_project(w: World, role: str) -> dict[str, str]:
    return {"project_id": await w.fresh_project()}


async def new_named_project(w: World, role: str) -> dict[str, str]:
    name = w.unique("doomed-")
    return {"project_id": await w.fresh_project(name), "name": name}


async def in_flight(w: World, role: str) -> dict[str, str]:
    return {"deployment_id": await w.fresh_deployment(succeeded=False)}


async def serving_main(w: World, role: str) -> dict[str, str]:
    return {"deployment_id": await w.fresh_deployment(succeeded=True, branch="main")}


async def live_cron_job(w: World, role: str) -> dict[str, str]:
    """The world's live production deployment declares a cron job (as its devpush.toml would)."""
    from devpush.cron import service as cron

    job = {"name": "nightly", "schedule": "0 3 * * *", "command": "true", "timeout": 60}
    async with session_scope(w.platform.sessions) as session:
        for live in await cron.live(session=session, project_id=w.project_id):
            live.deployment.config = {**live.deployment.config, "cron": [job]}
    return {"job": "nightly"}


async def fresh_database(w: World, role: str) -> dict[str, str]:
    """A managed PostgreSQL database of the world's project (fresh: detaching uses it up)."""
    from devpush.databases import service as databases
    from devpush.projects.models import Project

    async with session_scope(w.platform.sessions) as session:
        project = await session.get(Project, w.project_id)
        assert project is not None
        database = await databases.create(
            session=session,
            settings=w.platform.settings,
            project=project,
            engine="postgres",
            name=w.unique("db"),
        )
    return {"database_id": database.id}


async def backed_up_database(w: World, role: str) -> dict[str, str]:
    """A fresh managed database with one backup of its production copy."""
    from devpush.databases import backups
    from devpush.databases.models import ManagedDatabase

    params = await fresh_database(w, role)
    async with session_scope(w.platform.sessions) as session:
        database = await session.get(ManagedDatabase, params["database_id"])
        assert database is not None
        row = await backups.backup(
            session=session,
            p=w.platform,
            database=database,
            environment_id=w.production_env_id,
        )
    return {**params, "backup_id": row.id}


async def database_table(w: World, role: str) -> dict[str, str]:
    """A fresh managed database whose production copy holds a table `t`."""
    from devpush.databases import console
    from devpush.databases.models import ManagedDatabase
    from devpush.projects.models import Project

    params = await fresh_database(w, role)
    async with session_scope(w.platform.sessions) as session:
        database = await session.get(ManagedDatabase, params["database_id"])
        project = await session.get(Project, w.project_id)
        assert database is not None and project is not None
        copy = await console.locate(
            session=session, p=w.platform, database=database, project=project,
            environment="production",
        )  # fmt: skip
    await console.query(copy, "CREATE TABLE t (x int)", write=True)
    return params | {"table": "t"}


def query_form(w: World, caller: Caller, params: dict[str, str]) -> dict[str, Any]:
    """A read-only query (writing, for admins only, is checked in test_console.py)."""
    return {"database_id": params["database_id"], "sql": "SELECT 1"}


def database_body(w: World, caller: Caller, params: dict[str, str]) -> dict[str, Any]:
    return {"engine": "postgres", "name": w.unique("db")}


async def running_preview(w: World, role: str) -> dict[str, str]:
    return {"deployment_id": await w.fresh_deployment(succeeded=True)}


async def pushed_project(w: World, role: str) -> dict[str, str]:
    """A fresh project whose push remote holds a `main` branch (the deploy form reads it)."""
    project_id = await w.fresh_project()
    bare = push_repo(w.platform.settings, project_id)
    bare.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="matrix-repo-") as work:
        for argv in (
            ["init", "-q", "-b", "main"],
            ["-c", "user.email=m@example.com", "-c", "user.name=m", "commit", "-q"]
            + ["--allow-empty", "-m", "first"],
            ["init", "-q", "--bare", str(bare)],
            ["push", "-q", str(bare), "main"],
        ):
            subprocess.run(["git", *argv], cwd=Path(work), check=True, capture_output=True)
    async with session_scope(w.platform.sessions) as session:
        envs = await projects.list_environments(session=session, project_id=project_id)
    return {"project_id": project_id, "environment_id": envs[0].id}


async def new_domain(w: World, role: str) -> dict[str, str]:
    return {"domain_id": await w.fresh_domain()}


async def new_invite(w: World, role: str) -> dict[str, str]:
    return {"invite_id": await w.fresh_invite()}


async def new_member(w: World, role: str) -> dict[str, str]:
    return {"user_id": await w.fresh_member()}


async def owner_token(w: World, role: str) -> dict[str, str]:
    return {"token_id": await w.fresh_owner_token()}


async def new_env_key(w: World, role: str) -> dict[str, str]:
    return {"key": await w.fresh_env_key()}


async def new_rule(w: World, role: str) -> dict[str, str]:
    return {"rule_id": await w.fresh_rule()}


async def new_channel(w: World, role: str) -> dict[str, str]:
    """A webhook channel of team A; its receiver (loopback, allowed here) is not listening."""
    from devpush.notifications import service as notifications
    from devpush.notifications.schemas import ChannelCreate

    w.platform.settings.notifications_allow_private = True
    body = ChannelCreate(channel="webhook", url=LOCAL_HOOK, events=["deployment.failed"])
    async with session_scope(w.platform.sessions) as session:
        channel, _ = await notifications.create_channel(
            session=session,
            settings=w.platform.settings,
            team_id=w.team_id,
            body=body,
            created_by=None,
        )
        return {"channel_id": channel.id}


def new_hook(w: World, c: Caller, p: dict[str, str]) -> dict[str, Any]:
    w.platform.settings.notifications_allow_private = True
    return {"channel": "webhook", "url": LOCAL_HOOK, "events": ["deployment.failed"]}


def new_hook_form(w: World, c: Caller, p: dict[str, str]) -> dict[str, Any]:
    w.platform.settings.notifications_allow_private = True
    return {"channel": "webhook", "target": LOCAL_HOOK, "events": "deployment.failed"}


async def hook_token(w: World, role: str) -> dict[str, str]:
    return {"token": await w.fresh_hook_token(), "branch": w.unique("hook-")}


async def unique_values(w: World, role: str) -> dict[str, str]:
    return {"unique": w.unique(f"{role.replace('_', '-')}-")}


def named(w: World, c: Caller, p: dict[str, str]) -> dict[str, Any]:
    return {"name": w.unique("n-")}


def fresh_email(w: World, c: Caller, p: dict[str, str]) -> dict[str, Any]:
    return {"email": f"{w.unique('someone')}@example.com"}


def ping(w: World, c: Caller, p: dict[str, str]) -> dict[str, Any]:
    return {"zen": "Keep it logically awesome.", "hook_id": 1}


def page_project(w: World, c: Caller, p: dict[str, str]) -> dict[str, Any]:
    return {"name": w.unique("page-"), "repo_url": "https://git.example.com/app.git"}


REPO_PATH = "/git/{team}/shop.git"
LOCAL_HOOK = "http://127.0.0.1:9/devpush-hook"  # the discard port: nothing answers
UNKNOWN = "x" * 43  # a token nobody was given
API = "/api/v1"

CASES: list[Case] = [
    # ---- public: documentation, health, static files, the page-not-found page -----------------
    Case("GET", f"{API}/openapi.json", public(200)),
    Case("GET", f"{API}/docs", public(200)),
    Case("GET", "/docs/oauth2-redirect", public(200)),
    Case("GET", "/health", public(200)),
    Case("GET", "/static", public(200), target="/static/app.css"),
    Case("GET", "/{path:path}", public(404), via="page", target="/no/such/page"),
    # ---- teams ---------------------------------------------------------------------------------
    Case("GET", f"{API}/teams", own_api(200)),
    Case("POST", f"{API}/teams", own_api(201), body=named),
    Case("GET", f"{API}/teams/{{team}}", team_api(200)),
    Case("PATCH", f"{API}/teams/{{team}}", team_api(200, "admin"), body={"name": "Team A"}),
    Case("DELETE", f"{API}/teams/{{team}}", team_api(202, "owner"), params=new_team),
    Case("GET", f"{API}/teams/{{team}}/members", team_api(200)),
    Case("GET", f"{API}/teams/{{team}}/members/{{user_id}}", team_api(200)),
    Case(
        "PATCH",
        f"{API}/teams/{{team}}/members/{{user_id}}",
        team_api(200, "admin"),
        body={"role": "member"},
    ),
    Case(
        "DELETE",
        f"{API}/teams/{{team}}/members/{{user_id}}",
        team_api(204, "admin"),
        params=new_member,
    ),
    Case("POST", f"{API}/teams/{{team}}/invites", team_api(201, "admin"), body=fresh_email),
    Case("GET", f"{API}/teams/{{team}}/invites", team_api(200, "admin")),
    Case(
        "POST",
        f"{API}/teams/{{team}}/invites/{{invite_id}}/resend",  # a new link: the old one dies
        team_api(200, "admin"),
        params=new_invite,
    ),
    Case(
        "DELETE",
        f"{API}/teams/{{team}}/invites/{{invite_id}}",
        team_api(204, "admin"),
        params=new_invite,
    ),
    # the invitation is addressed to someone else: its link alone lets nobody in
    Case("POST", f"{API}/invites/{{token}}/accept", own_api(403)),
    Case("GET", f"{API}/teams/{{team}}/audit", team_api(200, "admin")),
    # ---- the caller's own account and tokens -------------------------------------------------
    Case("GET", f"{API}/user", own_api(200)),
    Case("PATCH", f"{API}/user", own_api(200), body={"name": "Same Name"}),
    Case("POST", f"{API}/user/email", own_api(202), body=fresh_email),
    Case("DELETE", f"{API}/user", own_api(202), fresh_caller=True),
    Case("GET", f"{API}/tokens", own_api(200)),
    Case("POST", f"{API}/tokens", own_api(201), body={"name": "ci"}),
    Case(
        "DELETE",
        f"{API}/tokens/{{token_id}}",
        but(own_api(404), owner=204),  # the owner's token: nobody else sees it
        params=owner_token,
    ),
    # ---- projects, env vars ------------------------------------------------------------------
    Case(
        "POST",
        f"{API}/teams/{{team}}/projects",
        team_api(201, "admin"),
        body=lambda w, c, p: {"name": w.unique("api-"), "start_command": "python3 app.py"},
    ),
    Case("GET", f"{API}/teams/{{team}}/projects", team_api(200)),
    Case("GET", f"{API}/projects/{{project_id}}", team_api(200)),
    Case("PATCH", f"{API}/projects/{{project_id}}", team_api(200, "admin"), body={}),
    Case("DELETE", f"{API}/projects/{{project_id}}", team_api(202, "admin"), params=new_project),
    Case(
        "POST", f"{API}/projects/{{project_id}}/pause", team_api(200, "admin"), params=new_project
    ),
    Case("POST", f"{API}/projects/{{project_id}}/resume", team_api(200, "admin")),
    Case("GET", f"{API}/projects/{{project_id}}/env", team_api(200)),
    Case(
        "PUT",
        f"{API}/projects/{{project_id}}/env/{{key}}",
        team_api(200, "admin"),
        body={"value": "v"},
    ),
    Case(
        "DELETE",
        f"{API}/projects/{{project_id}}/env/{{key}}",
        team_api(204, "admin"),
        params=new_env_key,
    ),
    Case("POST", f"{API}/projects/{{project_id}}/env/{{key}}/reveal", team_api(200, "admin")),
    # ---- deployments ---------------------------------------------------------------------------
    Case(
        "POST",
        f"{API}/projects/{{project_id}}/deployments",
        team_api(201),
        body=lambda w, c, p: {"branch": w.unique("api-deploy-")},
    ),
    Case("GET", f"{API}/projects/{{project_id}}/deployments", team_api(200)),
    Case("GET", f"{API}/deployments/{{deployment_id}}", team_api(200)),
    # allowed for members; the world's project has had nothing pushed yet
    Case("GET", f"{API}/projects/{{project_id}}/plan", team_api(409)),
    Case("POST", f"{API}/deployments/{{deployment_id}}/cancel", team_api(200), params=in_flight),
    Case(
        "POST", f"{API}/deployments/{{deployment_id}}/rollback", team_api(200), params=serving_main
    ),
    Case(
        "POST",
        f"{API}/deployments/{{deployment_id}}/promote",
        team_api(200),
        params=running_preview,
    ),
    Case("POST", f"{API}/deployments/{{deployment_id}}/redeploy", team_api(201)),
    Case(
        "POST",
        f"{API}/projects/{{project_id}}/environments/{{environment}}/scale",
        team_api(202),
        target=f"{API}/projects/{{project_id}}/environments/production/scale",
        body={"replicas": 2},
    ),
    # ---- volumes, cron, metrics ----------------------------------------------------------------
    Case("GET", f"{API}/projects/{{project_id}}/volumes", team_api(200)),
    Case("GET", f"{API}/projects/{{project_id}}/cron", team_api(200)),
    Case("GET", f"{API}/projects/{{project_id}}/cron/runs", team_api(200)),
    Case(
        "POST",
        f"{API}/projects/{{project_id}}/cron/{{job}}/run",
        team_api(202),
        params=live_cron_job,
    ),
    Case("GET", f"{API}/deployments/{{deployment_id}}/metrics", team_api(200)),
    # ---- managed databases ---------------------------------------------------------------------
    Case(
        "POST",
        f"{API}/projects/{{project_id}}/databases",
        team_api(201, "admin"),
        body=database_body,
    ),
    Case("GET", f"{API}/projects/{{project_id}}/databases", team_api(200)),
    Case("GET", f"{API}/databases/{{database_id}}", team_api(200), params=fresh_database),
    Case(
        "PATCH",
        f"{API}/databases/{{database_id}}",
        team_api(200, "admin"),
        params=fresh_database,
        body={"previews": "own"},
    ),
    Case(
        "DELETE", f"{API}/databases/{{database_id}}", team_api(204, "admin"), params=fresh_database
    ),
    Case(
        "POST",
        f"{API}/databases/{{database_id}}/backups",
        team_api(201),
        params=fresh_database,
        body={"environment": "production"},
    ),
    Case("GET", f"{API}/databases/{{database_id}}/backups", team_api(200), params=fresh_database),
    Case("GET", f"{API}/databases/{{database_id}}/tables", team_api(200), params=fresh_database),
    Case(
        "GET",
        f"{API}/databases/{{database_id}}/tables/{{table:path}}",
        team_api(200),
        target=f"{API}/databases/{{database_id}}/tables/{{table}}",
        params=database_table,
    ),
    Case(
        "POST",
        f"{API}/databases/{{database_id}}/query",
        team_api(200),
        params=fresh_database,
        body={"sql": "SELECT 1"},
    ),
    Case(
        "POST",
        f"{API}/databases/{{database_id}}/restore",
        team_api(200, "admin"),
        params=backed_up_database,
        body=lambda w, c, p: {"backup_id": p["backup_id"]},
    ),
    # the platform's own metrics: off until DEVPUSH_METRICS_TOKEN is set, whoever asks
    Case("GET", "/metrics", public(404)),
    # ---- domains -------------------------------------------------------------------------------
    Case("GET", f"{API}/projects/{{project_id}}/domains", team_api(200)),
    Case(
        "POST",
        f"{API}/projects/{{project_id}}/domains",
        team_api(201, "admin"),
        body=lambda w, c, p: {"hostname": f"{w.unique('api')}.example.net"},
    ),
    Case(
        "POST",
        f"{API}/projects/{{project_id}}/domains/{{domain_id}}/verify",
        team_api(200, "admin"),
    ),
    Case(
        "DELETE",
        f"{API}/projects/{{project_id}}/domains/{{domain_id}}",
        team_api(204, "admin"),
        params=new_domain,
    ),
    # ---- notifications ---------------------------------------------------------------------------
    Case("GET", f"{API}/teams/{{team}}/notifications", team_api(200)),
    Case("POST", f"{API}/teams/{{team}}/notifications", team_api(201, "admin"), body=new_hook),
    Case("GET", f"{API}/notifications/{{channel_id}}", team_api(200), params=new_channel),
    Case(
        "PATCH",
        f"{API}/notifications/{{channel_id}}",
        team_api(200, "admin"),
        params=new_channel,
        body=lambda w, c, p: {"enabled": False},
    ),
    Case(
        "DELETE", f"{API}/notifications/{{channel_id}}", team_api(204, "admin"), params=new_channel
    ),
    Case(
        "POST",
        f"{API}/notifications/{{channel_id}}/test",
        team_api(200, "admin"),
        params=new_channel,
    ),
    Case(
        "GET",
        f"{API}/notifications/{{channel_id}}/deliveries",
        team_api(200),
        params=new_channel,
    ),
    # ---- logs and live streams -----------------------------------------------------------------
    Case("GET", f"{API}/projects/{{project_id}}/logs", team_api(200)),
    Case("GET", f"{API}/deployments/{{deployment_id}}/events", team_api(200), via="sse"),
    Case("GET", f"{API}/projects/{{project_id}}/events", team_api(200), via="sse"),
    # ---- git sources and GitHub --------------------------------------------------------------
    Case("GET", f"{API}/projects/{{project_id}}/git", team_api(200)),
    Case("POST", f"{API}/projects/{{project_id}}/deploy-hook", team_api(201, "admin")),
    Case("DELETE", f"{API}/projects/{{project_id}}/deploy-hook", team_api(204, "admin")),
    Case("GET", f"{API}/github/install-url", team_api(200, "admin"), query="team={team}"),
    Case("GET", f"{API}/github/repositories", team_api(200), query="team={team}"),
    Case(
        "PUT",
        f"{API}/projects/{{project_id}}/github",
        team_api(200, "admin"),
        params=new_project,
        body={"repository": REPO},
    ),
    Case(
        "DELETE",
        f"{API}/projects/{{project_id}}/github",
        team_api(200, "admin"),
        params=new_project,
    ),
    # ---- platform administration ---------------------------------------------------------------
    Case("GET", f"{API}/admin/signup-rules", admin_api(200)),
    Case(
        "POST",
        f"{API}/admin/signup-rules",
        admin_api(201),
        body=lambda w, c, p: {"kind": "email", "value": f"{w.unique('ok')}@example.com"},
    ),
    Case("DELETE", f"{API}/admin/signup-rules/{{rule_id}}", admin_api(204), params=new_rule),
    # ---- outside /api/v1: their credential is the signature, the secret URL, the token --------
    Case(
        "POST",
        "/api/github/webhook",
        public(202),
        via="webhook",
        body=ping,
        params=unique_values,
        headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "{unique}"},
    ),
    Case(
        "POST",
        "/api/hooks/deploy/{project_id}/{token}",
        public(201),
        params=hook_token,
        query="branch={branch}",
    ),
    Case(
        "GET",
        "/github/setup",
        public(400),  # the state is not one devpush signed
        via="page",
        query="installation_id=1&state=forged",
    ),
    Case(
        "GET",
        "/git/{team}/{repo}/{path:path}",
        # git asks for credentials on 401; a project the token cannot see is 403 (git shows
        # the message), never a hint that it exists
        but(team_api(200), outsider=403, platform_admin=403),
        via="git",
        target=f"{REPO_PATH}/info/refs",
        query="service=git-upload-pack",
    ),
    Case(
        "POST",
        "/git/{team}/{repo}/{path:path}",
        but(team_api(200), outsider=403, platform_admin=403),
        via="git",
        target=f"{REPO_PATH}/git-receive-pack",
        headers={"Content-Type": "application/x-git-receive-pack-request"},
    ),
    # ---- pages: signing in ---------------------------------------------------------------------
    Case("GET", "/auth/sign-in", but(public(303), anonymous=200), via="page"),
    Case(
        "POST",
        "/auth/sign-in",
        public(200),  # "check your email", whether or not the address has an account
        via="page",
        body=lambda w, c, p: {"email": f"{w.unique('visitor')}@example.com"},
    ),
    Case("GET", "/auth/link/{token}", public(401), via="page", target=f"/auth/link/{UNKNOWN}"),
    Case(
        "GET", "/auth/sign-up/{token}", public(401), via="page", target=f"/auth/sign-up/{UNKNOWN}"
    ),
    Case(
        "GET",
        "/auth/oauth/{provider}",
        public(404),  # no provider is configured
        via="page",
        target="/auth/oauth/github",
    ),
    Case(
        "GET",
        "/auth/oauth/{provider}/callback",
        public(404),
        via="page",
        target="/auth/oauth/github/callback",
    ),
    Case("POST", "/auth/sign-out", public(303), via="page", fresh_caller=True),
    Case("GET", "/", own_page(303), via="page"),
    # ---- pages: the account ------------------------------------------------------------------
    Case("GET", "/account", own_page(200), via="page"),
    Case("POST", "/account/profile", own_page(303), via="page", body={"name": "Same Name"}),
    Case("POST", "/account/email", own_page(303), via="page", body=fresh_email),
    Case(
        "GET",
        "/account/email/{token}",
        public(401),
        via="page",
        target=f"/account/email/{UNKNOWN}",
    ),
    Case(
        "POST",
        "/account/teams/{team}/leave",
        but(team_page(303), owner=409),  # the last owner cannot leave
        via="page",
        params=new_team,
    ),
    Case(
        "POST",
        "/account/delete",
        own_page(303),
        via="page",
        fresh_caller=True,
        body=lambda w, c, p: {"confirm": c.email or ""},
    ),
    # ---- pages: teams --------------------------------------------------------------------------
    Case("GET", "/teams/new", own_page(200), via="page"),
    Case("POST", "/teams/new", own_page(303), via="page", body=named),
    Case("GET", "/t/{team}", team_page(200), via="page"),
    Case("GET", "/t/{team}/settings", team_page(200), via="page"),
    Case(
        "POST",
        "/t/{team}/settings/name",
        team_page(303, "admin"),
        via="page",
        body={"name": "Team A"},
    ),
    Case(
        "POST",
        "/t/{team}/members/{user_id}/role",
        team_page(303, "admin"),
        via="page",
        body={"role": "member"},
    ),
    Case(
        "POST",
        "/t/{team}/members/{user_id}/remove",
        team_page(303, "admin"),
        via="page",
        params=new_member,
    ),
    # No SMTP here: the page answers with the invite link shown once (200), not a redirect.
    Case("POST", "/t/{team}/invites", team_page(200, "admin"), via="page", body=fresh_email),
    Case(
        "POST",
        "/t/{team}/invites/{invite_id}/resend",
        team_page(200, "admin"),
        via="page",
        params=new_invite,
    ),
    Case(
        "POST",
        "/t/{team}/invites/{invite_id}/revoke",
        team_page(303, "admin"),
        via="page",
        params=new_invite,
    ),
    Case(
        "POST",
        "/t/{team}/delete",
        team_page(303, "owner"),
        via="page",
        params=new_team,
        body=lambda w, c, p: {"confirm": p["team"]},
    ),
    Case("GET", "/invites/{token}", public(200), via="page"),
    Case("POST", "/invites/{token}/accept", own_page(403), via="page"),
    # ---- pages: projects -----------------------------------------------------------------------
    Case("GET", "/t/{team}/notifications", team_page(200), via="page"),
    Case(
        "POST", "/t/{team}/notifications", team_page(200, "admin"), via="page", body=new_hook_form
    ),
    Case(
        "POST",
        "/t/{team}/notifications/{channel_id}/delete",
        team_page(303, "admin"),
        via="page",
        params=new_channel,
    ),
    Case(
        "POST",
        "/t/{team}/notifications/{channel_id}/test",
        team_page(303, "admin"),
        via="page",
        params=new_channel,
    ),
    Case("GET", "/t/{team}/new", team_page(200, "admin"), via="page"),
    Case("POST", "/t/{team}/new/detect", team_page(200, "admin"), via="page", body={}),
    Case("POST", "/t/{team}/new", team_page(303, "admin"), via="page", body=page_project),
    Case("GET", "/projects/{project_id}", team_page(200), via="page"),
    Case(
        "POST",
        "/projects/{project_id}/deploy",
        team_page(303),
        via="page",
        body=lambda w, c, p: {"branch": w.unique("page-deploy-")},
    ),
    # the deploy form: members and up deploy; it reads the project's repository
    Case(
        "GET",
        "/projects/{project_id}/deploy/form",
        team_page(200),
        via="page",
        params=pushed_project,
    ),
    Case(
        "GET",
        "/projects/{project_id}/deploy/commits",
        team_page(200),
        via="page",
        params=pushed_project,
        query="branch=main",
    ),
    Case(
        "POST",
        "/projects/{project_id}/deploy/form",
        team_page(303),
        via="page",
        params=pushed_project,
        body=lambda w, c, p: {"branch": "main", "environment": p["environment_id"]},
    ),
    Case("GET", "/projects/{project_id}/settings", team_page(200), via="page"),
    Case(
        "POST",
        "/projects/{project_id}/settings/{section}",
        team_page(303, "admin"),
        via="page",
        target="/projects/{project_id}/settings/resources",
        body={},
    ),
    Case("POST", "/projects/{project_id}/environments", team_page(303, "admin"), via="page"),
    Case(
        "POST",
        "/projects/{project_id}/volumes",
        team_page(303, "admin"),
        via="page",
        body={"volumes": ""},
    ),
    Case("GET", "/projects/{project_id}/cron", team_page(200), via="page"),
    Case("GET", "/projects/{project_id}/databases", team_page(200), via="page"),
    Case(
        "POST",
        "/projects/{project_id}/databases/query",
        team_page(200),
        via="page",
        params=fresh_database,
        body=query_form,
    ),
    Case("POST", "/projects/{project_id}/cron", team_page(303, "admin"), via="page", body={}),
    Case("POST", "/projects/{project_id}/cron/{job}/run", team_page(303), via="page"),
    Case(
        "POST",
        "/projects/{project_id}/env",
        team_page(303, "admin"),
        via="page",
        body=lambda w, c, p: {"key": w.unique("PAGE_"), "value": "v"},
    ),
    Case(
        "POST",
        "/projects/{project_id}/env/delete",
        team_page(303, "admin"),
        via="page",
        params=new_env_key,
        body=lambda w, c, p: {"key": p["key"]},
    ),
    Case(
        "POST",
        "/projects/{project_id}/env/reveal",
        team_page(200, "admin"),
        via="page",
        body=lambda w, c, p: {"key": w.env_key},
    ),
    Case(
        "POST",
        "/projects/{project_id}/domains",
        team_page(303, "admin"),
        via="page",
        body=lambda w, c, p: {"hostname": f"{w.unique('page')}.example.net"},
    ),
    Case(
        "POST",
        "/projects/{project_id}/domains/{domain_id}/{action}",
        team_page(303, "admin"),
        via="page",
        params=new_domain,
        target="/projects/{project_id}/domains/{domain_id}/remove",
    ),
    Case(
        "POST",
        "/projects/{project_id}/pause",
        team_page(303, "admin"),
        via="page",
        params=new_project,
    ),
    Case(
        "POST",
        "/projects/{project_id}/delete",
        team_page(303, "admin"),
        via="page",
        params=new_named_project,
        body=lambda w, c, p: {"confirm": p["name"]},
    ),
    # ---- pages: deployments and logs -------------------------------------------------------------
    Case("GET", "/projects/{project_id}/deployments", team_page(200), via="page"),
    Case("GET", "/projects/{project_id}/deployments/table", team_page(200), via="page"),
    Case("GET", "/deployments/{deployment_id}", team_page(200), via="page"),
    Case("GET", "/deployments/{deployment_id}/summary", team_page(200), via="page"),
    Case(
        "POST",
        "/deployments/{deployment_id}/{action}",
        team_page(303),
        via="page",
        params=in_flight,
        target="/deployments/{deployment_id}/cancel",
    ),
    Case("GET", "/projects/{project_id}/logs", team_page(200), via="page"),
    # ---- pages: platform administration ----------------------------------------------------------
    Case("GET", "/admin", admin_page(200), via="page"),
    Case(
        "POST",
        "/admin/allowlist",
        admin_page(303),
        via="page",
        body=lambda w, c, p: {"kind": "email", "value": f"{w.unique('ok')}@example.com"},
    ),
    Case("POST", "/admin/allowlist/{rule_id}/delete", admin_page(303), via="page", params=new_rule),
    Case(  # the test platform runs the process runtime: an admin is told to build on the host
        "POST",
        "/admin/images/{name:path}/build",
        admin_page(409),
        via="page",
        target="/admin/images/python-3.11/build",
    ),
]


def test_every_route_has_an_expectation(app: FastAPI) -> None:
    """A route without a row fails here: decide who may call it, then add the row."""
    served = set(route_keys(app))
    table = [(c.method, c.path) for c in CASES]
    assert len(table) == len(set(table)), "one row per route"
    missing = sorted(served - set(table))
    stale = sorted(set(table) - served)
    assert not missing, f"routes without an expectation in the matrix: {missing}"
    assert not stale, f"rows for routes the app no longer serves: {stale}"
    for case in CASES:
        assert set(case.expect) == set(ROLES), (case.method, case.path)
        outcomes = set(case.expect.values())
        assert outcomes <= {200, 201, 202, 204, 303, 400, 401, 403, 404, 409, SIGN_IN}, case


GROUPS = {
    "api": lambda c: c.path.startswith("/api/v1") or c.via == "sse",
    "pages": lambda c: c.via == "page",
    "outside": lambda c: not c.path.startswith("/api/v1") and c.via not in ("page", "sse"),
}


@pytest.mark.parametrize("group", sorted(GROUPS))
async def test_matrix(world: World, group: str) -> None:
    """Every role on every route of the group gets exactly its expected outcome (and the
    security headers). Failures are collected, so one run shows every mismatch."""
    cases = [c for c in CASES if GROUPS[group](c)]
    failures = [
        problem
        for case in cases
        for role in ROLES
        if (problem := await run_case(world, case, role)) is not None
    ]
    assert not failures, f"{len(failures)} unexpected outcomes:\n" + "\n".join(failures)


def needed_scope(case: Case) -> str:
    """The token scope an API route needs, read from its row: what only admins may do needs
    'admin'; reading needs 'read'; other team actions open to members (deploying) 'deploy';
    changing the caller's own account (tokens, new teams) 'admin'."""
    if case.expect["member"] != case.expect["owner"]:
        return "admin"
    if case.method == "GET":
        return "read"
    return "deploy" if case.expect["outsider"] == 404 else "admin"


@pytest.mark.parametrize("scopes", [["read"], ["deploy"]])
async def test_token_scopes(world: World, scopes: list[str]) -> None:
    """The owner with a token of smaller scope: every API route the owner may call answers
    as before where the scope covers it, and 403 where it does not."""
    owner = world.callers["owner"]
    scoped = Caller(
        role=f"{scopes[0]}-scoped token",
        http=owner.http,
        user_id=owner.user_id,
        token=await token_for(world.platform, owner.user_id or "", scopes=scopes),
    )
    order = ["read", "deploy", "admin"]
    failures = []
    for case in CASES:
        if case.via not in ("api", "sse") or not case.path.startswith(API):
            continue
        allowed = case.expect["owner"]
        if allowed not in (200, 201, 202, 204) or case.path.endswith(("/openapi.json", "/docs")):
            continue
        covered = order.index(scopes[0]) >= order.index(needed_scope(case))
        expected = allowed if covered else 403
        problem = await run_case(world, case, "owner", expected=expected, as_=scoped)
        if problem is not None:
            failures.append(problem)
    assert not failures, f"{len(failures)} unexpected outcomes:\n" + "\n".join(failures)
