"""What a push means, the same for a GitHub webhook and for the platform's own git remote:
a pushed branch deploys when it matches an environment, or as a preview when the project takes
previews; a deleted branch (or a closed pull request) takes its preview down again."""

from __future__ import annotations

import logging

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.auth.service import Principal
from devpush.databases import service as databases
from devpush.db import session_scope
from devpush.deployments import actions, routing
from devpush.deployments import service as deployments
from devpush.deployments.models import Alias, AliasType, Conclusion, Deployment
from devpush.deployments.retire import remove_instance
from devpush.platform import Platform
from devpush.projects import service as projects
from devpush.projects.models import Project
from devpush.projects.schemas import Branch

log = logging.getLogger("devpush.sources")


_BRANCH = TypeAdapter(Branch)


def valid_branch(branch: str) -> bool:
    """The rules the API applies to branch names (git's, minus a few odd corners)."""
    try:
        _BRANCH.validate_python(branch)
    except ValidationError:
        return False
    return True


async def wants_deploy(*, session: AsyncSession, project: Project, branch: str) -> bool:
    """A branch deploys when an environment follows it, or as a preview when allowed."""
    if project.status != "active" or not valid_branch(branch):
        return False
    environment = await projects.match_environment(
        session=session, project_id=project.id, branch=branch
    )
    return environment is not None or project.preview_deployments


async def deploy_push(
    *,
    session: AsyncSession,
    p: Platform,
    project: Project,
    branch: str,
    commit_sha: str,
    trigger: str,
    principal: Principal | None = None,
    ip: str | None = None,
    pr_number: int | None = None,
) -> Deployment | None:
    """Deploy a pushed commit when the project wants this branch; None when it does not.
    Commits the session (through actions.create_and_enqueue)."""
    if pr_number is None and not await wants_deploy(
        session=session, project=project, branch=branch
    ):
        return None
    return await actions.create_and_enqueue(
        session=session,
        p=p,
        principal=principal,
        pr_number=pr_number,
        project=project,
        branch=branch,
        commit_sha=commit_sha,
        trigger=trigger,
        ip=ip,
    )


async def retire(
    p: Platform, *, project_id: str, branch: str | None = None, pr_number: int | None = None
) -> list[str]:
    """Take a deleted branch's (or a closed pull request's) preview down: conclude what is still
    in flight, drop its aliases, and remove every instance that no other alias (an environment,
    say) still serves, and drop the preview's own databases. Returns the hostname labels removed.
    Idempotent."""
    from devpush.queue import abort_start

    reason = "the pull request was closed" if pr_number is not None else "the branch was deleted"
    async with session_scope(p.sessions) as session:
        project = await session.get(Project, project_id)
        if project is None:
            return []
        stmt = select(Deployment).where(Deployment.project_id == project_id)
        if pr_number is not None:
            stmt = stmt.where(Deployment.pr_number == pr_number)
        else:
            stmt = stmt.where(Deployment.branch == branch, Deployment.pr_number.is_(None))
        rows = list(await session.scalars(stmt.with_for_update()))
        in_flight = [d for d in rows if not deployments.is_concluded(d)]
        for deployment in in_flight:
            deployments.conclude(deployment, Conclusion.canceled, f"canceled: {reason}")
        removed = await deployments.remove_aliases(
            session=session, project_id=project_id, branch=branch, pr_number=pr_number
        )
        await session.flush()
        ids = {d.id for d in rows}
        retired, own = await _unserved(session, project_id, ids)
        for alias in own:
            if alias.deployment_id in retired:
                removed.append(alias.value)
                await session.delete(alias)
        await session.flush()
        await routing.sync_project(session=session, settings=p.settings, project_id=project_id)
    for deployment in in_flight:
        await abort_start(p.redis, deployment.id)
    for deployment_id in sorted(retired):
        await remove_instance(p, deployment_id)
    preview = databases.Target(project_id, None, True, branch or "", pr_number)
    async with session_scope(p.sessions) as session:
        await databases.drop_preview(
            session=session, settings=p.settings, project_id=project_id, scope=preview.scope
        )
    log.info("retired preview", extra={"project_id": project_id, "aliases": removed})
    return removed


async def _unserved(
    session: AsyncSession, project_id: str, ids: set[str]
) -> tuple[set[str], list[Alias]]:
    """Of `ids`, those no alias serves but their own deployment alias; and those own aliases."""
    if not ids:
        return set(), []
    aliases = await session.scalars(
        select(Alias).where(
            Alias.project_id == project_id,
            or_(Alias.deployment_id.in_(ids), Alias.previous_deployment_id.in_(ids)),
        )
    )
    served: set[str] = set()
    own: list[Alias] = []
    for alias in aliases:
        if alias.type == AliasType.deployment:
            own.append(alias)
        else:
            served.update(i for i in (alias.deployment_id, alias.previous_deployment_id) if i)
    return ids - served, own
