"""The deployment flow, the one place where deployments, git, runtimes, the proxy and logs
meet: prepare (fetch, export, detect) -> deploy (runtime) -> finalize (aliases, Traefik) ->
completed. Each step reloads the row under a lock and returns early when the deployment has
already moved on, so every step is idempotent and safe to run twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import logging
import re
import shutil
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devpush import builds, crypto, events
from devpush.auth.service import Principal
from devpush.db import session_scope, utcnow
from devpush.deployments import service as deployments
from devpush.deployments.models import Alias, Conclusion, Deployment, InstanceHealth, Status
from devpush.errors import DevpushError, Invalid, ServiceUnavailable
from devpush.github import reporting as github_reporting
from devpush.logs.store import NewLine
from devpush.platform import Platform
from devpush.projects import repo_config
from devpush.projects.env import resolve_env
from devpush.projects.models import Environment, Project
from devpush.projects.service import list_environments, pattern_matches
from devpush.proxy import sync as proxy_sync
from devpush.proxy import traefik
from devpush.runtime import Runtimes
from devpush.runtime.base import RuntimeHandle, RuntimeSpec
from devpush.signing import traefik_api_auth
from devpush.sources import git, remote
from devpush.teams.models import Team

log = logging.getLogger("devpush.flows")


# ---- events and system log lines -------------------------------------------------------
def status_payload(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "project_id": deployment.project_id,
        "status": deployment.status.value,
        "conclusion": deployment.conclusion.value if deployment.conclusion else None,
        "error": deployment.error,
        "branch": deployment.branch,
        "commit_sha": deployment.commit_sha,
        "instance_health": deployment.instance_health.value if deployment.instance_health else None,
        "exit_code": deployment.exit_code,
    }


async def publish_status(p: Platform, deployment: Deployment) -> None:
    payload = status_payload(deployment)
    await events.publish_deployment(p.redis, deployment.id, "status", payload)
    await events.publish_project(p.redis, deployment.project_id, "deployment.status", payload)
    await github_reporting.notify(p, deployment)


async def system_log(p: Platform, deployment_id: str, message: str) -> None:
    """A platform message ("Fetching…", "Build failed") as a log line of phase `system`."""
    line = NewLine(ts=utcnow(), stream="stdout", phase="system", message=message)
    async with session_scope(p.sessions) as session:
        stored = await p.log_store.append(
            session=session, deployment_id=deployment_id, lines=[line]
        )
    for s in stored:
        await events.publish_deployment(p.redis, deployment_id, "log", s.to_json())


# Lines of a failed build that say why, most useful first; and noise that never does.
_CAUSE = re.compile(
    r"error|not found|no solution|unsatisfiable|failed|cannot|unable|denied|killed|no such|"
    r"no space left",
    re.I,
)
_NOISE = re.compile(
    r"complete log of this run|^npm (error|ERR!) (code|path|errno|syscall)\b"
    r"|^npm (error|ERR!) notsup (Valid|Actual)"
)


async def failure_cause(p: Platform, deployment_id: str) -> str | None:
    """The line of a failed build's output that most likely says why (for the one-line
    error a user reads first), or None when the build printed nothing."""
    async with session_scope(p.sessions) as session:
        lines = await p.log_store.tail(
            session=session, deployment_id=deployment_id, phases=("build", "pre_deploy"), limit=60
        )
    messages = [m for line in lines if (m := line.message.strip()) and not _NOISE.search(m)]
    found = next((m for m in reversed(messages) if _CAUSE.search(m)), None)
    cause = found or (messages[-1] if messages else None)
    return cause[:300] if cause else None


def _elapsed(start: datetime | None) -> float:
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
    env["HOST"] = "0.0.0.0" if runtime == "docker" else "127.0.0.1"
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
        deployment.timings = {**deployment.timings, "queue": _elapsed(deployment.created_at)}
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
    await publish_status(p, deployment)
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
        row.timings = {**row.timings, "fetch": _elapsed(started)}
        spec = await _spec(p, session, row, project, root, plan)
    await publish_status(p, row)
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
            row.timings = {**row.timings, timing[0]: _elapsed(timing[1])}
        return True


# ---- finalize / fail / cancel -----------------------------------------------------------
ROUTE_TIMEOUT = 3.0  # seconds Traefik has to load a route before the switch is undone


@dataclasses.dataclass(frozen=True)
class _Pointed:
    """What finalize's first transaction switched: the aliases (and what each one's
    `previous` was before, to put back if the route never goes live) and the route to await."""

    router: str
    hostname: str
    values: list[str]
    earlier: dict[str, str | None]


async def finalize_deployment(p: Platform, deployment_id: str) -> None:
    """Switch the aliases and rewrite Traefik's file (committed: no lock is held while
    Traefik loads it), wait for the route, then conclude: succeeded once served, failed with
    the aliases back on the previous deployment when Traefik never loads it."""
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.status not in (Status.deploy, Status.finalize) or not deployment.upstream:
            return
        deployment.status = Status.finalize
        deployment.ready_at = deployment.ready_at or utcnow()
    await publish_status(p, deployment)
    started = utcnow()
    pointed = await _point_deployment(p, deployment_id)
    if pointed is None:
        return
    # Succeeded means served: Traefik must have loaded the route before the conclusion.
    live = await wait_route_live(p, pointed.router, pointed.hostname, ROUTE_TIMEOUT)
    if live:
        await _conclude_live(p, deployment_id, pointed, started)
    else:
        await _withdraw(p, deployment_id, pointed)


async def _point_deployment(p: Platform, deployment_id: str) -> _Pointed | None:
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.status != Status.finalize:
            return None
        project = await session.get(Project, deployment.project_id)
        assert project is not None
        environment = (
            await session.get(Environment, deployment.environment_id)
            if deployment.environment_id
            else None
        )
        specs = deployments.alias_specs(project, deployment, environment)
        earlier = await _earlier_previous(session, specs, deployment.id)
        await deployments.point_aliases(
            session=session, project_id=project.id, specs=specs, deployment_id=deployment.id
        )
        await proxy_sync.sync_project(session=session, settings=p.settings, project_id=project.id)
        return _Pointed(
            router=traefik.router_name(project.slug, deployment.id),
            hostname=f"{specs[-1].value}.{p.settings.deploy_domain}",
            values=[s.value for s in specs],
            earlier=earlier,
        )


async def _conclude_live(
    p: Platform, deployment_id: str, pointed: _Pointed, started: datetime
) -> None:
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.status != Status.finalize:  # concluded meanwhile (canceled, run twice)
            if deployment.conclusion != Conclusion.succeeded:
                await _restore_aliases(p, session, deployment.project_id, deployment_id, pointed)
            return
        deployments.conclude(deployment, Conclusion.succeeded)
        deployment.timings = {
            **deployment.timings,
            "route": _elapsed(started),
            "total": _elapsed(deployment.created_at),
        }
    await publish_status(p, deployment)
    await events.publish_project(
        p.redis,
        deployment.project_id,
        "alias",
        {"deployment_id": deployment.id, "aliases": pointed.values},
    )
    urls = ", ".join(p.settings.deploy_url(value) for value in pointed.values)
    await system_log(p, deployment.id, "Deployment is live: " + urls)
    from devpush.workers.enqueue import enqueue_cleanup

    await enqueue_cleanup(p.redis, deployment.project_id)


async def _withdraw(p: Platform, deployment_id: str, pointed: _Pointed) -> None:
    """Traefik never loaded the route: the aliases serve their previous deployment again
    (rewritten file included), then the deployment fails like any other."""
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployment.conclusion == Conclusion.succeeded:  # a twin job saw it live
            return
        kept = await _restore_aliases(p, session, deployment.project_id, deployment_id, pointed)
        if deployment.status != Status.finalize:  # failed or canceled meanwhile
            return
        reason = _not_loaded(pointed, kept)
        deployment.status, deployment.error = Status.fail, reason
    await publish_status(p, deployment)
    await system_log(p, deployment_id, reason)
    await fail_deployment(p, deployment_id, reason)  # removes the instance, concludes failed


def _not_loaded(pointed: _Pointed, kept: bool) -> str:
    after = "the previous deployment keeps serving" if kept else "its URLs were withdrawn"
    return (
        f"Traefik did not load the route for {pointed.hostname} within {ROUTE_TIMEOUT:g}s; {after}"
    )


async def _earlier_previous(
    session: AsyncSession, specs: list[deployments.AliasSpec], deployment_id: str
) -> dict[str, str | None]:
    """The `previous` of each alias about to switch to `deployment_id` (locked, so it can't
    move before point_aliases): what to put back should the switch be undone."""
    rows = await session.scalars(
        select(Alias).where(Alias.value.in_([s.value for s in specs])).with_for_update()
    )
    return {a.value: a.previous_deployment_id for a in rows if a.deployment_id != deployment_id}


async def _restore_aliases(
    p: Platform, session: AsyncSession, project_id: str, deployment_id: str, pointed: _Pointed
) -> bool:
    """Undo a switch: each of `pointed`'s aliases still on `deployment_id` serves its previous
    deployment again (one created by the switch goes), and Traefik's file follows. True when
    a previous deployment serves again."""
    aliases = await session.scalars(
        select(Alias)
        .where(Alias.value.in_(pointed.values), Alias.deployment_id == deployment_id)
        .with_for_update()
    )
    kept = False
    for alias in aliases:
        if alias.previous_deployment_id is None:
            await session.delete(alias)
            continue
        kept = True
        alias.deployment_id = alias.previous_deployment_id
        alias.previous_deployment_id = pointed.earlier.get(alias.value)
    await session.flush()
    await proxy_sync.sync_project(session=session, settings=p.settings, project_id=project_id)
    return kept


async def _ask_traefik(client: httpx.AsyncClient, url: str) -> httpx.Response | None:
    """Traefik's answer about a router (200 or 404), or None when there is no API to ask: an
    external proxy (nothing listens at TRAEFIK_API_URL, or something that isn't our Traefik
    answers, refusing our credentials)."""
    try:
        response = await client.get(url)
    except httpx.TransportError as exc:
        log.info("Traefik's API not reachable (%s); not waiting for routes", type(exc).__name__)
        return None
    if response.status_code not in (200, 404):
        log.warning(
            "Traefik's API answered %s; not waiting for routes",
            response.status_code,
            extra={"url": url},
        )
        return None
    return response


def _rule(response: httpx.Response) -> str | None:
    """The router's rule from a 200, or None when the body isn't Traefik's."""
    try:
        body = response.json()
    except ValueError:
        return None
    rule = body.get("rule") if isinstance(body, dict) else None
    return rule if isinstance(rule, str) else None


async def wait_route_live(
    p: Platform, router: str, hostname: str, timeout: float = ROUTE_TIMEOUT
) -> bool:
    """Wait until Traefik's `router` serves `hostname` (read from Traefik's loopback API).
    False only when that API answered, and never with the route, for `timeout` seconds.
    Without that API (an external proxy) there is nothing to wait for: True, as when live."""
    host = f"Host(`{hostname}`)"

    def live(response: httpx.Response) -> bool:
        rule = _rule(response) if response.status_code == 200 else ""
        return rule is None or host in rule

    return await _poll_router(p, router, timeout, live, "route not live in time")


async def wait_route_gone(p: Platform, router: str, timeout: float = ROUTE_TIMEOUT) -> bool:
    """Wait until Traefik no longer has `router` (its file was rewritten without it). Without
    Traefik's API (an external proxy) there is nothing to wait for: True, as when gone."""

    def gone(response: httpx.Response) -> bool:
        return response.status_code == 404

    return await _poll_router(p, router, timeout, gone, "route not gone in time")


async def _poll_router(
    p: Platform,
    router: str,
    timeout: float,
    done: Callable[[httpx.Response], bool],
    late: str,
) -> bool:
    """Ask Traefik's API about `router` until `done` says so (True), no usable API answers
    (True: nothing to wait for), or `timeout` passes (False)."""
    url = f"{p.settings.traefik_api}/api/http/routers/{router}@file"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=1, auth=traefik_api_auth(p.settings)) as client:
        while loop.time() < deadline:
            response = await _ask_traefik(client, url)
            if response is None or done(response):
                return True
            await asyncio.sleep(0.01)
    log.warning(late, extra={"router": router})
    return False


async def skip_deployment(p: Platform, deployment_id: str, reason: str) -> None:
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployments.is_concluded(deployment):
            return
        deployments.conclude(deployment, Conclusion.skipped, reason)
    await system_log(p, deployment_id, reason)
    await publish_status(p, deployment)


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
        await publish_status(p, deployment)
        await system_log(p, deployment_id, error)
    await remove_instance(p, deployment_id)
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if deployments.is_concluded(deployment):
            return
        deployments.conclude(deployment, Conclusion.failed, error)
    await publish_status(p, deployment)


async def remove_instance(p: Platform, deployment_id: str, *, unless_warm: bool = False) -> bool:
    """Stop routing to a deployment's instance, then remove it and forget its handle
    (idempotent)."""
    handle = await _unroute(p, deployment_id, unless_warm=unless_warm)
    if handle is None:
        return False
    await _remove_unrouted(p, deployment_id, handle)
    return True


async def _unroute(
    p: Platform, deployment_id: str, *, unless_warm: bool = False
) -> RuntimeHandle | None:
    """Take the deployment's routes away, keeping its instance (and handle) for now. Without an
    upstream it can no longer be served again (rollback refuses it): it is retiring."""
    async with session_scope(p.sessions) as session:
        deployment = await deployments.get(session=session, deployment_id=deployment_id, lock=True)
        if not deployment.runtime_handle:
            return None
        if unless_warm and deployment.id in await deployments.warm_deployment_ids(
            session=session, project_id=deployment.project_id
        ):
            return None
        # Its own `-id-` hostname stops routing first: a request sent to an instance while it
        # is removed would hang until the proxy gives up on the vanished address.
        deployment.upstream = None
        await proxy_sync.sync_project(
            session=session, settings=p.settings, project_id=deployment.project_id
        )
        return RuntimeHandle.from_json(deployment.runtime_handle)


async def _remove_unrouted(p: Platform, deployment_id: str, handle: RuntimeHandle) -> None:
    await p.runtimes.get(handle.backend).remove(handle)
    async with session_scope(p.sessions) as session:  # the row may be gone (project deleted)
        await session.execute(
            update(Deployment).where(Deployment.id == deployment_id).values(runtime_handle=None)
        )


async def cleanup_inactive(p: Platform, project_id: str | None = None) -> list[str]:
    """Retire the instances of concluded deployments that no alias points at (now or just
    before): unroute them, let the requests already sent to them finish for
    `drain_seconds`, then remove them. Deployments retired meanwhile (their own cleanup was
    refused as a duplicate of this running job) are taken in the next round."""
    removed: list[str] = []
    while True:
        async with session_scope(p.sessions) as session:
            stmt = select(Deployment.id).where(
                Deployment.runtime_handle.is_not(None), Deployment.status == Status.completed
            )
            if project_id:
                stmt = stmt.where(Deployment.project_id == project_id)
            candidates = list(await session.scalars(stmt))
            warm = await deployments.warm_deployment_ids(session=session, project_id=project_id)
        retiring = {}
        for deployment_id in candidates:
            if deployment_id not in warm and (
                handle := await _unroute(p, deployment_id, unless_warm=True)
            ):
                retiring[deployment_id] = handle
        if not retiring:
            return removed
        # A request Traefik sent just before the route went (a slow one, or one still
        # connecting to a busy app) is answered by the old instance, not cut off.
        await asyncio.sleep(p.settings.drain_seconds)
        for deployment_id, handle in retiring.items():
            await _remove_unrouted(p, deployment_id, handle)
            removed.append(deployment_id)


# ---- app-side actions: create, cancel, rollback, promote ----------------------------------------
async def create_and_enqueue(
    *,
    session: AsyncSession,
    p: Platform,
    principal: Principal | None,
    pr_number: int | None = None,
    project: Project,
    branch: str,
    commit_sha: str | None,
    trigger: str,
    ip: str | None,
) -> Deployment:
    """Create a deployment, commit, enqueue it and release what it supersedes. Every trigger
    (API, CLI, UI, webhooks, push remote) goes through here."""
    from devpush.audit.service import record
    from devpush.workers.enqueue import abort_start, enqueue_delete_container, enqueue_start

    deployment, superseded = await deployments.create(
        session=session,
        settings=p.settings,
        project=project,
        branch=branch,
        trigger=trigger,
        commit_sha=commit_sha,
        created_by=principal.user_id if principal else None,
        pr_number=pr_number,
    )
    await record(
        session=session,
        principal=principal,
        action="deployment.create",
        resource_type="deployment",
        resource_id=deployment.id,
        team_id=project.team_id,
        ip=ip,
        data={"branch": branch, "trigger": trigger},
    )
    await session.commit()
    await enqueue_start(p.redis, deployment.id)
    await events.publish_project(
        p.redis, project.id, "deployment.created", status_payload(deployment)
    )
    for old in superseded:
        await abort_start(p.redis, old.id)
        await enqueue_delete_container(p.redis, old.id)
        await publish_status(p, old)
    return deployment


async def cancel(p: Platform, session: AsyncSession, deployment: Deployment) -> None:
    """Conclude an in-flight deployment `canceled`, abort its job, release its instance."""
    from devpush.errors import Conflict
    from devpush.workers.enqueue import abort_start, enqueue_delete_container

    row = await deployments.get(session=session, deployment_id=deployment.id, lock=True)
    if deployments.is_concluded(row):
        raise Conflict(
            f"deployment {row.id[:7]} already concluded ({row.conclusion}); nothing to cancel"
        )
    deployments.conclude(row, Conclusion.canceled, "canceled by a user")
    await session.commit()
    await abort_start(p.redis, row.id)
    await enqueue_delete_container(p.redis, row.id)
    await publish_status(p, row)
    await system_log(p, row.id, "Deployment canceled")


async def _switch_environment(
    p: Platform,
    session: AsyncSession,
    project: Project,
    environment: Environment,
    target: Deployment,
) -> None:
    from devpush.errors import Conflict

    if target.instance_health is not None:  # its app exited: its route is pulled
        raise Conflict(crash_conflict(target))
    running = target.runtime_handle and target.upstream  # no upstream: retiring
    if target.conclusion != Conclusion.succeeded or not running:
        raise Conflict(f"deployment {target.id[:7]} is not running any more; redeploy it instead")
    specs = [
        s
        for s in deployments.alias_specs(project, target, environment)
        if s.environment_id == environment.id
    ]
    pointed = _Pointed(
        router=traefik.router_name(project.slug, target.id),
        hostname=f"{specs[0].value}.{p.settings.deploy_domain}",
        values=[s.value for s in specs],
        earlier=await _earlier_previous(session, specs, target.id),
    )
    await deployments.point_aliases(
        session=session, project_id=project.id, specs=specs, deployment_id=target.id
    )
    await proxy_sync.sync_project(session=session, settings=p.settings, project_id=project.id)
    await session.commit()  # the aliases' locks go with it: Traefik is awaited without them
    if not await wait_route_live(p, pointed.router, pointed.hostname, ROUTE_TIMEOUT):
        kept = await _restore_aliases(p, session, project.id, target.id, pointed)
        await session.commit()
        raise ServiceUnavailable(_not_loaded(pointed, kept))
    await events.publish_project(
        p.redis,
        project.id,
        "alias",
        {"deployment_id": target.id, "aliases": [s.value for s in specs]},
    )


def crash_conflict(target: Deployment) -> str:
    code = f" with code {target.exit_code}" if target.exit_code is not None else ""
    if target.instance_health == InstanceHealth.crashed:
        return (
            f"deployment {target.id[:7]} crashed (its app exited{code} too often); "
            "redeploy it once fixed, or roll back to another deployment"
        )
    return (
        f"deployment {target.id[:7]} is restarting (its app exited{code}); try again once it serves"
    )


async def rollback(
    p: Platform, session: AsyncSession, deployment: Deployment, project: Project
) -> Deployment:
    """Serve an older deployment on its environment again. Called on the environment's current
    deployment, it goes back to the previous one; called on an older one, it serves that."""
    from devpush.errors import Conflict, Invalid

    if not deployment.environment_id:
        raise Invalid("this deployment has no environment (a preview); promote it instead")
    environment = await session.get(Environment, deployment.environment_id)
    assert environment is not None
    aliases = await deployments.environment_aliases(session=session, environment_id=environment.id)
    current = next((a for a in aliases if a.type.value == "environment"), None)
    target = deployment
    if current is not None and current.deployment_id == deployment.id:
        if not current.previous_deployment_id:
            raise Conflict("there is no previous deployment to roll back to")
        target = await deployments.get(
            session=session, deployment_id=current.previous_deployment_id
        )
    await _switch_environment(p, session, project, environment, target)
    return target


async def promote(
    p: Platform, session: AsyncSession, deployment: Deployment, project: Project
) -> Deployment:
    """Serve this deployment (e.g. a preview) on the production environment."""
    production = await session.scalar(
        select(Environment).where(
            Environment.project_id == project.id, Environment.is_production.is_(True)
        )
    )
    assert production is not None
    await _switch_environment(p, session, project, production, deployment)
    return deployment
