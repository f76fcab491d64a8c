"""The start of the deployment flow, where deployments, git, runtimes and logs meet:
claim, fetch, export, plan, spec, launch; and skip or fail (finalize.py, retire.py and
actions.py hold the rest). Each step reloads the row under a lock and returns early when the
deployment has already moved on, so every step is idempotent and safe to run twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import logging
import shutil
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from devpush import builds, crypto, events, git
from devpush.databases import service as databases
from devpush.db import session_scope, utcnow
from devpush.deployments import remote
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Deployment, Status
from devpush.deployments.retire import remove_instance
from devpush.errors import DevpushError, Invalid
from devpush.logs.store import NewLine
from devpush.platform import Platform
from devpush.projects import repo_config, volumes
from devpush.projects.env import resolve_env
from devpush.projects.models import Environment, Project
from devpush.projects.service import list_environments, pattern_matches
from devpush.runtime import IMAGE_RUNTIMES, Runtimes
from devpush.runtime.base import RuntimeHandle, RuntimeSpec
from devpush.teams.models import Team

log = logging.getLogger("devpush.flows")


# ---- events and system log lines -------------------------------------------------------
async def system_log(p: Platform, deployment_id: str, message: str) -> None:
    """A platform message ("Fetching…", "Build failed") as a log line of phase `system`."""
    line = NewLine(ts=utcnow(), stream="stdout", phase="system", message=message)
    async with session_scope(p.sessions) as session:
        stored = await p.log_store.append(
            session=session, deployment_id=deployment_id, lines=[line]
        )
    for s in stored:
        await events.publish_deployment(p.redis, deployment_id, "log", s.to_json())


def elapsed(start: datetime | None) -> float:
    return (utcnow() - start).total_seconds() if start else 0.0


# ---- prepare + deploy ------------------------------------------------------------------
def injected_env(
    p: Platform,
    project: Project,
    team: Team,
    deployment: Deployment,
    environment: Environment | None,
    port: int,
) -> dict[str, str]:
    specs = deployments.alias_specs(project, deployment, environment)
    urls = deployments.urls(p.settings, specs)
    env = {
        "DEVPUSH": "1",
        "DEVPUSH_TEAM_ID": team.id,
        "DEVPUSH_TEAM": team.slug,
        "DEVPUSH_PROJECT_ID": project.id,
        "DEVPUSH_PROJECT": project.slug,
        "DEVPUSH_DEPLOYMENT_ID": deployment.id,
        "DEVPUSH_ENVIRONMENT": environment.slug if environment else "preview",
        "DEVPUSH_ENVIRONMENT_ID": environment.id if environment else "",
        "DEVPUSH_BRANCH": deployment.branch,
        "DEVPUSH_COMMIT_SHA": deployment.commit_sha or "",
        "DEVPUSH_URL": urls.get("deployment", ""),
        "DEVPUSH_BRANCH_URL": urls.get("branch", urls.get("pr", "")),
        "DEVPUSH_ENVIRONMENT_URL": urls.get("environment", ""),
    }
    return env


def runtime_env(
    injected: dict[str, str], user: dict[str, str], runtime: str, port: int
) -> dict[str, str]:
    """User values take precedence over injected ones, except PORT and HOST, which the
    runtime needs to reach the app (set the port through the project's `port`)."""
    env = {**injected, **user}
    env["PORT"] = str(port)
    env["HOST"] = "0.0.0.0" if runtime in IMAGE_RUNTIMES else "127.0.0.1"
    return env


async def make_plan(
    runtimes: Runtimes,
    runtime_name: str,
    root: Path,
    config: dict[str, Any],
    log: Callable[[str], Awaitable[None]] | None = None,
) -> builds.Plan:
    """The build plan for the tree at `root`, among the toolchains the runtime offers; a
    version it lacks is fetched first where the runtime can (Node on the process runtime)."""
    runtime = runtimes.get(runtime_name)
    toolchains = await runtime.toolchains()
    try:
        return await asyncio.to_thread(
            builds.detect, root, toolchains=toolchains, runtime=runtime_name, config=config
        )
    except builds.MissingToolchain as missing:
        if log is not None:
            await log(f"Fetching {missing.language} {missing.spec} for this build")
        fetched = await runtime.provide(missing.language, missing.spec)
        if fetched is None:
            raise
        return await asyncio.to_thread(
            builds.detect,
            root,
            toolchains=[*toolchains, fetched],
            runtime=runtime_name,
            config=config,
        )


async def _claim_prepare(p: Platform, deployment_id: str) -> tuple[Deployment, Project] | None:
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployments.is_concluded(deployment) or deployment.status != Status.prepare:
            return None
        project = await session.get(Project, deployment.project_id)
        if project is None:
            return None
        deployment.prepare_started_at = deployment.prepare_started_at or utcnow()
        deployment.timings = {**deployment.timings, "queue": elapsed(deployment.created_at)}
        return deployment, project


def mirror_path(p: Platform, project_id: str) -> Path:
    return p.settings.data_path / "git" / "mirrors" / f"{project_id}.git"


def _workdir(p: Platform, deployment_id: str) -> Path:
    return p.settings.data_path / "builds" / deployment_id


async def start_deployment(p: Platform, deployment_id: str) -> None:
    claimed = await _claim_prepare(p, deployment_id)
    if claimed is None:
        return
    deployment, project = claimed
    workdir = _workdir(p, deployment_id)
    try:
        await _prepare_and_deploy(p, deployment, project, workdir)
    except DevpushError as exc:
        await fail_deployment(p, deployment_id, exc.message)
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            await fail_deployment(p, deployment_id, disk_full_message(p, exc))
            return
        log.exception("deployment preparation crashed", extra={"deployment_id": deployment_id})
        await fail_deployment(
            p, deployment_id, f"Internal error while preparing: {type(exc).__name__}: {exc}"[:500]
        )
        raise
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


def disk_full_message(p: Platform, exc: OSError) -> str:
    where = f" (writing {exc.filename})" if exc.filename else ""
    return (
        f"No space left on device while preparing the deployment{where}. Free disk space "
        f"under {p.settings.data_path}, then redeploy."
    )


async def _prepare_and_deploy(
    p: Platform, deployment: Deployment, project: Project, workdir: Path
) -> None:
    source = await remote.for_deployment(p, project, deployment)
    started = utcnow()
    await system_log(
        p,
        deployment.id,
        f"Fetching {deployment.branch}"
        + (f" at {deployment.commit_sha[:12]}" if deployment.commit_sha else ""),
    )
    commit = await git.fetch(
        mirror=mirror_path(p, project.id),
        url=source.url,
        branch=deployment.branch,
        commit_sha=deployment.commit_sha,
        ref=source.ref,
        credentials=source.credentials,
    )
    root = await git.export(
        mirror=mirror_path(p, project.id),
        sha=commit.sha,
        dest=workdir / "src",
        subdir=deployment.config.get("root_directory") or "",
    )
    await system_log(
        p,
        deployment.id,
        f"Fetched commit {commit.sha[:7]}: "
        f"{commit.message.splitlines()[0] if commit.message else ''}"[:300],
    )
    repo = repo_config.load(root)
    if repo is not None and not await _touches_watched(p, project, deployment, commit.sha, repo):
        await skip_deployment(p, deployment.id, "No path in devpush.toml [watch] changed")
        return
    config = {**deployment.config, **(repo.overrides if repo else {})}
    plan = await make_plan(
        p.runtimes,
        deployment.runtime,
        root,
        config,
        log=functools.partial(system_log, p, deployment.id),
    )
    for line in plan.lines():
        await system_log(p, deployment.id, line)
    await asyncio.to_thread(builds.prepare, plan, root)
    config = {**config, "preset": plan.framework or plan.stack, "plan": plan.to_json()}
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
        if deployments.is_concluded(row):
            return
        row.commit_sha, row.commit_message, row.commit_author = (
            commit.sha,
            commit.message,
            commit.author,
        )
        row.config = config
        if repo is not None and repo.environments and row.pr_number is None:
            await _match_repo_environment(session, row, project, repo)
        row.status = Status.deploy
        row.deploy_started_at = utcnow()
        row.timings = {**row.timings, "fetch": elapsed(started)}
        await _add_databases(p, session, row, project)
        spec = await _spec(p, session, row, project, root, plan)
    await _launch(p, row, spec)


async def _touches_watched(
    p: Platform, project: Project, deployment: Deployment, sha: str, repo: repo_config.RepoConfig
) -> bool:
    """Whether the commit changes a watched path since the branch's last good deployment."""
    if not repo.watch:
        return True
    async with session_scope(p.sessions) as session:
        base = await deployments.last_succeeded_commit(
            session=session, project_id=project.id, branch=deployment.branch
        )
    if base is None:
        return True
    changed = await git.changed_files(mirror=mirror_path(p, project.id), base=base, head=sha)
    return changed is None or repo.touches(changed)


async def _match_repo_environment(
    session: AsyncSession, row: Deployment, project: Project, repo: repo_config.RepoConfig
) -> None:
    """devpush.toml's [environments] patterns decide the environment of non-production
    branches; the env var snapshot follows the environment."""
    environments = {
        e.slug: e for e in await list_environments(session=session, project_id=project.id)
    }
    chosen = next(
        (
            e
            for e in environments.values()
            if e.is_production and pattern_matches(e.branch_pattern, row.branch)
        ),
        None,
    )
    for name, pattern in repo.environments.items():
        if chosen is None and pattern_matches(pattern, row.branch):
            if name not in environments:
                raise Invalid(
                    f"devpush.toml names the environment {name!r}, which this project "
                    "does not have; create it in the project settings first"
                )
            if environments[name].is_production:  # its secrets and hostname are not a branch's
                raise Invalid(
                    f"devpush.toml can't put the branch {row.branch!r} in the production "
                    f"environment ({name!r}): production deploys the production branch set in "
                    "the project's settings"
                )
            chosen = environments[name]
    environment_id = chosen.id if chosen else None
    if environment_id != row.environment_id:
        row.environment_id = environment_id
        values, secret_keys = await resolve_env(
            session=session,
            project_id=project.id,
            environment_id=environment_id,
            preview=environment_id is None or row.pr_number is not None,
        )
        row.env_enc, row.secret_keys = crypto.encrypt_json(values), secret_keys


async def _add_databases(
    p: Platform, session: AsyncSession, row: Deployment, project: Project
) -> None:
    """The project's managed databases join the deployment's env snapshot as secrets (made
    for its environment or preview branch first, when new). A variable the user set keeps
    the user's value."""
    target = databases.Target(
        project_id=project.id,
        environment_id=row.environment_id,
        preview=row.environment_id is None or row.pr_number is not None,
        branch=row.branch,
        pr_number=row.pr_number,
    )
    found = await databases.env_for(
        session=session,
        settings=p.settings,
        target=target,
        config=row.config,
        host_address=p.runtimes.get(row.runtime).host_address,
    )
    if found:
        snapshot = deployments.env_snapshot(row)
        row.env_enc = crypto.encrypt_json({**found, **snapshot})
        row.secret_keys = sorted(set(row.secret_keys) | (found.keys() - snapshot.keys()))


async def _spec(
    p: Platform,
    session: AsyncSession,
    deployment: Deployment,
    project: Project,
    root: Path,
    plan: builds.Plan,
) -> RuntimeSpec:
    team = await session.get(Team, project.team_id)
    environment = (
        await session.get(Environment, deployment.environment_id)
        if deployment.environment_id
        else None
    )
    assert team is not None
    config = deployment.config
    preview = deployment.environment_id is None or deployment.pr_number is not None
    port = int(config.get("port") or 8000)
    injected = {
        **plan.env,
        **p.settings.build_env,
        **injected_env(p, project, team, deployment, environment, port),
    }
    env = runtime_env(injected, deployments.env_snapshot(deployment), deployment.runtime, port)
    return RuntimeSpec(
        deployment_id=deployment.id,
        project_id=project.id,
        source_dir=root,
        start_command=plan.start,
        install_command=plan.install,
        build_command=plan.build,
        pre_deploy_command=plan.pre_deploy,
        env=env,
        port=port,
        image=plan.image,
        cpus=config.get("cpus"),
        memory_mb=config.get("memory_mb"),
        build_memory_mb=config.get("build_memory_mb") or p.settings.build_memory_mb,
        build_cpus=config.get("build_cpus") or p.settings.build_cpus,
        path=plan.path,
        install_cache=f"{plan.cache_key}:{plan.cache_dir}" if plan.cache_key else None,
        support_files=builds.SUPPORT_FILES,
        pids_limit=p.settings.default_pids,
        labels={"devpush.team": team.id},
        volumes=volumes.mounts(config, None if preview else deployment.environment_id),
        health_path=config.get("health_path") or "/",
    )


async def restart_spec(
    p: Platform, session: AsyncSession, deployment: Deployment, project: Project
) -> RuntimeSpec:
    """The spec to run a deployment's app again (its env rebuilt from the snapshot and the
    recorded plan, as at deploy time), for Runtime.restart: no source tree, no build."""
    recorded = deployment.config.get("plan")
    if not recorded:
        raise Invalid("this deployment recorded no build plan; redeploy it instead")
    names = {f.name for f in dataclasses.fields(builds.Plan)}
    values = {k: v for k, v in recorded.items() if k in names}
    values |= {"path": tuple(values.get("path") or ()), "notes": (), "files": {}}
    plan = builds.Plan(**values)
    return await _spec(p, session, deployment, project, _workdir(p, deployment.id), plan)


async def _launch(p: Platform, deployment: Deployment, spec: RuntimeSpec) -> None:
    runtime = p.runtimes.get(deployment.runtime)
    started = utcnow()
    handle = await runtime.create(spec)
    if not await _save_handle(p, deployment.id, handle):
        await runtime.remove(handle)
        return
    handle = await runtime.start(handle)
    if not await _save_handle(p, deployment.id, handle, timing=("runtime_start", started)):
        await runtime.remove(handle)
        return
    await events.nudge_monitor(p.redis, deployment.id)


async def record_upstream(p: Platform, deployment_id: str, handle: RuntimeHandle) -> bool:
    """Record where a deploying instance answers, learnt only once its app runs (swarm)."""
    return await _save_handle(p, deployment_id, handle)


async def _save_handle(
    p: Platform,
    deployment_id: str,
    handle: RuntimeHandle,
    timing: tuple[str, datetime] | None = None,
) -> bool:
    """Record the runtime handle; False when the deployment was concluded meanwhile."""
    async with session_scope(p.sessions) as session:
        row = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployments.is_concluded(row):
            return False
        row.runtime_handle = handle.to_json()
        row.upstream = handle.upstream
        if timing:
            row.timings = {**row.timings, timing[0]: elapsed(timing[1])}
        return True


# ---- skip / fail ---------------------------------------------------------------------
async def skip_deployment(p: Platform, deployment_id: str, reason: str) -> None:
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployments.is_concluded(deployment):
            return
        deployments.conclude(deployment, Conclusion.skipped, reason)
    await system_log(p, deployment_id, reason)


async def fail_deployment(p: Platform, deployment_id: str, error: str) -> None:
    """Idempotent: a second call (a job run twice, the monitor and the worker both failing it)
    only finishes the teardown; the reason is recorded and logged once."""
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployments.is_concluded(deployment):
            return
        first = deployment.status != Status.fail
        if first:
            deployment.status = Status.fail
            deployment.error = error[:4000]
        error = deployment.error or error
    if first:
        await system_log(p, deployment_id, error)
    await remove_instance(p, deployment_id)
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployments.is_concluded(deployment):
            return
        deployments.conclude(deployment, Conclusion.failed, error)
