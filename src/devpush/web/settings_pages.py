"""Project settings pages: general, build & deploy, resources, environments, environment
variables (values stay on the server until revealed), domains, and the danger zone (pause,
delete). Members see the settings read-only; every change needs the `manage` action.

Each section is its own form: with HTMX it re-renders just that section (with the errors next
to their fields and nothing saved); without, it redirects back or re-renders the page."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.deployments.routing import sync_project
from devpush.deployments.volumes import volume_report
from devpush.domains import service as domains
from devpush.errors import Conflict, Forbidden, Invalid, NotFound, RuntimeFailure
from devpush.platform import Platform
from devpush.projects import env, volumes
from devpush.projects import service as projects
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.projects.repository import check_local_url
from devpush.projects.schemas import ProjectUpdate
from devpush.teams.access import Action
from devpush.teams.models import Team
from devpush.web.common import (
    Viewer,
    ViewerDep,
    field_errors,
    flash,
    form_text,
    is_htmx,
    page_router,
    platform_of,
    redirect,
    render,
)
from devpush.web.project_pages import environment_url, project_context

router = page_router()
SECTIONS = {
    "general": ("name", "production_branch", "repo_url", "preview_deployments"),
    "build": (
        "root_directory",
        "build_command",
        "pre_deploy_command",
        "start_command",
        "port",
        "health_path",
    ),
    "resources": ("cpus", "memory_mb", "replicas", "runtime"),
}


async def _context(
    request: Request, viewer: Viewer, session: AsyncSession, project: Project
) -> dict[str, Any]:
    platform = platform_of(request)
    environments = await projects.list_environments(session=session, project_id=project.id)
    return {
        **await project_context(viewer, session, project),
        "environments": environments,
        "env_urls": {e.id: environment_url(platform, project, e) for e in environments},
        "env_vars": await env.list_vars(session=session, project_id=project.id),
        "domains": await domains.list_for_project(session=session, project_id=project.id),
        "env_names": {e.id: e.name for e in environments},
        "runtimes": platform.runtimes.available(),
        "verify_domains": platform.settings.verify_domains,
        **await _volumes_context(platform, session, project),
        "errors": {},
        "values": {},
        "notice": {},
    }


async def _volumes_context(
    platform: Platform, session: AsyncSession, project: Project
) -> dict[str, Any]:
    lines = "\n".join(
        " ".join(str(x) for x in (v["name"], v["mount_path"], v.get("size_mb")) if x)
        for v in volumes.declared(project.config)
    )
    try:
        report = await volume_report(session=session, p=platform, project=project)
    except RuntimeFailure as exc:
        return {"volume_report": [], "volume_lines": lines, "volume_error": exc.message}
    return {"volume_report": report, "volume_lines": lines, "volume_error": ""}


def _parse_volumes(text: str) -> list[dict[str, Any]]:
    """`name /mount/path [size]` lines; the rules are ProjectUpdate's."""
    found: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].isdigit()):
            raise Invalid(f"line {number}: write name /mount/path, then a size in MiB if any")
        size = int(parts[2]) if len(parts) == 3 else None
        found.append({"name": parts[0], "mount_path": parts[1], "size_mb": size})
    return found


@router.post("/projects/{project_id}/volumes")
async def save_volumes(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await _manage(viewer, session, project_id)
    text = form_text(await request.form(), "volumes", 8192)
    try:
        body = ProjectUpdate.model_validate({"volumes": _parse_volumes(text)})
        async with session.begin_nested():
            await projects.update_project(session=session, project=project, body=body)
    except ValidationError as exc:
        first = exc.errors()[0]
        return await _section(
            request, viewer, session, project, "volumes",
            errors={"volumes": str(first["msg"]).removeprefix("Value error, ")},
            values={"volumes": text},
        )  # fmt: skip
    except Invalid as exc:
        return await _section(
            request, viewer, session, project, "volumes",
            errors={"volumes": exc.message}, values={"volumes": text},
        )  # fmt: skip
    await _audit(request, viewer, session, project, "project.update", {"section": "volumes"})
    return await _section(request, viewer, session, project, "volumes", notice="Saved.")


async def _section(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    project: Project,
    section: str,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    notice: str = "",
) -> Response:
    """The answer to a section's form: the section (HTMX) or the page (no JavaScript)."""
    if errors:
        await session.refresh(project)  # its changes were rolled back with their savepoint
    context = await _context(request, viewer, session, project)
    context["errors"] = {section: errors or {}}
    context["values"] = {section: values or {}}
    context["notice"] = {section: notice}
    status_code = 422 if errors else 200
    if is_htmx(request):
        return render(
            request, f"projects/settings/_{section}.html", status_code=status_code, **context
        )
    if not errors:
        flash(request, notice or "Saved.")
        return redirect(request, f"/projects/{project.id}/settings#{section}")
    return render(request, "projects/settings.html", status_code=status_code, **context)


async def _manage(viewer: Viewer, session: AsyncSession, project_id: str) -> Project:
    return await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.manage
    )


async def _audit(
    request: Request, viewer: Viewer, session: AsyncSession, project: Project, action: str,
    data: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    await record(
        session=session,
        principal=viewer.principal,
        action=action,
        resource_type="project",
        resource_id=project.id,
        team_id=project.team_id,
        ip=client_ip(request),
        data=data,
    )


@router.get("/projects/{project_id}/settings")
async def settings_page(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.read
    )
    return render(
        request, "projects/settings.html", **await _context(request, viewer, session, project)
    )


# ---- general, build, resources ------------------------------------------------------------------
def _update_from(section: str, form: Any, project: Project) -> tuple[ProjectUpdate, dict[str, Any]]:
    values: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for key in SECTIONS[section]:
        if key == "preview_deployments":
            values[key] = data[key] = form_text(form, key, 10) == "on"
            continue
        if key == "repo_url" and project.github_repo_full_name:
            continue  # a GitHub-connected source is changed through the GitHub settings
        raw = form_text(form, key, 4096).strip()
        values[key] = raw
        data[key] = raw or None
    if not data.get("name"):
        data.pop("name", None)
    if not data.get("production_branch"):
        data.pop("production_branch", None)
    return ProjectUpdate.model_validate(data), values


@router.post("/projects/{project_id}/settings/{section}")
async def save_section(
    project_id: str, section: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    if section not in SECTIONS:
        raise NotFound("no such settings section")
    project = await _manage(viewer, session, project_id)
    form = await request.form()
    try:
        body, values = _update_from(section, form, project)
        if body.repo_url:  # as the API: file:// only where allowed, never into the data dir
            check_local_url(
                platform_of(request).settings, body.repo_url, admin=viewer.principal.is_admin
            )
        if body.runtime:
            platform_of(request).runtimes.check(body.runtime)
        async with session.begin_nested():
            await projects.update_project(session=session, project=project, body=body)
    except ValidationError as exc:
        values = {k: form_text(form, k, 4096) for k in SECTIONS[section]}
        return await _section(
            request, viewer, session, project, section, errors=field_errors(exc), values=values
        )
    except (Invalid, Conflict, Forbidden) as exc:
        values = {k: form_text(form, k, 4096) for k in SECTIONS[section]}
        field = "name" if section == "general" else SECTIONS[section][0]
        return await _section(
            request, viewer, session, project, section, errors={field: exc.message}, values=values
        )
    await _audit(request, viewer, session, project, "project.update", {"section": section})
    return await _section(request, viewer, session, project, section, notice="Saved.")


@router.post("/projects/{project_id}/environments")
async def save_environments(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await _manage(viewer, session, project_id)
    form = await request.form()
    names = [str(v).strip() for v in form.getlist("env_name")]
    patterns = [str(v).strip() for v in form.getlist("env_pattern")]
    rows = [
        {"name": n, "branch_pattern": p} for n, p in zip(names, patterns, strict=False) if n or p
    ]
    try:
        body = ProjectUpdate.model_validate({"environments": rows})
        async with session.begin_nested():
            await projects.update_project(session=session, project=project, body=body)
    except ValidationError as exc:
        messages = [
            f"{' '.join(str(p) for p in e['loc'][1:])}: {e['msg']}".removeprefix(": ")
            for e in exc.errors()
        ]
        return await _section(
            request, viewer, session, project, "environments",
            errors={"environments": "; ".join(messages)[:500]}, values={"rows": rows},
        )  # fmt: skip
    await _audit(request, viewer, session, project, "project.update", {"section": "environments"})
    await session.flush()
    return await _section(request, viewer, session, project, "environments", notice="Saved.")


# ---- environment variables ----------------------------------------------------------------------
def _env_scope(form: Any) -> str | None:
    return form_text(form, "environment", 40).strip() or None


@router.post("/projects/{project_id}/env")
async def set_variable(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await _manage(viewer, session, project_id)
    form = await request.form()
    key = form_text(form, "key", 300).strip()
    values = {"key": key, "environment": form_text(form, "environment", 40)}
    try:
        if not key:
            raise Invalid("enter a variable name")
        async with session.begin_nested():
            await env.set_var(
                session=session,
                project_id=project.id,
                key=key,
                value=form_text(form, "value", 70000),
                environment=_env_scope(form),
                secret=form_text(form, "secret", 10) == "on",
                previews=form_text(form, "previews", 10) == "on",
            )
    except Invalid as exc:
        field = "value" if "value of" in exc.message else "key"
        if "environment" in exc.message:
            field = "environment"
        return await _section(
            request, viewer, session, project, "env", errors={field: exc.message}, values=values
        )
    await _audit(
        request, viewer, session, project, "env.set", {"key": key, "environment": _env_scope(form)}
    )
    return await _section(
        request, viewer, session, project, "env", notice=f"{key} saved. Redeploy to use it."
    )


@router.post("/projects/{project_id}/env/delete")
async def delete_variable(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await _manage(viewer, session, project_id)
    form = await request.form()
    key = form_text(form, "key", 300)
    await env.unset_var(
        session=session, project_id=project.id, key=key, environment=_env_scope(form)
    )
    await _audit(
        request,
        viewer,
        session,
        project,
        "env.unset",
        {"key": key, "environment": _env_scope(form)},
    )
    return await _section(request, viewer, session, project, "env", notice=f"{key} removed.")


@router.post("/projects/{project_id}/env/reveal")
async def reveal_variable(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    """One value, on request (audited). Values are never part of the page otherwise."""
    project = await _manage(viewer, session, project_id)
    form = await request.form()
    key = form_text(form, "key", 300)
    value = await env.reveal(
        session=session, project_id=project.id, key=key, environment=_env_scope(form)
    )
    await _audit(
        request,
        viewer,
        session,
        project,
        "env.reveal",
        {"key": key, "environment": _env_scope(form)},
    )
    return render(request, "projects/settings/_revealed.html", value=value)


# ---- domains ------------------------------------------------------------------------------------
@router.post("/projects/{project_id}/domains")
async def add_domain(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await _manage(viewer, session, project_id)
    platform = platform_of(request)
    form = await request.form()
    values = {
        k: form_text(form, k, 300) for k in ("hostname", "environment", "kind", "redirect_to")
    }
    environment = next(
        (
            e
            for e in await projects.list_environments(session=session, project_id=project.id)
            if e.slug == (values["environment"] or "production")
        ),
        None,
    )
    try:
        if environment is None:
            raise Invalid("choose one of the project's environments")
        domain = await domains.add(
            session=session,
            settings=platform.settings,
            project_id=project.id,
            environment_id=environment.id,
            hostname=values["hostname"],
            kind=values["kind"] or "route",
            redirect_to=values["redirect_to"].strip() or None,
        )
    except (Invalid, Conflict) as exc:
        field = "redirect_to" if "redirect" in exc.message else "hostname"
        return await _section(
            request, viewer, session, project, "domains", errors={field: exc.message}, values=values
        )
    await _audit(request, viewer, session, project, "domain.add", {"hostname": domain.hostname})
    await sync_project(session=session, settings=platform.settings, project_id=project.id)
    return await _section(
        request, viewer, session, project, "domains", notice=f"{domain.hostname} added."
    )


@router.post("/projects/{project_id}/domains/{domain_id}/{action}")
async def domain_action(
    project_id: str,
    domain_id: str,
    action: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
) -> Response:
    if action not in ("verify", "remove"):
        raise NotFound("no such domain action")
    project = await _manage(viewer, session, project_id)
    platform = platform_of(request)
    domain = await domains.get(session=session, project_id=project.id, domain_id=domain_id)
    hostname = domain.hostname
    if action == "verify":
        await domains.verify(session=session, settings=platform.settings, domain=domain)
        notice = (
            f"{hostname} is verified."
            if domain.status == "verified"
            else f"The TXT record of {hostname} was not found yet."
        )
    else:
        await domains.remove(session=session, domain=domain)
        await _audit(request, viewer, session, project, "domain.remove", {"hostname": hostname})
        notice = f"{hostname} removed."
    await sync_project(session=session, settings=platform.settings, project_id=project.id)
    return await _section(request, viewer, session, project, "domains", notice=notice)


# ---- danger zone --------------------------------------------------------------------------------
@router.post("/projects/{project_id}/pause")
async def pause_project(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    """Paused projects keep serving what they serve, but take no new deployments."""
    project = await _manage(viewer, session, project_id)
    paused = project.status == "paused"
    projects.set_paused(project=project, paused=not paused)
    await _audit(request, viewer, session, project, "project.resume" if paused else "project.pause")
    return await _section(
        request, viewer, session, project, "danger",
        notice="Deployments are on again." if paused else "Paused: new deployments are refused.",
    )  # fmt: skip


@router.post("/projects/{project_id}/delete")
async def delete_project(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    from devpush.queue import enqueue_delete_project

    project = await _manage(viewer, session, project_id)
    form = await request.form()
    if form_text(form, "confirm", 200).strip() != project.name:
        return await _section(
            request, viewer, session, project, "danger",
            errors={"confirm": f"Type {project.name} to confirm"},
        )  # fmt: skip
    try:
        await projects.check_deletion(
            p=platform_of(request), session=session, project=project,
            delete_volumes=form_text(form, "delete_volumes", 10) == "on",
        )  # fmt: skip
    except Conflict as exc:
        return await _section(
            request, viewer, session, project, "danger", errors={"delete_volumes": exc.message}
        )
    project.status = "deleting"
    await _audit(request, viewer, session, project, "project.delete")
    team = await session.get(Team, project.team_id)
    await session.commit()
    await enqueue_delete_project(platform_of(request).redis, project.id)
    flash(request, f"{project.name} is being deleted.")
    return redirect(request, f"/t/{team.slug}" if team else "/")
