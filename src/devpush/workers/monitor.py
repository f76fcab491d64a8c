"""The monitor: watches deployments that are deploying or serving.

For each one (under a Redis lock, so any number of monitors can run) it ships the runtime's
output into the log store and onto the deployment's Redis Stream, polls the instance, probes
readiness with backoff (50 ms up to 1 s) once the app phase starts (deployments/readiness.py), and
enqueues finalize or fail. While a deployment is live it polls its instance: one that exits has
its route pulled first, then is restarted with backoff, or marked crashed after too many exits
(deployments/crashes.py). It reconciles at start and periodically (workers/reconcile.py):
deployments whose worker died are concluded, and runtime instances with no live deployment are
removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
import uuid
from dataclasses import dataclass, field, replace

import httpx
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from devpush import events
from devpush.cron import scheduler as cron_scheduler
from devpush.databases import backups as database_backups
from devpush.db import session_scope
from devpush.deployments import crashes, failures, flows, replicas
from devpush.deployments import service as deployments
from devpush.deployments.models import Conclusion, Deployment, InstanceHealth, Status
from devpush.deployments.readiness import (
    Outcome,
    PortCheck,
    build_too_long,
    disk_full,
    exit_message,
    not_answering,
    pause,
    probe,
)
from devpush.deployments.shipper import ReplicaShippers, Shipper
from devpush.errors import DevpushError
from devpush.metrics.sampler import Sampler
from devpush.notifications import sweep as notification_sweep
from devpush.platform import Platform
from devpush.queue import enqueue_fail, enqueue_finalize, enqueue_scale
from devpush.runtime.base import (
    InstanceState,
    InstanceStatus,
    Phase,
    ReplicatingRuntime,
    Runtime,
    RuntimeHandle,
)
from devpush.subscribers import delivering_events
from devpush.workers import liveness
from devpush.workers.reconcile import reconcile

log = logging.getLogger("devpush.monitor")
LOCK_TTL_MS = 15_000
SCALE_BACKOFF_MIN, SCALE_BACKOFF_MAX = 5.0, 300.0
CHECK_EVERY = 5.0  # seconds between status checks of a live instance whose logs still flow


@dataclass
class Monitor:
    p: Platform
    instance_id: str = field(default_factory=lambda: f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    watching: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # deployment -> (when a scale job may be queued again, the backoff after that)
    scaling: dict[str, tuple[float, float]] = field(default_factory=dict)
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=2.0))

    # ---- the main loop ------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        sampling = asyncio.create_task(Sampler(self.p).run(stop))  # metrics/, each interval
        cron_scheduler.start(self.p, stop)  # cron/: its own task, runs never hold this loop
        database_backups.start(self.p, stop)  # databases/: scheduled backups, own task
        notification_sweep.start(self.p, stop)  # notifications/: lost deliveries, own task
        await reconcile(self.p)
        last_reconcile = asyncio.get_running_loop().time()
        last_id = "$"
        heartbeat, last_beat = liveness.heartbeat_path(self.p.settings), -liveness.INTERVAL
        while not stop.is_set():
            # The loop's own progress is what `devpush monitor --check` sees (compose).
            if asyncio.get_running_loop().time() - last_beat >= liveness.INTERVAL:
                try:
                    await asyncio.to_thread(liveness.beat, heartbeat)
                except OSError as exc:  # the check will say so; the monitor's work goes on
                    log.warning("cannot refresh the heartbeat", extra={"error": str(exc)})
                last_beat = asyncio.get_running_loop().time()
            try:
                await self.pick_up()
            except (OSError, RedisError, SQLAlchemyError) as exc:  # restarting: try again
                log.warning("cannot pick up deployments", extra={"error": str(exc)[:200]})
                await asyncio.sleep(1)
            now = asyncio.get_running_loop().time()
            if now - last_reconcile >= self.p.settings.reconcile_interval:
                await reconcile(self.p)
                last_reconcile = now
            last_id = await self._wait_for_nudge(last_id, stop)
        for task in self.watching.values():
            task.cancel()
        await asyncio.gather(*self.watching.values(), sampling, return_exceptions=True)
        await self.http.aclose()

    async def _wait_for_nudge(self, last_id: str, stop: asyncio.Event) -> str:
        """Block on the monitor stream for up to 1 s (new deployments nudge it)."""
        try:
            result = await self.p.redis.xread(
                {events.MONITOR_STREAM: last_id}, block=1000, count=100
            )
        except (OSError, RedisError) as exc:
            log.warning("redis unavailable", extra={"error": str(exc)})
            await asyncio.sleep(1)
            return last_id
        if result:
            _, messages = result[0]
            return str(
                messages[-1][0].decode() if isinstance(messages[-1][0], bytes) else messages[-1][0]
            )
        return last_id

    async def pick_up(self) -> None:
        """Start watching every deploying or serving deployment no monitor holds."""
        async with session_scope(self.p.sessions) as session:
            rows = (
                (
                    await session.execute(
                        select(Deployment.id).where(
                            Deployment.runtime_handle.is_not(None),
                            (
                                Deployment.upstream.is_not(None)
                                & Deployment.status.in_((Status.deploy, Status.completed))
                            )
                            # Started, its address learnt once the app runs (swarm).
                            | (
                                (Deployment.status == Status.deploy)
                                & Deployment.timings["runtime_start"].is_not(None)
                            )
                            | (Deployment.instance_health == InstanceHealth.restarting),
                        )
                    )
                )
                .scalars()
                .all()
            )
        for deployment_id in rows:
            if deployment_id in self.watching:
                continue
            if await self._lock(deployment_id):
                task = asyncio.create_task(self.watch(deployment_id))
                self.watching[deployment_id] = task
                task.add_done_callback(functools.partial(self._forget, deployment_id))

    def _forget(self, deployment_id: str, _task: asyncio.Task[None]) -> None:
        self.watching.pop(deployment_id, None)

    # ---- locking -------------------------------------------------------------------------
    def _lock_key(self, deployment_id: str) -> str:
        return f"devpush:watch:{deployment_id}"

    async def _lock(self, deployment_id: str) -> bool:
        return bool(
            await self.p.redis.set(
                self._lock_key(deployment_id), self.instance_id, nx=True, px=LOCK_TTL_MS
            )
        )

    async def _renew(self, deployment_id: str) -> bool:
        """Keep the lock; False when another monitor holds it. While Redis is unreachable the
        watch goes on (two watchers at worst: the log store's offsets keep lines single)."""
        key = self._lock_key(deployment_id)
        try:
            holder = await self.p.redis.get(key)
            if holder is not None and holder.decode() != self.instance_id:
                return False
            await self.p.redis.set(key, self.instance_id, px=LOCK_TTL_MS)
        except (OSError, RedisError) as exc:
            log.warning("cannot renew the watch lock", extra={"error": str(exc)[:200]})
        return True

    # ---- watching one deployment -------------------------------------------------------
    async def watch(self, deployment_id: str) -> None:
        try:
            await self._watch(deployment_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watch failed", extra={"deployment_id": deployment_id})
        finally:
            with contextlib.suppress(Exception):
                await self.p.redis.delete(self._lock_key(deployment_id))

    async def _watch(self, deployment_id: str) -> None:
        """Deploy, then serve; a live instance that exits is restarted (or marked crashed)
        and served again, as long as this monitor holds the lock."""
        deployment = await deployments.snapshot(self.p.sessions, deployment_id)
        while deployment is not None and deployment.runtime_handle:
            if deployment.instance_health == InstanceHealth.restarting:
                if not await self._restart(deployment):
                    return
            else:
                exited = await self._deploy_and_serve(deployment)
                if exited is None or not await self._exited(deployment_id, exited):
                    return
            deployment = await deployments.snapshot(self.p.sessions, deployment_id)

    async def _deploy_and_serve(self, deployment: Deployment) -> InstanceStatus | None:
        """Ship logs, wait until ready (a deployment in `deploy`), then watch it serve; returns
        the instance's status when a live instance exited."""
        assert deployment.runtime_handle is not None
        deployment_id = deployment.id
        handle = RuntimeHandle.from_json(deployment.runtime_handle)
        runtime = self.p.runtimes.get(handle.backend)
        shipper = Shipper(self.p, deployment, runtime, handle)
        ship = asyncio.create_task(shipper.run())
        try:
            if deployment.status == Status.deploy:
                outcome = await self._until_ready(deployment, handle)
                if outcome.error:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(ship), 2.0)
                    error = outcome.error
                    cause = outcome.build_failed and await failures.failure_cause(
                        self.p, deployment_id
                    )
                    if cause:
                        error = f"{error} Cause: {cause}"
                    await enqueue_fail(self.p.redis, deployment_id, error)
                    return None
                if not outcome.ready:
                    return None
                await enqueue_finalize(self.p.redis, deployment_id)
            exited = await self._while_serving(deployment_id, ship, runtime, handle)
            if exited is not None:  # its last lines are stored before it is reported
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ship), 2.0)
            return exited
        finally:
            ship.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ship
            await shipper.flush()

    async def _until_ready(self, deployment: Deployment, handle: RuntimeHandle) -> Outcome:
        s = self.p.settings
        runtime = self.p.runtimes.get(handle.backend)
        health = deployment.config.get("health_path") or "/"
        interval = s.probe_min_interval
        loop = asyncio.get_running_loop()
        build_timeout = deployment.config.get("build_timeout") or s.build_timeout
        build_deadline = loop.time() + build_timeout - flows.elapsed(deployment.deploy_started_at)
        ready_deadline: float | None = None
        last_answer = "no answer"
        last_check = loop.time()
        ports = PortCheck(runtime, handle)
        if s.monitor_mode == "poll":
            await pause(s, interval)
        while True:
            if loop.time() - last_check > 1.0:
                last_check = loop.time()
                if not await self._renew(deployment.id) or await self._concluded(deployment.id):
                    return Outcome()
            status = await runtime.status(handle)
            if status.state in (InstanceState.exited, InstanceState.missing):
                return Outcome(
                    error=exit_message(status.phase, status.exit_code, status.error),
                    build_failed=status.phase in (Phase.build, Phase.pre_deploy),
                )
            handle = ports.handle = await self._learnt(deployment.id, handle, status)
            if status.phase == Phase.runtime and status.state == InstanceState.running:
                if ready_deadline is None:
                    ready_deadline = loop.time() + s.deploy_timeout
                    interval = s.probe_min_interval
                answer = await probe(self.http, f"http://{handle.upstream}{health}")
                if answer is None:
                    return Outcome(ready=True)
                last_answer = answer
                if wrong := await ports.wrong_port(loop.time() - ready_deadline + s.deploy_timeout):
                    return Outcome(error=wrong)
                if loop.time() > ready_deadline:
                    return Outcome(error=not_answering(health, s.deploy_timeout, last_answer))
            elif loop.time() > build_deadline:
                return Outcome(error=build_too_long(build_timeout))
            elif full := disk_full(s):
                return Outcome(error=full)
            await pause(s, interval)
            interval = min(interval * 2, s.probe_max_interval)

    async def _learnt(
        self, deployment_id: str, handle: RuntimeHandle, status: InstanceStatus
    ) -> RuntimeHandle:
        """The handle with the address a backend assigns once the app runs (swarm's first
        task), recorded in the deployment's row."""
        if not status.upstream or status.upstream == handle.upstream:
            return handle
        handle = replace(handle, upstream=status.upstream)
        await flows.record_upstream(self.p, deployment_id, handle)
        return handle

    async def _concluded(self, deployment_id: str) -> bool:
        row = await deployments.snapshot(self.p.sessions, deployment_id)
        return row is None or row.status == Status.completed

    async def _while_serving(
        self, deployment_id: str, ship: asyncio.Task[None], runtime: Runtime, handle: RuntimeHandle
    ) -> InstanceStatus | None:
        """Keep shipping logs while the instance lives and this monitor holds the lock. The
        status of a live one is checked as soon as its logs end (it exited), and every few
        seconds anyway: its exit is returned. Its other replicas' logs are shipped too."""
        replica_logs = ReplicaShippers(self.p, runtime)
        try:
            return await self._serving(deployment_id, ship, runtime, handle, replica_logs)
        finally:
            await replica_logs.close()

    async def _serving(
        self,
        deployment_id: str,
        ship: asyncio.Task[None],
        runtime: Runtime,
        handle: RuntimeHandle,
        replica_logs: ReplicaShippers,
    ) -> InstanceStatus | None:
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
            await asyncio.wait({ship}, timeout=self.p.settings.probe_max_interval)
            if not await self._renew(deployment_id):
                return None
            row = await deployments.snapshot(self.p.sessions, deployment_id)
            if row is None or not row.runtime_handle:
                return None
            if row.status == Status.completed and row.conclusion != Conclusion.succeeded:
                return None
            replica_logs.sync(row)
            live = crashes.is_live(row) and row.instance_health is None
            if live and (ship.done() or loop.time() - checked >= CHECK_EVERY):
                checked = loop.time()
                status = await runtime.status(handle)
                if status.state in (InstanceState.exited, InstanceState.missing):
                    return status
                await self._tend_replicas(row, runtime)
            if ship.done():
                return None

    # ---- replicas 1.. of a live deployment -------------------------------------------------
    async def _tend_replicas(self, row: Deployment, runtime: Runtime) -> None:
        """Replicas whose app exited leave the route (the others go on serving it) and a
        scale job replaces them; one is also queued while fewer serve than wanted (a job that
        died, a count changed meanwhile). Queued again after 5 s, doubling up to 5 min while
        the count stays short (an app that keeps crashing is not restarted in a tight loop)."""
        if isinstance(runtime, ReplicatingRuntime):
            await replicas.follow_tasks(self.p, row, runtime)
            return
        for replica in replicas.of(row):
            if not replica.upstream:
                continue
            status = await runtime.status(replica.handle)
            if status.state in (InstanceState.exited, InstanceState.missing):
                await replicas.pull(self.p, row.id, replica, crashes.exit_reason(status))
        fresh = await deployments.snapshot(self.p.sessions, row.id)
        if fresh is None:
            return
        async with session_scope(self.p.sessions) as session:
            wanted = await replicas.wanted(session, fresh)
        serving = replicas.serving(fresh)
        now = asyncio.get_running_loop().time()
        due, delay = self.scaling.get(row.id, (0.0, SCALE_BACKOFF_MIN))
        if serving == wanted and len(replicas.of(fresh)) == wanted - 1:
            self.scaling.pop(row.id, None)
        elif now >= due:
            await enqueue_scale(self.p.redis, row.id)
            self.scaling[row.id] = (now + delay, min(delay * 2, SCALE_BACKOFF_MAX))

    # ---- a live instance that exited ------------------------------------------------------
    async def _exited(self, deployment_id: str, exited: InstanceStatus) -> bool:
        """Pull its route, then say why and what comes next; True when it is to be restarted."""
        crash = await crashes.pull_route(self.p, deployment_id, exited)
        if crash is None:
            return False
        log.warning(
            "live instance exited",
            extra={"deployment_id": deployment_id, "exit_code": exited.exit_code},
        )
        await crashes.report(self.p, deployment_id, crash, exited)
        return not crash.crashed

    async def _restart(self, deployment: Deployment) -> bool:
        """Wait out the backoff, restart the instance and route it again once it answers. An
        instance that fails to start, exits or never answers counts as one more exit. False
        when this monitor lost the lock or the deployment is done with."""
        s = self.p.settings
        deployment_id = deployment.id
        due = crashes.restart_due(s, deployment)
        while (wait := due - time.time()) > 0:
            await asyncio.sleep(min(wait, s.probe_max_interval))
            if not await self._renew(deployment_id):
                return False
        try:
            handle = await crashes.restart(self.p, deployment_id)
        except DevpushError as exc:
            failed = InstanceStatus(InstanceState.exited, error=f"it did not start: {exc}")
            return await self._exited(deployment_id, failed)
        if handle is None:
            return False
        runtime = self.p.runtimes.get(handle.backend)
        fresh = await deployments.snapshot(self.p.sessions, deployment_id)
        if fresh is None:
            return False
        shipper = Shipper(self.p, fresh, runtime, handle)
        ship = asyncio.create_task(shipper.run())
        try:
            outcome = await self._until_answering(fresh, runtime, handle)
            if outcome is None:
                return False
            if isinstance(outcome, InstanceStatus):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ship), 2.0)
        finally:
            ship.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ship
            await shipper.flush()
        if isinstance(outcome, InstanceStatus):
            return await self._exited(deployment_id, outcome)
        await crashes.restore_route(self.p, deployment_id, handle)
        return True

    async def _until_answering(
        self, deployment: Deployment, runtime: Runtime, handle: RuntimeHandle
    ) -> InstanceStatus | bool | None:
        """Probe the restarted app as at deploy time: True when it answers, its status when it
        exits (or is stopped for not answering within DEPLOY_TIMEOUT), None without the lock."""
        s = self.p.settings
        url = f"http://{handle.upstream}{deployment.config.get('health_path') or '/'}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.deploy_timeout
        interval = s.probe_min_interval
        renewed = loop.time()
        while True:
            if loop.time() - renewed > 1.0:
                renewed = loop.time()
                if not await self._renew(deployment.id):
                    return None
            status = await runtime.status(handle)
            if status.state in (InstanceState.exited, InstanceState.missing):
                return status
            if status.phase == Phase.runtime and status.state == InstanceState.running:
                if await probe(self.http, url) is None:
                    return True
            if loop.time() > deadline:
                await runtime.stop(handle)
                return InstanceStatus(
                    InstanceState.exited,
                    error=f"it did not answer within {s.deploy_timeout:.0f}s after a restart",
                )
            await pause(s, interval)
            interval = min(interval * 2, s.probe_max_interval)


async def run_monitor(p: Platform) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with delivering_events(p):
        await Monitor(p).run(stop)
