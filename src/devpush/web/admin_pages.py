"""The platform admin page: users, the sign-up allowlist, the runtime's status and runner images.
Only platform admins see it (everyone else gets a 404)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.auth import signup
from devpush.auth.models import User
from devpush.deployments.models import ACTIVE_STATUSES, Deployment
from devpush.errors import Conflict, DevpushError, Invalid, NotFound
from devpush.platform import Platform
from devpush.teams.models import TeamMember
from devpush.web.common import Viewer, ViewerDep, flash, page_router, platform_of, redirect, render

router = page_router()
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


async def _runner_images(platform: Platform) -> tuple[list[dict[str, Any]], str | None]:
    """Runner images the container engine has (docker runtime only)."""
    settings = platform.settings
    if not settings.docker_host:
        return [], None
    import aiodocker

    try:
        async with aiodocker.Docker(url=settings.docker_host) as docker:
            images = await asyncio.wait_for(docker.images.list(), CHECK_TIMEOUT)
    except (aiodocker.DockerError, TimeoutError, OSError) as exc:
        return [], f"the container engine did not answer: {exc}"
    rows = []
    for image in images:
        for tag in image.get("RepoTags") or []:
            if "devpush-runner" in tag:
                rows.append(
                    {
                        "tag": tag,
                        "size_mb": round((image.get("Size") or 0) / 1_000_000),
                        "default": tag.endswith(settings.runner_image)
                        or tag == settings.runner_image,
                    }
                )
    return sorted(rows, key=lambda r: r["tag"]), None


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
    images, images_error = await _runner_images(platform)
    return render(
        request,
        "admin/index.html",
        status_code=status_code,
        users=users,
        team_counts=team_counts,
        rules=await signup.list_rules(session=session),
        runtimes=await _runtime_status(platform),
        images=images,
        images_error=images_error,
        services=await _services(session, platform),
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
