"""Reporting deployments back to GitHub: a commit status (pending, then success, failure or
error, linking the deployment URL) and, for pull requests, one comment with the preview URL
that each push edits rather than repeats.

The domain events' GitHub subscriber (github/subscriber.py) queues a `github_report` job;
the job reads the deployment's state when it runs, so reports that run late or twice still
end right."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.db import new_id, session_scope
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Deployment, Status
from devpush.github.client import GithubClient
from devpush.github.models import GithubPullRequest
from devpush.github.service import installation_token
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.projects.repository import is_github

ICONS = {"pending": "⏳", "success": "✅", "failure": "❌", "error": "⏹️"}


def github_state(deployment: Deployment) -> tuple[str, str]:
    """The commit status state and its description (GitHub keeps 140 characters)."""
    if deployment.status != Status.completed:
        return "pending", f"Deploying {deployment.branch}"
    if deployment.conclusion == Conclusion.succeeded:
        return "success", "Deployment is live"
    if deployment.conclusion == Conclusion.failed:
        return "failure", f"Deployment failed: {deployment.error or 'see the logs'}"
    if deployment.conclusion == Conclusion.skipped:
        return "error", "Skipped: a newer push superseded this commit"
    return "error", f"Canceled: {deployment.error or 'by a user'}"


def comment_body(
    slug: str, deployment: Deployment, state: str, description: str, urls: dict[str, str]
) -> str:
    rows = [
        f"| Status | {ICONS.get(state, '')} {description} |",
        f"| Preview | {urls.get('pr', urls.get('deployment', ''))} |",
        f"| Deployment | {urls.get('deployment', '')} |",
    ]
    if deployment.commit_sha:
        rows.append(f"| Commit | `{deployment.commit_sha[:7]}` |")
    return "\n".join(
        [f"**devpush** preview of `{slug}`", "", "| | |", "|---|---|", *rows, ""]
        + [f"<!-- devpush:{deployment.project_id} -->"]
    )


async def report(p: Platform, deployment_id: str) -> None:
    async with session_scope(p.sessions) as session:
        deployment = await session.get(Deployment, deployment_id)
        project = await session.get(Project, deployment.project_id) if deployment else None
        if deployment is None or project is None or not is_github(project):
            return
        if project.repo_status:  # disconnected or deleted: GitHub would refuse the token
            return
        environment = (
            await session.get(Environment, deployment.environment_id)
            if deployment.environment_id
            else None
        )
        urls = deployments.urls(
            p.settings, deployments.alias_specs(project, deployment, environment)
        )
        latest = await _is_latest_for_pr(session, deployment)
    assert project.github_installation_id and project.github_repo_full_name
    state, description = github_state(deployment)
    token = await installation_token(p=p, installation_id=project.github_installation_id)
    async with GithubClient(p.settings) as gh:
        if deployment.commit_sha:
            await gh.set_status(
                token,
                project.github_repo_full_name,
                deployment.commit_sha,
                state=state,
                target_url=urls["deployment"],
                description=description,
                context=f"devpush/{project.slug}",
            )
        if deployment.pr_number is None or not latest:
            return
        body = comment_body(project.slug, deployment, state, description, urls)
        async with session_scope(p.sessions) as session:
            row = await _pull_request_row(session, project.id, deployment)
            if row.comment_id and await gh.update_comment(
                token, project.github_repo_full_name, row.comment_id, body
            ):
                return
            row.comment_id = await gh.create_comment(
                token, project.github_repo_full_name, deployment.pr_number, body
            )


async def _is_latest_for_pr(session: AsyncSession, deployment: Deployment) -> bool:
    """Only the newest deployment of a pull request may edit its comment."""
    if deployment.pr_number is None:
        return True
    newest = await session.scalar(
        select(Deployment.id)
        .where(
            Deployment.project_id == deployment.project_id,
            Deployment.pr_number == deployment.pr_number,
        )
        .order_by(Deployment.created_at.desc(), Deployment.id.desc())
        .limit(1)
    )
    return newest == deployment.id


async def _pull_request_row(
    session: AsyncSession, project_id: str, deployment: Deployment
) -> GithubPullRequest:
    """The PR's row, locked, so two reports never both post a comment."""
    assert deployment.pr_number is not None
    await session.execute(
        insert(GithubPullRequest)
        .values(
            id=new_id(),
            project_id=project_id,
            number=deployment.pr_number,
            head_ref=deployment.branch,
            head_sha=deployment.commit_sha or "",
            state="open",
        )
        .on_conflict_do_nothing(index_elements=["project_id", "number"])
    )
    row = await session.scalar(
        select(GithubPullRequest)
        .where(
            GithubPullRequest.project_id == project_id,
            GithubPullRequest.number == deployment.pr_number,
        )
        .with_for_update()
    )
    assert row is not None
    return row
