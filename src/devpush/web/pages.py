"""Server-rendered pages: sign-in by one-time link, the dashboard home, and the page served
for an unknown deployment hostname."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from devpush.api.deps import SessionDep
from devpush.auth.models import User
from devpush.auth.service import consume_sign_in_link
from devpush.errors import Unauthorized
from devpush.settings import Settings

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def _host(request: Request) -> str:
    return request.headers.get("host", "").split(":")[0].lower()


def is_deployment_host(settings: Settings, host: str) -> bool:
    return host != settings.app_hostname and host.endswith("." + settings.deploy_domain)


async def unknown_host_middleware(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Traefik's catch-all sends unknown deployment hostnames here."""
    platform = getattr(request.app.state, "platform", None)
    if platform is not None and is_deployment_host(platform.settings, _host(request)):
        return render(
            request,
            "not_found.html",
            status_code=404,
            host=_host(request),
            app_url=platform.settings.app_url,
        )
    return await call_next(request)


@router.get("/auth/link/{token}")
async def sign_in_with_link(token: str, request: Request, session: SessionDep) -> Response:
    try:
        user = await consume_sign_in_link(session=session, token=token)
    except Unauthorized as exc:
        return render(
            request,
            "message.html",
            status_code=401,
            title="Sign-in link not valid",
            message=exc.message,
        )
    request.session.clear()
    request.session["user_id"] = user.id
    return RedirectResponse("/", status_code=303)


@router.post("/auth/sign-out")
async def sign_out(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/", status_code=303)


@router.get("/")
async def home(request: Request, session: SessionDep) -> Response:
    from devpush.projects.service import list_projects
    from devpush.teams.service import list_teams

    user_id = request.session.get("user_id")
    user = await session.get(User, user_id) if user_id else None
    if user is None:
        return render(
            request,
            "message.html",
            title="Sign in to devpush",
            message="Open the sign-in link printed by `devpush up`, or create one "
            "with `devpush user link --email you@example.com`.",
        )
    teams = []
    for team, role in await list_teams(session=session, user_id=user.id):
        projects = await list_projects(session=session, team_id=team.id)
        teams.append({"team": team, "role": role, "projects": projects})
    return render(request, "home.html", user=user, teams=teams)
