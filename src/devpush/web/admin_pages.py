"""The platform admin page: users, the sign-up allowlist, the runtime's status and the
runner-image catalog (devpush.runtime.runner_images), with a button per image to build it.
Only platform admins see it (everyone else gets a 404)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import runner_builds
from devpush.accounts import signup
from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth.models import User
from devpush.deployments.models import ACTIVE_STATUSES, Deployment
from devpush.errors import Conflict, DevpushError, Invalid, NotConfigured, NotFound
from devpush.outbox import dispatch as outbox
from devpush.platform import Platform
from devpush.queue import enqueue_build_runner_image
from devpush.runtime import runner_images
from devpush.teams.models import TeamMember
from devpush.web.common import Viewer, ViewerDep, flash, page_router, platform_of, redirect, render

router = page_router()
SUBSCRIBER_FIELDS = ("name", "delivered", "failures", "last_error", "failed_at", "retry_at")
CHECK_TIMEOUT = 5.0


def _admin(viewer: Viewer) -> None:
    if not viewer.me.is_admin:
        raise NotFound("There is no page at this address.")


async def _runtime_status(platform: Platform) -> list[dict[str, Any]]:
    rows = []
    for name in platform.runtimes.available():
        try:
            info = await asyncio.wait_for(platform.runtimes.get(name).describe(), CHECK_TIMEOUT)
            rows.append({"name": name, "ok": True, "info": info})
        except (DevpushError, TimeoutError, OSError) as exc:
            message = exc.message if isinstance(exc, DevpushError) else str(exc) or "timed out"
            rows.append({"name": name, "ok": False, "error": message})
    return rows


async def _images(session: AsyncSession, platform: Platform) -> dict[str, Any]:
    """The runner-image catalog, what the script can build, and the builds' states."""
    settings = platform.settings
    known: list[runner_images.Target] = []
    images: list[runner_images.RunnerImage] = []
    error = None
    try:
        known = await runner_images.targets(settings)
        images = await runner_images.catalog(settings, known=known)
    except DevpushError as exc:
        error = exc.message
    runner_builds.attach_users(
        images, await runner_builds.users(session=session, default_image=settings.runner_image)
    )
    states = await runner_builds.read_states(platform, [t.name for t in known])
    present = {i.name for i in images if i.name}
    return {
        "images": images,
        "error": error,
        "targets": [{"target": t, "present": t.name in present} for t in known],
        "states": states,
        "cannot_build": runner_images.cannot_build(settings),
        "building": any(s["state"] in runner_images.IN_PROGRESS for s in states.values()),
    }


async def _services(session: AsyncSession, platform: Platform) -> dict[str, Any]:
    redis_ok = True
    try:
        await asyncio.wait_for(platform.redis.ping(), CHECK_TIMEOUT)
        health = await platform.redis.get("arq:queue:health-check")
    except (OSError, TimeoutError):
        redis_ok, health = False, None
    active = await session.scalar(
        select(func.count()).select_from(Deployment).where(Deployment.status.in_(ACTIVE_STATUSES))
    )
    return {
        "database": True,
        "redis": redis_ok,
        "worker": health.decode() if isinstance(health, bytes) else health,
        "active_deployments": active or 0,
    }


async def _subscribers(session: AsyncSession) -> list[dict[str, Any]]:
    rows = []
    for cursor in await outbox.cursors(session):
        waiting = await outbox.pending(session, cursor.name)
        rows.append({**{c: getattr(cursor, c) for c in SUBSCRIBER_FIELDS}, "waiting": waiting})
    return rows


async def _page(
    request: Request,
    session: AsyncSession,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    platform = platform_of(request)
    team_counts = dict(
        (
            await session.execute(
                select(TeamMember.user_id, func.count()).group_by(TeamMember.user_id)
            )
        ).all()
    )
    users = list(await session.scalars(select(User).order_by(User.created_at)))
    return render(
        request,
        "admin/index.html",
        status_code=status_code,
        users=users,
        team_counts=team_counts,
        rules=await signup.list_rules(session=session),
        runtimes=await _runtime_status(platform),
        images=await _images(session, platform),
        services=await _services(session, platform),
        subscribers=await _subscribers(session),
        settings=platform.settings,
        errors=errors or {},
        values=values or {},
    )


@router.get("/admin")
async def admin(request: Request, viewer: ViewerDep, session: SessionDep) -> Response:
    _admin(viewer)
    return await _page(request, session)


@router.post("/admin/allowlist")
async def add_rule(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    kind: Annotated[str, Form(max_length=20)] = "email",
    value: Annotated[str, Form(max_length=400)] = "",
) -> Response:
    _admin(viewer)
    try:
        rule = await signup.add_rule(
            session=session, kind=kind, value=value, created_by=viewer.me.id
        )
    except (Invalid, Conflict) as exc:
        return await _page(
            request,
            session,
            errors={"value": exc.message},
            values={"kind": kind, "value": value},
            status_code=422,
        )
    await record(
        session=session,
        principal=viewer.principal,
        action="signup_rule.add",
        resource_type="signup_rule",
        resource_id=rule.id,
        team_id=None,
        ip=client_ip(request),
        data={"kind": rule.kind, "value": rule.value},
    )
    flash(request, f"{rule.value} may now sign up.")
    return redirect(request, "/admin#allowlist")


@router.post("/admin/allowlist/{rule_id}/delete")
async def remove_rule(
    rule_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    _admin(viewer)
    rule = await signup.remove_rule(session=session, rule_id=rule_id)
    await record(
        session=session,
        principal=viewer.principal,
        action="signup_rule.remove",
        resource_type="signup_rule",
        resource_id=rule.id,
        team_id=None,
        ip=client_ip(request),
        data={"kind": rule.kind, "value": rule.value},
    )
    flash(request, f"{rule.value} removed from the allowlist.")
    return redirect(request, "/admin#allowlist")


@router.post("/admin/images/{name:path}/build")  # any name: a clear refusal below
async def build_image(
    name: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    _admin(viewer)
    settings = platform_of(request).settings
    name = runner_images.validate([name], await runner_images.targets(settings))[0]
    if reason := runner_images.cannot_build(platform_of(request).settings):
        raise NotConfigured(
            f"The platform can't build runner images: {reason}. "
            f"Build it on the host: `{runner_images.host_command(name)}`."
        )
    platform = platform_of(request)
    # Queued first: a quick build's worker may finish before this request goes on. A build
    # already running writes its own state back with its next line.
    await runner_builds.mark_queued(platform, name, refresh=False)
    if not await enqueue_build_runner_image(platform.redis, name):
        flash(request, f"{name} is already being built.", "error")
        return redirect(request, "/admin#images")
    await record(
        session=session,
        principal=viewer.principal,
        action="runner_image.build",
        resource_type="runner_image",
        resource_id=name,
        team_id=None,
        ip=client_ip(request),
        data={"name": name},
    )
    flash(request, f"Building {name}: its output follows below.")
    return redirect(request, "/admin#images")
