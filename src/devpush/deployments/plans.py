"""The build plan of a branch without deploying it: a shallow fetch into a temporary mirror,
the tree exported, devpush.toml applied, and `builds.detect` run on it with the toolchains of
the runtime that would deploy it. The API, the CLI and the "new project" page show it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from devpush import builds, git
from devpush.deployments import flows, remote
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment
from devpush.errors import Conflict, DevpushError
from devpush.platform import Platform
from devpush.projects import repo_config
from devpush.projects.models import Project
from devpush.projects.repository import push_repo

FETCH_TIMEOUT = 30.0


async def plan_source(
    p: Platform,
    *,
    url: str,
    branch: str,
    subdir: str = "",
    credentials: git.Credentials | None = None,
    config: dict[str, Any] | None = None,
    runtime: str | None = None,
) -> tuple[builds.Plan, str]:
    """(plan, commit sha) of `branch` at `url`. Raises a DevpushError when the repository
    cannot be read, a PlanError when the tree can't be built."""
    await git.check_branch(branch)
    runtime = runtime or deployments.default_runtime(p.settings)
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="devpush-plan-"))
    try:
        mirror = tmp / "mirror.git"
        await git.ensure_mirror(mirror)
        async with git.auth_env(credentials) as auth:
            await git.run_git(
                "--git-dir",
                str(mirror),
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "--",
                url,
                f"+refs/heads/{branch}:refs/devpush/plan",
                env=auth,
                timeout=FETCH_TIMEOUT,
            )
        sha = await git.run_git("--git-dir", str(mirror), "rev-parse", "refs/devpush/plan")
        root = await git.export(
            mirror=mirror, sha="refs/devpush/plan", dest=tmp / "src", subdir=subdir
        )
        repo = await asyncio.to_thread(repo_config.load, root)
        merged = {**(config or {}), **(repo.overrides if repo else {})}
        plan = await flows.make_plan(p.runtimes, runtime, root, merged)
        return plan, sha.decode().strip()
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def plan_project(p: Platform, project: Project, branch: str) -> tuple[builds.Plan, str]:
    """The plan a deployment of `branch` would follow now."""
    probe = Deployment(branch=branch, pr_number=None)  # only read by for_deployment, never saved
    source = await remote.for_deployment(p, project, probe)
    if source.url == str(push_repo(p.settings, project.id)) and not Path(source.url).exists():
        raise Conflict(
            "nothing has been pushed to this project yet: `git push` to its remote first"
        )
    if not source.ref.startswith("refs/heads/"):
        raise DevpushError("this source can only be planned at a branch")
    return await plan_source(
        p,
        url=source.url,
        branch=branch,
        subdir=project.config.get("root_directory") or "",
        credentials=source.credentials,
        config=dict(project.config),
        runtime=project.config.get("runtime") or None,
    )
