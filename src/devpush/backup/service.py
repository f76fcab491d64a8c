"""Backup and restore of a whole platform: the database, the keys, Traefik's dynamic files,
the push remote's repositories and the apps' volumes (`volumes.py`), in one archive
(`archive.py`).

Both talk to the running platform (`devpush up`/`--detach`, or the compose stack): its
PostgreSQL must answer. Restore checks everything it can before it changes anything (the
archive, the keys, an empty target), swaps the database in one transaction, migrates it up,
installs keys, repositories and Traefik files, restarts the embedded app, worker and monitor so
they read the restored keys, and finally redeploys every deployment an alias served, from the
same commit, through the ordinary deploy flow; the running worker brings them up.

The database side (inspection, pg_dump/pg_restore) is in `postgres.py`; installing the keys
and files is in `install.py`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Protocol

from devpush import crypto, signing
from devpush.backup import archive
from devpush.backup import volumes as backup_volumes
from devpush.backup.install import check_keys, install_files, install_keys, staged_keys
from devpush.backup.postgres import (
    DbInfo,
    inspect_database,
    libpq_url,
    pg_tool,
    replace_database,
    run_pg,
)
from devpush.db import make_engine, make_sessionmaker
from devpush.errors import ConfigError, DevpushError, Invalid, ServiceUnavailable
from devpush.runstate import database_url, read_state
from devpush.settings import Settings

EMBEDDED_COMPONENTS = ["app", "worker", "monitor"]
log = logging.getLogger("devpush.backup")


class Progress(Protocol):
    """How a long step is shown (the CLI draws a spinner; tests may ignore it)."""

    def step(self, message: str) -> AbstractContextManager[None]: ...


class Quiet:
    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        yield


@dataclass
class RestoreResult:
    manifest: archive.Manifest
    redeployed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    forgotten_instances: int = 0
    warnings: list[str] = field(default_factory=list)


# ---- backup ------------------------------------------------------------------------------
def default_output(settings: Settings) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.data_path / "backups" / f"devpush-backup-{stamp}.tar.gz"


def _devpush_version() -> str:
    try:
        return metadata.version("devpush")
    except metadata.PackageNotFoundError:
        return "unknown"


def backup(settings: Settings, output: Path | None, progress: Progress) -> Path:
    """Write the archive; returns its path. A failure leaves no partial archive behind."""
    output = (output or default_output(settings)).resolve()
    if output.is_dir():
        raise Invalid(f"{output} is a directory; give a file name such as {output}/devpush.tar.gz")
    url = database_url(settings)
    with progress.step("Checking the database"):
        info = inspect_database(settings)
        if info.revision is None:
            raise ConfigError(
                "the platform's database has no schema yet; run `devpush migrate` "
                "(or start the platform) first"
            )
        pg_dump = pg_tool(settings, "pg_dump", info.server_major)
    repos = settings.data_path / "repos"
    contents = {
        "database": archive.DATABASE,
        "keys": archive.KEYS,
        "secret_key": archive.SECRET_KEY,
        "traefik_files": sorted(p.name for p in settings.traefik_dynamic_dir.glob("*"))
        if settings.traefik_dynamic_dir.is_dir()
        else [],
        "repos": sorted(p.name for p in repos.glob("*.git")) if repos.is_dir() else [],
        "projects": info.projects,
        "volumes": backup_volumes.process_volumes(settings),
    }
    docker_volumes, warnings = backup_volumes.docker_volumes(settings)
    contents["docker_volumes"] = sorted(docker_volumes)
    contents["warnings"] = warnings
    for warning in warnings:
        log.warning(warning)
    volume_dirs = {backup_volumes.ARCHIVE_DIR: backup_volumes.process_root(settings)} | {
        f"{backup_volumes.DOCKER_ARCHIVE_DIR}/{name}": path for name, path in docker_volumes.items()
    }
    manifest = archive.Manifest(
        devpush_version=_devpush_version(),
        alembic_revision=info.revision,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        contents=contents,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".devpush-backup-", dir=output.parent) as tmp:
        os.chmod(tmp, 0o700)
        dump = Path(tmp) / archive.DATABASE
        libpq, env = libpq_url(url)
        with progress.step("Dumping the database (pg_dump)"):
            run_pg(
                [pg_dump, "--format=custom", "--no-owner", f"--file={dump}", f"--dbname={libpq}"],
                env,
                "pg_dump",
            )
        partial = Path(tmp) / "archive.tar.gz"
        with progress.step(
            "Writing the archive (database, keys, Traefik files, repositories, volumes)"
        ):
            archive.write(
                partial,
                manifest=manifest,
                database_dump=dump,
                keys=crypto.load_keys(settings),
                secret_key=signing.secret_key(settings),
                traefik_dir=settings.traefik_dynamic_dir,
                repos_dir=repos,
                volumes=volume_dirs,
                keep=backup_volumes.keep,
            )
            os.replace(partial, output)
    return output


# ---- restore -----------------------------------------------------------------------------
def known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from devpush.upgrades.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _supervised(settings: Settings) -> bool:
    """Whether an embedded supervisor (`devpush up`) runs the app, worker and monitor."""
    state = read_state(settings)
    if not state or not state.supervisor_pid:
        return False
    try:
        os.kill(state.supervisor_pid, 0)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def control_components(settings: Settings, action: str, timeout: float = 300) -> None:
    """Stop or start the embedded app, worker and monitor, waiting until they are."""
    from devpush.embedded.control_file import send_control

    send_control(settings, action, EMBEDDED_COMPONENTS)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(settings)
        running = {n for n in EMBEDDED_COMPONENTS if state and _alive(state.children.get(n))}
        if (action == "stop" and not running) or (
            action == "start" and running == set(EMBEDDED_COMPONENTS)
        ):
            return
        time.sleep(0.5)
    raise ServiceUnavailable(
        f"the platform did not {action} {', '.join(EMBEDDED_COMPONENTS)} within {timeout:.0f}s; "
        "see <data dir>/logs/ and run `devpush status`"
    )


async def _reset_and_sync(settings: Settings) -> tuple[int, list[str]]:
    """Forget the old machine's runtime instances and rewrite Traefik's files from the
    restored database; returns how many instances were forgotten and the deployments to
    bring back."""
    from devpush.deployments import service as deployments
    from devpush.deployments.routing import sync_all
    from devpush.models import all_models

    all_models()
    engine = make_engine(database_url(settings), pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            forgotten = await deployments.forget_instances(session=session)
            await session.flush()
            await sync_all(session=session, settings=settings)
            targets = [d.id for d in await deployments.serving_deployments(session=session)]
    finally:
        await engine.dispose()
    return forgotten, targets


async def redeploy(settings: Settings, deployment_ids: list[str]) -> tuple[list[str], list[str]]:
    """A new deployment of each one's commit, through the ordinary deploy flow (the worker
    picks them up). Returns the new ids and the skipped ones, with why."""
    from devpush.bootstrap import build_platform
    from devpush.db import session_scope
    from devpush.deployments import actions
    from devpush.deployments import service as deployments
    from devpush.projects.models import Project

    p = await build_platform(settings, pool_size=1)
    created, skipped = [], []
    try:
        for deployment_id in deployment_ids:
            async with session_scope(p.sessions) as session:
                old = await deployments.get(session=session, deployment_id=deployment_id)
                project = await session.get(Project, old.project_id)
                assert project is not None
                if project.status != "active":
                    skipped.append(f"{project.slug}/{old.branch}: project is {project.status}")
                    continue
                new = await actions.create_and_enqueue(
                    session=session,
                    p=p,
                    principal=None,
                    project=project,
                    branch=old.branch,
                    commit_sha=old.commit_sha,
                    pr_number=old.pr_number,
                    trigger="restore",
                    ip=None,
                )
                created.append(new.id)
    finally:
        await p.close()
    return created, skipped


def _check_target(info: DbInfo, force: bool) -> None:
    if force or (info.projects == 0 and info.shared_teams == 0):
        return
    raise Invalid(
        f"the platform's database is not empty ({info.projects} projects, {info.shared_teams} "
        "shared teams); restore onto a fresh install, or pass --force to replace everything"
    )


def restore(settings: Settings, path: Path, *, force: bool, progress: Progress) -> RestoreResult:
    path = path.resolve()
    settings.data_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".devpush-restore-", dir=settings.data_path) as tmp:
        staging = Path(tmp)
        os.chmod(staging, 0o700)
        with progress.step("Checking the platform's database"):
            info = inspect_database(settings)  # first: is there a platform to restore onto
        with progress.step(f"Checking {path.name}"):
            manifest = archive.read(path, staging / "archive")
            if not known_revision(manifest.alembic_revision):
                raise Invalid(
                    f"the backup's database schema (revision {manifest.alembic_revision}) is "
                    f"newer than this devpush knows (it was made by devpush "
                    f"{manifest.devpush_version}); upgrade devpush, then restore"
                )
            check_keys(settings, staged_keys(staging / "archive"), path)
            _check_target(info, force)
        return _apply(settings, staging / "archive", manifest, info, progress)


def _apply(
    settings: Settings,
    staging: Path,
    manifest: archive.Manifest,
    info: DbInfo,
    progress: Progress,
) -> RestoreResult:
    from devpush.upgrades.migrate import upgrade

    result = RestoreResult(manifest=manifest)
    supervised = _supervised(settings)
    if supervised:
        with progress.step("Stopping the app, worker and monitor"):
            control_components(settings, "stop")
    try:
        with progress.step("Restoring the database"):
            replace_database(settings, staging / archive.DATABASE, info.server_major)
        with progress.step("Migrating the database"):
            upgrade(database_url(settings))
        with progress.step("Installing keys, repositories, Traefik files and volumes"):
            result.warnings += install_keys(settings, staging)
            install_files(settings, staging)
            result.warnings += backup_volumes.install(settings, staging)
            result.forgotten_instances, targets = asyncio.run(_reset_and_sync(settings))
    finally:
        if supervised:
            with progress.step("Starting the app, worker and monitor"):
                control_components(settings, "start")
    with progress.step(f"Redeploying {len(targets)} deployments"):
        try:
            result.redeployed, result.skipped = asyncio.run(redeploy(settings, targets))
        except (OSError, DevpushError) as exc:
            raise ServiceUnavailable(
                f"the backup is restored, but redeploying failed ({exc}); redeploy each "
                "project from the dashboard or with `devpush deployments redeploy`"
            ) from None
    return result
