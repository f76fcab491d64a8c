"""Server-rendered pages: signing in (email links, GitHub, Google), the account settings, the
dashboard's entry point, and the page served for an unknown deployment hostname. The team,
project, deployment and admin pages live beside this module; `router` holds them all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError

from devpush.accounts import oauth, signup
from devpush.api.deps import SessionDep, client_ip
from devpush.api.errors import error_response
from devpush.audit.service import record
from devpush.auth import mail
from devpush.auth.models import User
from devpush.auth.service import consume_sign_in_link, normalize_email
from devpush.deployments import service as deployments
from devpush.errors import Conflict, DevpushError, Invalid, NotFound, RateLimited, Unauthorized
from devpush.settings import Settings
from devpush.teams import service as teams
from devpush.web.common import (
    ViewerDep,
    error_page,
    field_errors,
    flash,
    get_viewer,
    page_router,
    platform_of,
    redirect,
    render,
    safe_next,
    session_user,
)

STATIC_DIR = Path(__file__).with_name("static")
router = APIRouter(include_in_schema=False)
pages = page_router()


def _host(request: Request) -> str:
    return request.headers.get("host", "").split(":")[0].lower()


def is_deployment_host(settings: Settings, host: str) -> bool:
    return host != settings.app_hostname and host.endswith("." + settings.deploy_domain)


async def unknown_host_middleware(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Traefik's catch-all sends unknown deployment hostnames here, and the hostnames of a
    deployment whose app exited (its route is pulled while it restarts, or once it crashed):
    those answer 503."""
    platform = getattr(request.app.state, "platform", None)
    host = _host(request)
    if platform is not None and is_deployment_host(platform.settings, host):
        label = host.removesuffix("." + platform.settings.deploy_domain)
        async with platform.sessions() as session:
            health = await deployments.health_of_hostname(session=session, label=label)
        if health is not None:
            return render(
                request,
                "unavailable.html",
                status_code=503,
                headers={"Retry-After": "5"} if health == "restarting" else None,
                host=host,
                health=health.value,
                app_url=platform.settings.app_url,
                csrf_token="",
            )
        return render(
            request,
            "not_found.html",
            status_code=404,
            host=host,
            app_url=platform.settings.app_url,
            csrf_token="",
        )
    return await call_next(request)


# ---- signing in ---------------------------------------------------------------------------------
def _signed_in(request: Request, user: User) -> Response:
    """Start a fresh session for `user` (no fixation) and go where they were headed."""
    target = safe_next(request.session.get("next"))
    request.session.clear()
    request.session["user_id"] = user.id
    return redirect(request, target)


def _sign_in_page(
    request: Request,
    *,
    email: str = "",
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    settings = platform_of(request).settings
    return render(
        request,
        "auth/sign_in.html",
        status_code=status_code,
        headers=headers,
        email=email,
        errors=errors or {},
        providers=[(p, oauth.PROVIDERS[p]) for p in oauth.configured(settings)],
    )


@pages.get("/auth/sign-in")
async def sign_in_page(
    request: Request,
    session: SessionDep,
    next: Annotated[str | None, Query(max_length=500)] = None,
    email: Annotated[str, Query(max_length=320)] = "",
) -> Response:
    if next:
        request.session["next"] = safe_next(next)
    if await session_user(request, session) is not None:
        return redirect(request, safe_next(request.session.pop("next", None)))
    return _sign_in_page(request, email=email)


@pages.post("/auth/sign-in")
async def request_sign_in(
    request: Request, session: SessionDep, email: Annotated[str, Form(max_length=400)] = ""
) -> Response:
    platform = platform_of(request)
    try:
        address = normalize_email(email)
    except Invalid:
        return _sign_in_page(
            request, email=email, errors={"email": "Enter an email address"}, status_code=422
        )
    try:
        await signup.limit_sign_in_requests(platform.redis, email=address, ip=client_ip(request))
    except RateLimited as exc:
        return _sign_in_page(
            request,
            email=address,
            errors={"__all__": f"{exc.message} (about {exc.retry_after // 60 + 1} min)."},
            status_code=429,
            headers={"Retry-After": str(exc.retry_after)},
        )
    message = await signup.request_sign_in(
        session=session, settings=platform.settings, email=address
    )
    if message is not None:
        await mail.send(platform.settings, message)
    return render(request, "auth/check_email.html", email=address)


@pages.get("/auth/link/{token}")
async def sign_in_with_link(token: str, request: Request, session: SessionDep) -> Response:
    try:
        user = await consume_sign_in_link(session=session, token=token[:200])
    except Unauthorized as exc:
        return _link_invalid(request, exc)
    if user.status != "active":
        return _link_invalid(request, Unauthorized("this account is being deleted"))
    await signup.ensure_personal_team(session=session, user=user)
    return _signed_in(request, user)


@pages.get("/auth/sign-up/{token}")
async def sign_up_with_link(token: str, request: Request, session: SessionDep) -> Response:
    try:
        user = await signup.consume_sign_up(session=session, token=token[:200])
    except DevpushError as exc:
        await session.rollback()
        return _link_invalid(request, exc)
    return _signed_in(request, user)


def _link_invalid(request: Request, exc: DevpushError) -> Response:
    return render(
        request,
        "message.html",
        status_code=exc.status_code,
        title="This link does not work",
        message=exc.message,
    )


@pages.get("/auth/oauth/{provider}")
async def oauth_start(provider: str, request: Request) -> Response:
    return await oauth.redirect(request, platform_of(request).settings, provider)


@pages.get("/auth/oauth/{provider}/callback")
async def oauth_callback(provider: str, request: Request, session: SessionDep) -> Response:
    settings = platform_of(request).settings
    try:
        account = await oauth.account_from_callback(request, settings, provider)
        user = await oauth.sign_in_with(session=session, account=account)
        await signup.ensure_personal_team(session=session, user=user)
    except DevpushError as exc:
        await session.rollback()
        return render(
            request,
            "message.html",
            status_code=exc.status_code,
            title="Sign-in did not work",
            message=exc.message,
        )
    return _signed_in(request, user)


@pages.post("/auth/sign-out")
async def sign_out(request: Request) -> Response:
    request.session.clear()
    return redirect(request, "/auth/sign-in")


# ---- the entry point ----------------------------------------------------------------------------
@pages.get("/")
async def home(request: Request, session: SessionDep) -> Response:
    if await session_user(request, session) is None:
        return redirect(request, "/auth/sign-in")
    viewer = await get_viewer(request, session)
    if not viewer.teams:
        return redirect(request, "/teams/new")
    last = request.session.get("team")
    slugs = [t.slug for t, _ in viewer.teams]
    return redirect(request, f"/t/{last if last in slugs else slugs[0]}")


# ---- account settings ---------------------------------------------------------------------------
class ProfileForm(BaseModel):
    name: str = Field(min_length=1, max_length=200)


async def _account_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    *,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    values: dict[str, str] | None = None,
) -> Response:
    blocking = await teams.teams_needing_owner(session=session, user_id=viewer.me.id)
    owners = {t.id: await teams.owner_count(session=session, team_id=t.id) for t, _ in viewer.teams}
    return render(
        request,
        "account/settings.html",
        status_code=status_code,
        errors=errors or {},
        values=values or {},
        blocking=blocking,
        owners=owners,
    )


@pages.get("/account")
async def account(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    return await _account_page(request, viewer, session)


@pages.post("/account/profile")
async def account_profile(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    name: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    try:
        form = ProfileForm(name=name.strip())
    except ValidationError as exc:
        return await _account_page(
            request,
            viewer,
            session,
            errors=field_errors(exc),
            status_code=422,
            values={"name": name},
        )
    viewer.user.name = form.name
    flash(request, "Your name is saved.")
    return redirect(request, "/account")


@pages.post("/account/email")
async def account_email(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    email: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    platform = platform_of(request)
    try:
        message = await signup.request_email_change(
            session=session, settings=platform.settings, user=viewer.user, new_email=email
        )
    except (Invalid, Conflict) as exc:
        return await _account_page(
            request,
            viewer,
            session,
            errors={"email": exc.message},
            status_code=422,
            values={"email": email},
        )
    await mail.send(platform.settings, message)
    flash(request, f"We sent a confirmation link to {message.to}. Open it to switch.", "info")
    return redirect(request, "/account")


@pages.get("/account/email/{token}")
async def account_email_confirm(token: str, request: Request, session: SessionDep) -> Response:
    try:
        user = await signup.consume_email_change(session=session, token=token[:200])
    except DevpushError as exc:
        await session.rollback()
        return _link_invalid(request, exc)
    flash(request, f"Your email address is now {user.email}.")
    return redirect(request, "/account")


@pages.post("/account/teams/{team}/leave")
async def account_leave_team(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    from devpush.teams.access import Action, load_team

    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.read
    )
    role = viewer.role_in(row.id)
    assert role is not None
    await teams.remove_member(
        session=session, team_id=row.id, user_id=viewer.me.id, actor_role=role
    )
    await record(
        session=session,
        principal=viewer.principal,
        action="member.leave",
        resource_type="user",
        resource_id=viewer.me.id,
        team_id=row.id,
        ip=client_ip(request),
    )
    flash(request, f"You left {row.name}.")
    return redirect(request, "/account")


@pages.post("/account/delete")
async def account_delete(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    confirm: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    """Delete the account (a job): the user's sole-member teams go with it, with their
    projects and deployments. Teams that would be left without an owner block it."""
    from devpush.accounts.account import start_deletion
    from devpush.queue import enqueue_delete_user

    if confirm.strip().lower() != viewer.me.email:
        return await _account_page(
            request,
            viewer,
            session,
            errors={"confirm": "Type your email address to confirm"},
            status_code=422,
        )
    await start_deletion(session=session, user=viewer.user)
    await record(
        session=session,
        principal=viewer.principal,
        action="user.delete",
        resource_type="user",
        resource_id=viewer.me.id,
        team_id=None,
        ip=client_ip(request),
    )
    await session.commit()
    await enqueue_delete_user(platform_of(request).redis, viewer.me.id)
    request.session.clear()
    flash(request, "Your account is being deleted. Goodbye!")
    return redirect(request, "/auth/sign-in")


# ---- everything together ------------------------------------------------------------------------
def _assemble() -> None:
    from devpush.web import (
        admin_pages,
        cron_pages,
        database_pages,
        deploy_pages,
        deployment_pages,
        notification_pages,
        project_pages,
        settings_pages,
        team_pages,
    )

    router.include_router(pages)
    for module in (
        team_pages,
        project_pages,
        deploy_pages,
        settings_pages,
        cron_pages,
        database_pages,
        deployment_pages,
        notification_pages,
        admin_pages,
    ):
        router.include_router(module.router)
    router.add_api_route("/{path:path}", not_found, methods=["GET"], include_in_schema=False)


async def not_found(path: str, request: Request) -> Response:
    """Unknown paths: JSON under /api/, a page everywhere else."""
    if path.startswith("api/"):
        return error_response(404, "not_found", "no such API route")
    return error_page(request, NotFound("There is no page at this address."))


_assemble()
