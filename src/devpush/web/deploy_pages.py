"""The project page's deploy form: a branch of the repository, a commit from its recent history
and the environment it deploys to. It creates the deployment through the same flow as the API
(`actions.create_and_enqueue`) and, like the API, lets the branch choose the environment: the
form shows that choice and refuses any other."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import git
from devpush.api.deps import SessionDep, client_ip
from devpush.deployments import actions
from devpush.errors import DevpushError
from devpush.projects import service as projects
from devpush.projects.access import load_project
from devpush.projects.models import Project
from devpush.sources import history
from devpush.sources.branches import valid_branch
from devpush.teams.access import Action
from devpush.web.common import (
    Viewer,
    ViewerDep,
    form_text,
    is_htmx,
    page_router,
    platform_of,
    redirect,
)
from devpush.web.common import render as render_page

router = page_router()
FIELDS = ("branch", "commit_sha", "environment")
# Longer than any valid value, so that an oversized one is refused rather than cut to fit.
FIELD_LIMIT = 300


def _branch_error(branch: str) -> str | None:
    if not branch:
        return "choose a branch"
    if len(branch) > 255 or not valid_branch(branch):
        return "not a valid branch name"
    return None


async def _choices(
    request: Request, session: AsyncSession, project: Project, branch: str
) -> dict[str, Any]:
    """The commit and environment selects for `branch`."""
    commits: list[history.RecentCommit] = []
    commits_error = _branch_error(branch)
    if commits_error is None:
        try:
            commits = await history.recent_commits(platform_of(request), project, branch)
        except DevpushError as exc:
            commits_error = exc.message
    environments = await projects.list_environments(session=session, project_id=project.id)
    matched = (
        await projects.match_environment(session=session, project_id=project.id, branch=branch)
        if commits_error is None
        else None
    )
    return {
        "commits": commits,
        "commits_error": commits_error,
        "environments": environments,
        "matched": matched,
    }


async def form_context(
    request: Request,
    session: AsyncSession,
    project: Project,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the deploy form shows: the branches, and the chosen branch's choices."""
    errors = dict(errors or {})
    branches: list[str] = []
    try:
        branches = await history.list_branches(platform_of(request), project)
    except DevpushError as exc:
        errors.setdefault("__all__", f"Could not read the repository: {exc.message}")
    values = dict(values or {})
    if values.get("branch") not in branches:
        values["branch"] = branches[0] if branches else project.production_branch
    choices = (
        await _choices(request, session, project, values["branch"])
        if branches
        else {"commits": [], "commits_error": None, "environments": [], "matched": None}
    )
    return {
        "project": project,
        "branches": branches,
        "values": values,
        "deploy_errors": errors,
        **choices,
    }


@router.get("/projects/{project_id}/deploy/form")
async def deploy_form(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.deploy
    )
    branch = request.query_params.get("branch", "")[:FIELD_LIMIT]
    context = await form_context(request, session, project, {"branch": branch})
    return render_page(request, "projects/_deploy.html", **context)


@router.get("/projects/{project_id}/deploy/commits")
async def deploy_choices(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    """The commit and environment selects, when the form's branch changes."""
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.deploy
    )
    branch = request.query_params.get("branch", "")[:FIELD_LIMIT]
    choices = await _choices(request, session, project, branch)
    return render_page(
        request,
        "projects/_deploy_choices.html",
        status_code=422 if choices["commits_error"] else 200,
        project=project,
        values={"branch": branch},
        deploy_errors={},
        **choices,
    )


async def _validate(
    request: Request, session: AsyncSession, project: Project, values: dict[str, str]
) -> tuple[str | None, dict[str, str]]:
    """(the full commit sha or None for the branch's latest, errors by field)."""
    branch, sha, environment_id = (values[k] for k in FIELDS)
    platform = platform_of(request)
    branch_error = _branch_error(branch)
    if branch_error:
        return None, {"branch": branch_error}
    if branch not in await history.list_branches(platform, project):
        return None, {"branch": f"the repository has no branch {branch}"}
    errors: dict[str, str] = {}
    environments = await projects.list_environments(session=session, project_id=project.id)
    matched = await projects.match_environment(
        session=session, project_id=project.id, branch=branch
    )
    chosen = next((e for e in environments if e.id == environment_id), None)
    if environment_id and chosen is None:
        errors["environment"] = "not an environment of this project"
    elif (chosen.id if chosen else None) != (matched.id if matched else None):
        target = f"the {matched.name} environment" if matched else "a preview (no environment)"
        errors["environment"] = f"branch {branch} deploys to {target}"
    full = None
    if sha:
        if not git.SHA.match(sha):
            errors["commit_sha"] = "choose a commit from the list"
        else:
            full = await history.commit_on_branch(platform, project, branch, sha)
            if full is None:
                errors["commit_sha"] = f"commit {sha[:12]} is not in the recent history of {branch}"
    return full, errors


@router.post("/projects/{project_id}/deploy/form")
async def deploy_commit(
    project_id: str, request: Request, viewer: ViewerDep, session: SessionDep
) -> Response:
    project = await load_project(
        session=session, principal=viewer.principal, project_id=project_id, action=Action.deploy
    )
    form = await request.form()
    values = {k: form_text(form, k, FIELD_LIMIT + 1).strip() for k in FIELDS}
    oversized = {k: "too long" for k in FIELDS if len(values[k]) > FIELD_LIMIT}
    try:
        sha, errors = (
            (None, oversized) if oversized else await _validate(request, session, project, values)
        )
    except DevpushError as exc:
        sha, errors = None, {"__all__": exc.message}
    if errors:
        return await _refused(request, viewer, session, project, values, errors)
    deployment = await actions.create_and_enqueue(
        session=session,
        p=platform_of(request),
        principal=viewer.principal,
        project=project,
        branch=values["branch"],
        commit_sha=sha,
        trigger="ui",
        ip=client_ip(request),
    )
    return redirect(request, f"/deployments/{deployment.id}")


async def _refused(
    request: Request,
    viewer: Viewer,
    session: AsyncSession,
    project: Project,
    values: dict[str, str],
    errors: dict[str, str],
) -> Response:
    """The form again, with the errors next to their fields (422): on its own for HTMX, on the
    project page otherwise."""
    shown = {k: (v if len(v) <= FIELD_LIMIT else "") for k, v in values.items()}
    if "branch" in errors:  # its choices would be another error about the same value
        shown["branch"] = ""
    context = await form_context(request, session, project, shown, errors)
    if is_htmx(request):
        return render_page(request, "projects/_deploy.html", status_code=422, **context)
    from devpush.web.project_pages import overview_page

    return await overview_page(request, viewer, session, project, status_code=422, deploy=context)
