"""Run the pending upgrade steps once each, in order, and record them (see the package doc)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from devpush.db import make_sessionmaker, session_scope, utcnow
from devpush.deployments import routing
from devpush.errors import DevpushError
from devpush.settings import Settings
from devpush.upgrades.models import UpgradeStep
from devpush.upgrades.steps import Step, load

# One migrating process at a time runs steps (an `up` and a `devpush migrate` could meet).
LOCK_KEY = 0x64657670  # "devp"
OUTPUT_TAIL = 2000
DONE = ("applied", "baseline")
Sessions = async_sessionmaker[AsyncSession]


class UpgradeFailed(DevpushError):
    status_code = 500


@dataclass(frozen=True)
class StepState:
    version: str
    status: str  # applied | baseline | failed | pending
    reason: str
    finished_at: datetime | None = None
    detail: str = ""


async def apply_pending(
    engine: AsyncEngine, settings: Settings, *, fresh: bool, say: Callable[[str], None]
) -> list[str]:
    """Run each step not yet applied, in version order; on a database just created, record
    them as baseline instead (its schema and files are already current). Returns the versions
    run. The first failure is recorded and raised: the steps after it wait for the next run."""
    steps = load(settings)
    sessions = make_sessionmaker(engine)
    ran: list[str] = []
    async with engine.connect() as lock:
        await lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        await lock.commit()
        try:
            async with session_scope(sessions) as session:
                done = {
                    row.version
                    for row in await session.scalars(select(UpgradeStep))
                    if row.status in DONE
                }
            for step in steps:
                if step.version in done:
                    continue
                if fresh:
                    await _record(sessions, step, "baseline", utcnow())
                    continue
                say(f"upgrade step {step.version}: {step.reason}")
                await _run(sessions, settings, step, say)
                ran.append(step.version)
        finally:
            await lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            await lock.commit()
    return ran


async def _run(
    sessions: Sessions, settings: Settings, step: Step, say: Callable[[str], None]
) -> None:
    started = utcnow()
    try:
        for action in step.actions:
            if action == "sync-routes":
                async with session_scope(sessions) as session:
                    changed = await routing.sync_all(
                        session=session, settings=settings, platform=False
                    )
                say(f"  routes rewritten: {len(changed)} project file(s) changed")
            elif action == "script":
                await _script(settings, step, say)
    except (DevpushError, OSError) as exc:
        message = exc.message if isinstance(exc, DevpushError) else str(exc)
        await _record(sessions, step, "failed", started, detail=message)
        raise UpgradeFailed(f"upgrade step {step.version} failed: {message}") from None
    await _record(sessions, step, "applied", started)


async def _script(settings: Settings, step: Step, say: Callable[[str], None]) -> None:
    assert step.script is not None
    env = os.environ | {
        "DEVPUSH_DATA_DIR": str(settings.data_path),
        "DEVPUSH_UPGRADE_VERSION": step.version,
    }
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(step.script),
        cwd=settings.data_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    tail = ""

    async def pump() -> None:
        nonlocal tail
        assert proc.stdout is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            say(f"  {line}")
            tail = (tail + line + "\n")[-OUTPUT_TAIL:]

    try:
        await asyncio.wait_for(asyncio.gather(pump(), proc.wait()), settings.upgrade_step_timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise UpgradeFailed(
            f"{step.script.name} ran longer than {settings.upgrade_step_timeout:.0f}s "
            "(DEVPUSH_UPGRADE_STEP_TIMEOUT)"
        ) from None
    if proc.returncode != 0:
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        raise UpgradeFailed(f"{step.script.name} exited with {proc.returncode}: {last}")


async def _record(
    sessions: Sessions, step: Step, status: str, started: datetime, detail: str = ""
) -> None:
    async with session_scope(sessions) as session:
        row = await session.get(UpgradeStep, step.version)
        if row is None:
            row = UpgradeStep(version=step.version)
            session.add(row)
        row.status, row.reason, row.detail = status, step.reason, detail[:OUTPUT_TAIL]
        row.started_at, row.finished_at = started, utcnow()


async def states(session: AsyncSession, settings: Settings) -> list[StepState]:
    """Every step file with its recorded outcome (pending when none), in version order, plus
    recorded steps whose files are gone (an older install's)."""
    recorded = {row.version: row for row in await session.scalars(select(UpgradeStep))}
    result = []
    for step in load(settings):
        row = recorded.pop(step.version, None)
        if row is None:
            result.append(StepState(step.version, "pending", step.reason))
        else:
            result.append(
                StepState(row.version, row.status, row.reason, row.finished_at, row.detail)
            )
    for row in recorded.values():
        result.append(StepState(row.version, row.status, row.reason, row.finished_at, row.detail))
    return result
