"""What every page shares: the templates and their filters, the signed-in viewer, the route
class that turns devpush errors into HTML (never JSON or a traceback), flash messages,
redirects that work for HTMX, and form validation errors mapped to fields."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.csrf import csrf_token, verify_csrf
from devpush.api.deps import SessionDep
from devpush.auth.models import User
from devpush.auth.service import SCOPES, Principal
from devpush.db import utcnow
from devpush.errors import DevpushError, Invalid, RateLimited
from devpush.platform import Platform
from devpush.teams.models import Role
from devpush.teams.service import list_teams

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))

# (label, tone) of a deployment's status: what the pages and their scripts show.
STATUS_LABELS: dict[str, tuple[str, str]] = {
    "prepare": ("Preparing", "progress"),
    "deploy": ("Building", "progress"),
    "finalize": ("Finalizing", "progress"),
    "fail": ("Failing", "error"),
    "succeeded": ("Ready", "ok"),
    "failed": ("Error", "error"),
    "canceled": ("Canceled", "muted"),
    "skipped": ("Skipped", "muted"),
}


def status_of(status: str, conclusion: str | None) -> tuple[str, str]:
    key = conclusion if status == "completed" and conclusion else status
    return STATUS_LABELS.get(key, (key.title(), "muted"))


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    seconds = (utcnow() - moment).total_seconds()
    for limit, unit in ((60, "s"), (3600, "m"), (86400, "h"), (86400 * 30, "d")):
        if seconds < limit:
            size = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
            return f"{max(0, int(seconds // size))}{unit} ago"
    return moment.strftime("%b %d, %Y")


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest:02d}s"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


templates.env.filters.update(
    ago=_ago,
    duration=_duration,
    when=_when,
    short=lambda sha: (sha or "")[:7],
    first_line=lambda text: (text or "").strip().splitlines()[0][:120] if text else "",
    tojson_attr=lambda value: json.dumps(value),
)
templates.env.globals.update(status_of=status_of, STATUS_LABELS=STATUS_LABELS, now=utcnow)


# ---- the viewer ---------------------------------------------------------------------------
class SignInRequired(Exception):
    """The page needs a signed-in user; PageRoute redirects to the sign-in page."""


@dataclass(frozen=True)
class Me:
    """The signed-in user as plain data: templates may render it after a rollback (which
    expires ORM objects, and an expired object cannot load itself in async code)."""

    id: str
    email: str
    name: str
    is_admin: bool


@dataclass(frozen=True)
class TeamRef:
    id: str
    slug: str
    name: str
    personal: bool


@dataclass
class Viewer:
    user: User
    principal: Principal
    me: Me
    teams: list[tuple[TeamRef, Role]]

    def role_in(self, team_id: str) -> Role | None:
        return next((role for team, role in self.teams if team.id == team_id), None)


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


async def session_user(request: Request, session: AsyncSession) -> User | None:
    user_id = request.session.get("user_id")
    user = await session.get(User, user_id) if isinstance(user_id, str) else None
    return user if user is not None and user.status == "active" else None


async def get_viewer(request: Request, session: SessionDep) -> Viewer:
    user = await session_user(request, session)
    if user is None:
        raise SignInRequired
    viewer = Viewer(
        user=user,
        principal=Principal(user_id=user.id, is_admin=user.is_admin, scopes=frozenset(SCOPES)),
        me=Me(id=user.id, email=user.email, name=user.name, is_admin=user.is_admin),
        teams=[
            (TeamRef(id=t.id, slug=t.slug, name=t.name, personal=t.personal), role)
            for t, role in await list_teams(session=session, user_id=user.id)
        ],
    )
    request.state.viewer = viewer
    return viewer


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


# ---- rendering ----------------------------------------------------------------------------
def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def flash(request: Request, message: str, tone: str = "ok") -> None:
    request.session["flash"] = [*request.session.get("flash", []), [tone, message]][-5:]


def _pop_flashes(request: Request) -> list[list[str]]:
    flashes: list[list[str]] = request.session.pop("flash", [])
    return flashes


def render(
    request: Request,
    template: str,
    /,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    context.setdefault("viewer", getattr(request.state, "viewer", None))
    if "csrf_token" not in context:
        context["csrf_token"] = csrf_token(request)
    context.setdefault("flashes", lambda: _pop_flashes(request))
    return templates.TemplateResponse(
        request, template, context, status_code=status_code, headers=headers
    )


def redirect(request: Request, url: str) -> Response:
    """A 303 for a form post; HX-Redirect for HTMX (which would otherwise swap the page)."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, exc: DevpushError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    titles = {
        401: "Please sign in again",
        403: "Not allowed",
        404: "Not found",
        409: "That did not work",
        422: "Please check your input",
        429: "Slow down",
    }
    title = titles.get(exc.status_code, "Something went wrong")
    if is_htmx(request):
        return render(
            request,
            "partials/toast.html",
            status_code=exc.status_code,
            headers=headers,
            tone="error",
            title=title,
            message=exc.message,
        )
    return render(
        request,
        "error.html",
        status_code=exc.status_code,
        headers=headers,
        title=title,
        message=exc.message,
    )


def sign_in_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    url = "/auth/sign-in" + (f"?next={quote(target)}" if target != "/" else "")
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


class PageRoute(APIRoute):
    """Page routes answer HTML on every error: a page, or a toast fragment for HTMX."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                return sign_in_redirect(request)
            except DevpushError as exc:
                return error_page(request, exc)
            except RequestValidationError as exc:
                fields = sorted(
                    {str(e.get("loc", ("", ""))[-1]) for e in exc.errors() if e.get("loc")}
                )
                message = "Some fields are missing or malformed: " + ", ".join(fields)
                return error_page(request, Invalid(message))

        return route


def page_router() -> APIRouter:
    """A router of pages: HTML errors (PageRoute) and the CSRF check on every route."""
    return APIRouter(
        include_in_schema=False, route_class=PageRoute, dependencies=[Depends(verify_csrf)]
    )


# ---- forms --------------------------------------------------------------------------------
def field_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic errors as {field: message} for the templates (first error per field)."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else "__all__"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        errors.setdefault(field, message)
    return errors


def form_text(form: Any, name: str, limit: int = 65536) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def safe_next(value: str | None) -> str:
    """Only same-site paths: never `//host`, `/\\host` or a full URL, and nothing with a
    backslash, whitespace or a control character (browsers drop tabs and newlines from URLs,
    so `/<tab>/evil.com` would become `//evil.com`)."""
    if (
        value
        and len(value) <= 2048
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and value.isprintable()
        and not any(c.isspace() for c in value)
    ):
        return value
    return "/"
