"""Which deployments a restore brings back, and forgetting the old machine's instances (real
PostgreSQL): one per branch, the one an environment serves winning over a newer one on the same
branch (a rollback survives), and never a deployment only its own id alias points at."""

from __future__ import annotations

from datetime import timedelta

from devpush.db import session_scope, utcnow
from devpush.deployments import service as deployments
from devpush.deployments.models import Alias, AliasType, Conclusion, Deployment, Status
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from tests.factories.auth import make_account


def deployment(project: Project, branch: str, minutes_ago: int, **fields: object) -> Deployment:
    return Deployment(
        project_id=project.id,
        branch=branch,
        commit_sha="a" * 40,
        trigger="api",
        status=Status.completed,
        conclusion=Conclusion.succeeded,
        config={},
        env_enc="x",
        runtime="process",
        created_at=utcnow() - timedelta(minutes=minutes_ago),
        **fields,
    )


async def test_serving_deployments_and_forgetting_instances(platform: Platform) -> None:
    account = await make_account(platform, "restore@example.com")
    async with session_scope(platform.sessions) as session:
        project = Project(team_id=account.team_id, name="shop", slug="shop")
        session.add(project)
        await session.flush()
        production = Environment(
            project_id=project.id, name="Production", slug="production", branch_pattern="main"
        )
        session.add(production)
        handle = {"backend": "process", "id": "old"}
        rolled_back = deployment(project, "main", 30, runtime_handle=handle, upstream="a:1")
        newer_main = deployment(project, "main", 20, runtime_handle=handle, upstream="a:2")
        feature = deployment(project, "feature", 10)
        forgotten_branch = deployment(project, "gone", 5)
        session.add_all([rolled_back, newer_main, feature, forgotten_branch])
        await session.flush()
        session.add_all(
            [
                Alias(
                    project_id=project.id,
                    type=AliasType.environment,
                    value="shop",
                    environment_id=production.id,
                    deployment_id=rolled_back.id,
                ),
                Alias(
                    project_id=project.id,
                    type=AliasType.branch,
                    value="shop-branch-main",
                    branch="main",
                    deployment_id=newer_main.id,
                ),
                Alias(
                    project_id=project.id,
                    type=AliasType.branch,
                    value="shop-branch-feature",
                    branch="feature",
                    deployment_id=feature.id,
                ),
                Alias(
                    project_id=project.id,
                    type=AliasType.deployment,
                    value=f"shop-id-{forgotten_branch.id[:7]}",
                    deployment_id=forgotten_branch.id,
                ),
            ]
        )
    async with session_scope(platform.sessions) as session:
        serving = await deployments.serving_deployments(session=session)
        assert [d.id for d in serving] == [rolled_back.id, feature.id]
        assert await deployments.forget_instances(session=session) == 2
    async with session_scope(platform.sessions) as session:
        rows = [await session.get(Deployment, d.id) for d in (rolled_back, newer_main)]
        assert [(r.runtime_handle, r.upstream) for r in rows if r] == [(None, None)] * 2
        assert await deployments.forget_instances(session=session) == 0
