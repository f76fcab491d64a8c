"""Project pages: creating a project (from a GitHub repository or any git URL, with the commands
pre-filled by preset detection), the project overview (production, environments, latest
deployments) and starting a deployment."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.api.deps import SessionDep, client_ip
from devpush.audit.service import record
from devpush.builds import PlanError
from devpush.deployments import actions, listing
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment
from devpush.errors import Conflict, DevpushError, Forbidden, Invalid
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.projects.repository import check_local_url
from devpush.projects.schemas import ProjectCreate
from devpush.teams.access import Action, load_team
from devpush.teams.models import ROLE_RANK, Role, Team
from devpush.web import detect as detection
from devpush.web.charts import charts
from devpush.web.common import (
    Viewer,
    ViewerDep,
    field_errors,
    form_text,
    page_router,
    platform_of,
    redirect,
    render,
)

router = page_router()
COMMAND_FIELDS = ("build_command", "pre_deploy_command", "start_command")
NEW_FIELDS = ("name", "repo_url", "github_repo", "production_branch", "root_directory")


def can(viewer: Viewer, team_id: str, least: Role) -> bool:
    role = viewer.role_in(team_id)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[least]


async def project_context(
    viewer: Viewer, session: AsyncSession, project: Project
) -> dict[str, Any]:
    """What every project page's header needs."""
    team = await session.get(Team, project.team_id)
    return {
        "project": project,
        "team": team,
        "can_manage": can(viewer, project.team_id, Role.admin),
        "can_deploy": can(viewer, project.team_id, Role.member),
    }


# ---- new project --------------------------------------------------------------------------------
async def _github_repositories(platform: Platform, team: Team) -> tuple[list[Any], str | None]:
    """The GitHub repositories the team's installations see, or why there are none."""
    if not platform.settings.github_app_id:
        return [], None
    from devpush.github import service as github

    try:
        return await github.list_repositories(p=platform, team_id=team.id), None
    except DevpushError as exc:
        return [], exc.message


async def _new_page(
    request: Request,
    team: Team,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    platform = platform_of(request)
    repositories, github_error = await _github_repositories(platform, team)
    return render(
        request,
        "projects/new.html",
        status_code=status_code,
        team=team,
        values=values or {"production_branch": "main", "deploy_now": "on"},
        errors=errors or {},
        repositories=repositories,
        github_error=github_error,
        github_configured=bool(platform.settings.github_app_id),
        detected=None,
        detect_note="",
    )


@router.get("/t/{team}/new")
async def new_project(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.manage
    )
    return await _new_page(request, row)


@router.post("/t/{team}/new/detect")
async def detect_commands(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    """The command fields, filled from the build plan detected in the repository's branch."""
    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.manage
    )
    form = await request.form()
    values = {k: form_text(form, k, 4096) for k in (*NEW_FIELDS, *COMMAND_FIELDS)}
    plan, note = None, ""
    try:
        url, credentials = await _source(request, row, values)
        if url:
            p = platform_of(request)
            plan = await detection.detect(
                p,
                url=url,
                branch=values["production_branch"].strip() or "main",
                subdir=values["root_directory"].strip().strip("/"),
                credentials=credentials,
                admin=viewer.principal.is_admin,
            )
        else:
            note = "Enter a repository first."
    except PlanError as exc:
        note = f"{exc.message} Enter the commands yourself."
    except DevpushError as exc:
        note = (
            f"Could not read the repository ({exc.message}); commands are detected at deploy time."
        )
    if plan is not None:
        found = {
            "build_command": plan.build or "",
            "pre_deploy_command": plan.pre_deploy or "",
            "start_command": plan.start,
        }
        for key, value in found.items():
            # Replace what detection filled before, never what the user typed.
            previous = form_text(form, f"detected_{key}", 4096)
            if not values[key].strip() or values[key] == previous:
                values[key] = value
            values[f"detected_{key}"] = value
    return render(
        request,
        "projects/_commands.html",
        values=values,
        errors={},
        detected=(plan.framework or plan.stack) if plan else None,
        detect_note=note,
    )


async def _source(request: Request, team: Team, values: dict[str, str]) -> tuple[str, Any]:
    """The URL (and credentials) to read: the chosen GitHub repository, or the git URL."""
    github_repo = values.get("github_repo", "").strip()
    if not github_repo:
        return values.get("repo_url", "").strip(), None
    from devpush import git
    from devpush.deployments.remote import GITHUB_USERNAME
    from devpush.github import service as github
    from devpush.projects.repository import github_clone_url

    platform = platform_of(request)
    repository = await github.find_repository(p=platform, team_id=team.id, full_name=github_repo)
    token = await github.installation_token(p=platform, installation_id=repository.installation_id)
    return github_clone_url(platform.settings, repository.full_name), git.Credentials(
        username=GITHUB_USERNAME, token=token
    )


def _project_create(values: dict[str, str]) -> ProjectCreate:
    data: dict[str, Any] = {"name": values["name"].strip()}
    if not values.get("github_repo"):
        data["repo_url"] = values["repo_url"].strip() or None
    for key in ("production_branch", "root_directory", *COMMAND_FIELDS):
        if values.get(key, "").strip():
            data[key] = values[key].strip()
    return ProjectCreate.model_validate(data)


@router.post("/t/{team}/new")
async def create_project(
    team: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    row = await load_team(
        session=session, principal=viewer.principal, team_ref=team, action=Action.manage
    )
    platform = platform_of(request)
    form = await request.form()
    values = {k: form_text(form, k, 4096) for k in (*NEW_FIELDS, *COMMAND_FIELDS)}
    values["deploy_now"] = form_text(form, "deploy_now", 10)
    try:
        body = _project_create(values)
        if not body.repo_url and not values.get("github_repo"):
            raise Invalid("choose a GitHub repository or enter a git URL")
        if body.repo_url:  # as the API: file:// only where allowed, never into the data dir
            check_local_url(platform.settings, body.repo_url, admin=viewer.principal.is_admin)
        async with session.begin_nested():  # a failed GitHub link leaves no project behind
            project = await projects.create_project(session=session, team_id=row.id, body=body)
            if values.get("github_repo"):
                await _connect_github(platform, project, row, values["github_repo"])
    except ValidationError as exc:
        return await _new_page(
            request, row, values=values, errors=field_errors(exc), status_code=422
        )
    except (Invalid, Conflict, Forbidden) as exc:
        field = "name" if isinstance(exc, Conflict) else "repo_url"
        return await _new_page(
            request, row, values=values, errors={field: exc.message}, status_code=422
        )
    await record(
        session=session,
        principal=viewer.principal,
        action="project.create",
        resource_type="project",
        resource_id=project.id,
        team_id=row.id,
        ip=client_ip(request),
        data={"name": project.name},
    )
    if values["deploy_now"]:
        deployment = await actions.create_and_enqueue(
            session=session,
            p=platform,
            principal=viewer.principal,
            project=project,
            branch=project.production_branch,
            commit_sha=None,
            trigger="ui",
            ip=client_ip(request),
        )
        return redirect(request, f"/deployments/{deployment.id}")
    return redirect(request, f"/projects/{project.id}")


async def _connect_github(platform: Platform, project: Project, team: Team, full_name: str) -> None:
    from devpush.github import service as github

    repository = await github.find_repository(p=platform, team_id=team.id, full_name=full_name)
    github.connect_github(settings=platform.settings, project=project, repository=repository)


# ---- overview -----------------------------------------------------------------------------------
async def current_deployments(
    session: AsyncSession, project: Project
) -> list[tuple[Any, Deployment | None]]:
    """Each environment with the deployment its alias serves now."""
    rows = []
    for environment in await projects.list_environments(session=session, project_id=project.id):
        aliases = await deployments.environment_aliases(
            session=session, environment_id=environment.id
        )
        current = next((a for a in aliases if a.type.value == "environment"), None)
        deployment = (
            await session.get(Deployment, current.deployment_id)
            if current and current.deployment_id
            else None
        )
        rows.append((environment, deployment))
    return rows


def environment_url(platform: Platform, project: Project, environment: Any) -> str:
    label = project.slug if environment.is_production else f"{project.slug}-env-{environment.slug}"
    return platform.settings.deploy_url(label)


@router.get("/projects/{project_id}")
async def project_overview(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.read
    )
    return await overview_page(request, viewer, session, project)


async def overview_page(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    project: Project,
    *,
    status_code: int = 200,
    deploy: dict[str, Any] | None = None,
) -> Response:
    """The overview; `deploy` is the deploy form's context when it is shown with errors (the
    page loads it on its own otherwise)."""
    platform = platform_of(request)
    context = await project_context(viewer, session, project)
    environments = [
        {"environment": e, "deployment": d, "url": environment_url(platform, project, e)}
        for e, d in await current_deployments(session, project)
    ]
    latest, _ = await listing.list_page(session=session, project_id=project.id, limit=6)
    from devpush.domains import service as domains

    return render(
        request,
        "projects/overview.html",
        status_code=status_code,
        deploy=deploy,
        environments=environments,
        production=environments[0] if environments else None,
        latest=latest,
        current_ids={e["deployment"].id for e in environments if e["deployment"]},
        env_names={e["environment"].id: e["environment"].name for e in environments},
        domains=await domains.list_for_project(session=session, project_id=project.id),
        # The production deployment's metrics (the charts say when there is none).
        charts=charts(
            environments[0]["deployment"].id
            if environments and environments[0]["deployment"]
            else None
        ),
        **context,
    )


@router.post("/projects/{project_id}/deploy")
async def deploy(
    project_id: str,
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    branch: Annotated[str, Form(max_length=300)] = "",
) -> Response:
    from devpush.deployments.schemas import DeploymentCreate

    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.deploy
    )
    try:
        body = DeploymentCreate(branch=branch.strip() or project.production_branch)
    except ValidationError as exc:
        raise Invalid(f"branch: {field_errors(exc).get('branch', 'invalid')}") from None
    deployment = await actions.create_and_enqueue(
        session=session,
        p=platform_of(request),
        principal=viewer.principal,
        project=project,
        branch=body.branch or project.production_branch,
        commit_sha=None,
        trigger="ui",
        ip=client_ip(request),
    )
    return redirect(request, f"/deployments/{deployment.id}")
