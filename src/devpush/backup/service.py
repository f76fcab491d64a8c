"""Backup and restore of a whole platform: the database, the keys, Traefik's dynamic files and
the push remote's repositories, in one archive (`archive.py`).

Both talk to the running platform (`devpush up`/`--detach`, or the compose stack): its
PostgreSQL must answer. Restore checks everything it can before it changes anything (the
archive, the keys, an empty target), swaps the database in one transaction, migrates it up,
installs keys, repositories and Traefik files, restarts the embedded app, worker and monitor so
they read the restored keys, and finally redeploys every deployment an alias served, from the
same commit, through the ordinary deploy flow; the running worker brings them up.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Protocol

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from devpush import crypto, signing
from devpush.backup import archive
from devpush.db import make_engine, make_sessionmaker
from devpush.embedded.state import database_url, read_state
from devpush.errors import ConfigError, DevpushError, Invalid, ServiceUnavailable
from devpush.settings import Settings
from devpush.unreachable import reason

EMBEDDED_COMPONENTS = ["app", "worker", "monitor"]
PG_TIMEOUT = 3600


class Progress(Protocol):
    """How a long step is shown (the CLI draws a spinner; tests may ignore it)."""

    def step(self, message: str) -> AbstractContextManager[None]: ...


class Quiet:
    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        yield


@dataclass
class DbInfo:
    server_major: int
    revision: str | None
    projects: int
    shared_teams: int


@dataclass
class RestoreResult:
    manifest: archive.Manifest
    redeployed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    forgotten_instances: int = 0
    warnings: list[str] = field(default_factory=list)


# ---- the database ------------------------------------------------------------------------
def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL without the password (which travels in PGPASSWORD, not in argv)."""
    parsed = make_url(url)
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _unreachable(settings: Settings, url: str, exc: BaseException) -> ServiceUnavailable:
    where = make_url(url)
    hint = (
        "start the platform with `devpush up --detach` (same DEVPUSH_DATA_DIR)"
        if not settings.database_url
        else "check DEVPUSH_DATABASE_URL and that PostgreSQL is running"
    )
    found = reason(exc)
    answer = found[1] if found else f"{type(exc).__name__}: {exc}".splitlines()[0]
    return ServiceUnavailable(
        f"cannot reach the platform's database at {where.host}:{where.port}/{where.database} "
        f"({answer}); {hint}"
    )


async def _inspect(url: str) -> DbInfo:
    from devpush.db import all_models
    from devpush.projects.models import Project
    from devpush.teams.models import Team

    all_models()
    engine = make_engine(url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            version = int(await session.scalar(text("SHOW server_version_num")) or 0)
            tables = set(
                await session.scalars(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
            )
            revision = (
                await session.scalar(text("SELECT version_num FROM alembic_version"))
                if "alembic_version" in tables
                else None
            )
            projects = (
                await session.scalar(select(func.count()).select_from(Project))
                if "projects" in tables
                else 0
            )
            shared = (
                await session.scalar(
                    select(func.count()).select_from(Team).where(Team.personal.is_(False))
                )
                if "teams" in tables
                else 0
            )
    finally:
        await engine.dispose()
    return DbInfo(
        server_major=version // 10000,
        revision=revision,
        projects=int(projects or 0),
        shared_teams=int(shared or 0),
    )


def inspect_database(settings: Settings) -> DbInfo:
    url = database_url(settings)
    try:
        return asyncio.run(_inspect(url))
    except (TimeoutError, OSError, SQLAlchemyError) as exc:
        raise _unreachable(settings, url, exc) from None


def _bundled_pg_bin() -> Path | None:
    try:
        from devpush.embedded.services import _pg_bin

        return _pg_bin()
    except ConfigError:
        return None


def _major(binary: str) -> int:
    try:
        result = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return 0
    match = re.search(r"(\d+)(?:\.\d+)?", result.stdout)
    return int(match.group(1)) if match else 0


def pg_tool(settings: Settings, name: str, server_major: int) -> str:
    """pg_dump/pg_restore/psql able to talk to a server of `server_major`: pgserver's bundled
    one for the embedded database, the one on PATH first for an external one."""
    bundled_dir = _bundled_pg_bin()
    bundled = str(bundled_dir / name) if bundled_dir and (bundled_dir / name).exists() else None
    on_path = shutil.which(name)
    order = [on_path, bundled] if settings.database_url else [bundled, on_path]
    found = []
    for candidate in [c for c in order if c]:
        major = _major(candidate)
        found.append(f"{candidate} ({major or 'unknown version'})")
        if major >= server_major:
            return candidate
    if not found:
        raise ConfigError(
            f"{name} is missing: install PostgreSQL's client tools "
            "(`apt-get install postgresql-client`) or the pgserver package"
        )
    raise ConfigError(
        f"no {name} for PostgreSQL {server_major} (found {', '.join(found)}); "
        f"install postgresql-client-{server_major} so that {name} on PATH matches the server"
    )


def _run_pg(argv: list[str], env: dict[str, str], what: str) -> None:
    try:
        result = subprocess.run(
            argv,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=PG_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable(f"{what} took longer than {PG_TIMEOUT}s") from None
    if result.returncode != 0:
        raise ServiceUnavailable(f"{what} failed: {result.stderr.strip()[-2000:]}")


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
        libpq, env = _libpq(url)
        with progress.step("Dumping the database (pg_dump)"):
            _run_pg(
                [pg_dump, "--format=custom", "--no-owner", f"--file={dump}", f"--dbname={libpq}"],
                env,
                "pg_dump",
            )
        partial = Path(tmp) / "archive.tar.gz"
        with progress.step("Writing the archive (database, keys, Traefik files, repositories)"):
            archive.write(
                partial,
                manifest=manifest,
                database_dump=dump,
                keys=crypto.load_keys(settings),
                secret_key=signing.secret_key(settings),
                traefik_dir=settings.traefik_dynamic_dir,
                repos_dir=repos,
            )
            os.replace(partial, output)
    return output


# ---- restore -----------------------------------------------------------------------------
def known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from devpush.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def check_keys(settings: Settings, archive_keys: list[str], archive_path: Path) -> None:
    """With keys in the environment, they must open what the archive's keys encrypted."""
    if not settings.encryption_keys:
        return
    configured = set(crypto.load_keys(settings))
    if not set(archive_keys) <= configured:
        raise ConfigError(
            "DEVPUSH_ENCRYPTION_KEYS differs from the backup's keys, so the restored secrets "
            "could not be decrypted. Put the backup's keys in .env "
            f"(DEVPUSH_ENCRYPTION_KEYS=$(tar -xzOf {archive_path} {archive.KEYS} | paste -sd,)), "
            "restart the platform, and run the restore again"
        )


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".restore-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    os.replace(tmp, path)


def install_keys(settings: Settings, staging: Path) -> list[str]:
    """Put the archive's keys where this platform reads them; returns warnings."""
    warnings = []
    keys = _keys(staging)
    if not settings.encryption_keys:
        crypto.write_keys(settings, keys)
    crypto.get_fernet.cache_clear()
    secret = (staging / archive.SECRET_KEY).read_text().strip()
    if settings.secret_key and settings.secret_key != secret:
        warnings.append(
            "DEVPUSH_SECRET_KEY differs from the backup's: sign-in sessions and links from "
            "before the backup are no longer valid (everything else is unaffected)"
        )
    elif not settings.secret_key:
        _write_private(settings.data_path / "secrets" / "secret_key", secret + "\n")
    return warnings


def _keys(staging: Path) -> list[str]:
    keys = [k for k in (staging / archive.KEYS).read_text().split() if k]
    if not keys:
        raise Invalid(f"the archive's {archive.KEYS} is empty")
    return keys


def install_files(settings: Settings, staging: Path) -> None:
    """Swap in the archive's push-remote repositories and Traefik dynamic files."""
    new_repos = staging / "repos"
    repos = settings.data_path / "repos"
    if new_repos.is_dir():
        old = staging / "previous-repos"
        if repos.exists():
            os.replace(repos, old)
        shutil.move(str(new_repos), repos)
        shutil.rmtree(old, ignore_errors=True)
    dynamic = staging / "traefik" / "dynamic"
    if dynamic.is_dir():
        settings.traefik_dynamic_dir.mkdir(parents=True, exist_ok=True)
        for path in dynamic.iterdir():
            if path.is_file():
                shutil.copy2(path, settings.traefik_dynamic_dir / path.name)


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
    from devpush.embedded.launcher import send_control

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


def replace_database(settings: Settings, dump: Path, server_major: int) -> None:
    """Replace the public schema with the dump's, in one transaction: on any error the
    database is left as it was."""
    url = database_url(settings)
    libpq, env = _libpq(url)
    pg_restore = pg_tool(settings, "pg_restore", server_major)
    psql = pg_tool(settings, "psql", server_major)
    with tempfile.TemporaryDirectory(prefix=".devpush-restore-sql-", dir=dump.parent) as tmp:
        script = Path(tmp) / "restore.sql"
        _run_pg(
            [pg_restore, "--no-owner", "--no-acl", f"--file={script}", str(dump)],
            env,
            "pg_restore (reading the dump)",
        )
        _run_pg(
            [
                psql,
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                "--command=DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;",
                f"--file={script}",
                f"--dbname={libpq}",
            ],
            env,
            "restoring the database",
        )


async def _reset_and_sync(settings: Settings) -> tuple[int, list[str]]:
    """Forget the old machine's runtime instances and rewrite Traefik's files from the
    restored database; returns how many instances were forgotten and the deployments to
    bring back."""
    from devpush.db import all_models
    from devpush.deployments import service as deployments
    from devpush.proxy.sync import sync_all

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
    from devpush.db import session_scope
    from devpush.deployments import flows
    from devpush.deployments import service as deployments
    from devpush.platform import build_platform
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
                new = await flows.create_and_enqueue(
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
            check_keys(settings, _keys(staging / "archive"), path)
            _check_target(info, force)
        return _apply(settings, staging / "archive", manifest, info, progress)


def _apply(
    settings: Settings,
    staging: Path,
    manifest: archive.Manifest,
    info: DbInfo,
    progress: Progress,
) -> RestoreResult:
    from devpush.migrate import upgrade

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
        with progress.step("Installing keys, repositories and Traefik files"):
            result.warnings += install_keys(settings, staging)
            install_files(settings, staging)
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
