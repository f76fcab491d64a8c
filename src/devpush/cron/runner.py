"""One cron run: the command in its deployment's instance (Runtime.exec, with the env rebuilt
from the deployment's snapshot), its output in the deployment's logs, its outcome on the row.

Output lines are stored with phase `cron` and prefixed `[job #run]` (the run id's first 8
characters), so the project's log search finds them (`q=nightly`, `q=#1a2b3c4d`) and each
line says which job and run wrote it. A failed or timed-out run emits `cron.failed`."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime

from devpush import events
from devpush.cron.models import CronRun
from devpush.db import session_scope, utcnow
from devpush.deployments.flows import restart_spec
from devpush.deployments.models import Deployment
from devpush.deployments.shipper import MASK, masker
from devpush.errors import DevpushError
from devpush.logs.store import NewLine
from devpush.outbox.emit import emit
from devpush.platform import Platform
from devpush.projects import cron as cron_rules
from devpush.projects.models import Project
from devpush.runtime.base import ExecResult, RuntimeHandle

log = logging.getLogger("devpush.cron")
PHASE = "cron"
FLUSH_LINES = 200
FLUSH_SECONDS = 0.5


def prefix(job: str, run_id: str) -> str:
    return f"[{job} #{run_id[:8]}] "


class CronLog:
    """Buffers a run's lines (secrets masked) and stores them in batches in the deployment's
    logs, published on its stream like the shipper's."""

    def __init__(self, p: Platform, deployment: Deployment, job: str, run_id: str) -> None:
        self.p = p
        self.deployment_id = deployment.id
        self.prefix = prefix(job, run_id)
        self.secrets = masker(deployment)
        self.lines: list[NewLine] = []
        self.flushed = time.monotonic()

    async def line(self, stream: str, message: str) -> None:
        for value in self.secrets:
            message = message.replace(value, MASK)
        self.lines.append(
            NewLine(ts=utcnow(), stream=stream, phase=PHASE, message=self.prefix + message)
        )
        if len(self.lines) >= FLUSH_LINES or time.monotonic() - self.flushed > FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        batch, self.lines = self.lines, []
        self.flushed = time.monotonic()
        if not batch:
            return
        async with session_scope(self.p.sessions) as session:
            stored = await self.p.log_store.append(
                session=session, deployment_id=self.deployment_id, lines=batch
            )
        for s in stored:
            await events.publish_deployment(self.p.redis, self.deployment_id, "log", s.to_json())


async def log_line(p: Platform, deployment_id: str, job: str, run_id: str, message: str) -> None:
    """A platform line about a run (started, skipped, finished) among its output."""
    line = NewLine(ts=utcnow(), stream="stdout", phase=PHASE, message=prefix(job, run_id) + message)
    async with session_scope(p.sessions) as session:
        stored = await p.log_store.append(
            session=session, deployment_id=deployment_id, lines=[line]
        )
    for s in stored:
        await events.publish_deployment(p.redis, deployment_id, "log", s.to_json())


async def execute(p: Platform, run_id: str) -> None:
    """Runs a `running` row's command and records how it ended. Never raises for the run's
    own failures: they are the row's outcome."""
    async with session_scope(p.sessions) as session:
        row = await session.get(CronRun, run_id)
        deployment = await session.get(Deployment, row.deployment_id) if row else None
        project = await session.get(Project, row.project_id) if row else None
        if row is None or row.status != "running":
            return
        if deployment is None or project is None or not deployment.runtime_handle:
            await _finish(p, run_id, ExecResult(None, error="its deployment is gone"), 0.0)
            return
        job = next(
            (j for j in cron_rules.declared(deployment.config) if j["name"] == row.job), None
        )
        timeout = float(job["timeout"] if job else cron_rules.DEFAULT_TIMEOUT)
        try:
            spec = await restart_spec(p, session, deployment, project)
        except DevpushError as exc:
            spec = None
            error = exc.message
        handle = RuntimeHandle.from_json(deployment.runtime_handle)
        runtime_name, scheduled, command = deployment.runtime, row.scheduled_at, row.command
    output = CronLog(p, deployment, row.job, run_id)
    if spec is None:
        await _finish(p, run_id, ExecResult(None, error=error), 0.0)
        return
    await output.line("stdout", f"Running `{command}` ({_when(scheduled)}, timeout {timeout:g}s)")
    started = time.monotonic()
    try:
        result = await p.runtimes.get(runtime_name).exec(
            handle, spec, command, timeout=timeout, output=output.line
        )
    except DevpushError as exc:
        result = ExecResult(None, error=exc.message)
    except asyncio.CancelledError:
        await output.flush()
        await _finish(p, run_id, ExecResult(None, error="the scheduler stopped mid-run"), 0.0)
        raise
    elapsed = time.monotonic() - started
    await output.line("stdout", _summary(result, elapsed, timeout))
    await output.flush()
    await _finish(p, run_id, result, elapsed)


def _when(scheduled: datetime) -> str:
    return f"scheduled for {scheduled:%Y-%m-%d %H:%M} UTC"


def _summary(result: ExecResult, elapsed: float, timeout: float) -> str:
    if result.timed_out:
        return f"Timed out after {timeout:g}s: the command was killed"
    if result.error:
        return f"Did not run: {result.error}"
    return f"Exited with code {result.exit_code} after {elapsed:.2f}s"


def status_of(result: ExecResult) -> str:
    if result.timed_out:
        return "timed_out"
    return "succeeded" if result.exit_code == 0 and not result.error else "failed"


async def _finish(p: Platform, run_id: str, result: ExecResult, elapsed: float) -> None:
    async with session_scope(p.sessions) as session:
        row = await session.get(CronRun, run_id, with_for_update=True)
        if row is None or row.status != "running":
            return
        row.status = status_of(result)
        row.exit_code = result.exit_code
        row.finished_at = utcnow()
        if result.timed_out and not result.error:
            row.error = (
                "timed out: the command was killed; raise the job's timeout or make it faster"
            )
        elif result.error:
            row.error = result.error[:4000]
        elif result.exit_code != 0:
            row.error = f"exited with code {result.exit_code}"
        extra = {"run_id": run_id, "job": row.job, "status": row.status, "elapsed": elapsed}
        if row.status != "succeeded":
            project = await session.get(Project, row.project_id)
            await emit(
                session,
                "cron.failed",
                team_id=project.team_id if project else None,
                project_id=row.project_id,
                deployment_id=row.deployment_id,
                data={
                    "job": row.job,
                    "run_id": row.id,
                    "environment_id": row.environment_id,
                    "status": row.status,
                    "exit_code": row.exit_code,
                    "error": row.error,
                },
            )
            log.warning("cron run failed", extra=extra)
        else:
            log.info("cron run succeeded", extra=extra)
