"""The shipper (the job Alloy did in the original design): follows one runtime instance's
output, masks secret values, writes lines in batches to the log store, and publishes them on
the deployment's Redis Stream for the live view.

When the store is down it keeps lines in memory and retries with backoff; past MAX_BUFFER
lines it drops the oldest, counting them, logging the drop and storing a note saying how many.
When the store is up but behind, it stops reading instead (the runtime keeps the output).
Lines already stored are never shipped twice: the store advances the deployment's per-stream
runtime offsets in the same transaction, only from the offsets the shipper expects, so a
restarted shipper resumes where the last commit left off, and a batch whose commit outcome was
lost is recognised as stored.

Each line is tagged with the replica that wrote it. Replica 0's offsets are the deployment's
(above); another replica's are kept in Redis next to it, set after each stored batch: a
shipper restarted between the two ships that batch again, which is the one way its lines can
repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque

from devpush import events
from devpush.db import session_scope, utcnow
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment
from devpush.logs.lines import StoredLine
from devpush.logs.store import LogStore, NewLine, OffsetConflict, Offsets
from devpush.platform import Platform
from devpush.runtime.base import LogRecord, ReplicatingRuntime, Runtime, RuntimeHandle

log = logging.getLogger("devpush.shipper")
MAX_BUFFER = 100_000
BATCH = 1_000
HIGH_WATER = 10 * BATCH  # lines waiting for a healthy store before reading pauses
YIELD_EVERY = 500
FLUSH_INTERVAL = 0.02
MAX_BACKOFF = 2.0
MASK = "••••••"
PUBLISH_LINES = 100
REPLICA_OFFSETS_KEPT = 7 * 24 * 3600  # seconds
STREAM_ENTRIES = 200  # about PUBLISH_LINES * STREAM_ENTRIES lines at most, like one per line

# The buffer holds lines and, where lines were dropped, markers counting them per stream, in
# stream order; a batch consumes a prefix of it, so offsets always count a prefix per stream.
_Entry = NewLine | Offsets


def masker(deployment: Deployment) -> list[str]:
    env = deployments.env_snapshot(deployment)
    values = [env[k] for k in deployment.secret_keys if len(env.get(k, "")) >= 4]
    return sorted(values, key=len, reverse=True)


class Shipper:
    def __init__(
        self,
        p: Platform,
        deployment: Deployment,
        runtime: Runtime,
        handle: RuntimeHandle,
        *,
        store: LogStore | None = None,
    ) -> None:
        self.p = p
        self.deployment_id = deployment.id
        self.runtime = runtime
        self.handle = handle
        self.replica = int(handle.data.get("replica") or 0)
        self.store: LogStore = store or p.log_store
        self.secrets = masker(deployment)
        self.offsets = Offsets.unpack(deployment.log_offset)  # what the store holds
        self.skip = self.offsets  # runtime lines to pass over, per stream, before shipping
        self.buffer: deque[_Entry] = deque()
        self.buffered = 0  # lines (not markers) in the buffer
        self.dropped = 0
        self._unreported_drops = 0
        self.healthy = True  # the last flush reached the store
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()

    def mask(self, message: str) -> str:
        for value in self.secrets:
            message = message.replace(value, MASK)
        return message

    async def run(self, *, follow: bool = True) -> None:
        """Ship until the instance's output ends (or, without `follow`, what it wrote so far),
        then until everything is stored."""
        if self.replica:
            self.offsets = self.skip = await self._replica_offsets()
        flusher = asyncio.create_task(self._flush_loop())
        try:
            read = 0
            async for record in self.runtime.logs(self.handle, follow=follow):
                self.add(record)
                read += 1
                if self.buffered >= HIGH_WATER and self.healthy:
                    await self._wait_for_room()
                elif read % YIELD_EVERY == 0:
                    # a runtime with output waiting never awaits: let the flusher (and the
                    # rest of the monitor) run
                    await asyncio.sleep(0)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        backoff = FLUSH_INTERVAL
        while not await self.flush():
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _wait_for_room(self) -> None:
        """The store is up but behind: stop reading (the runtime keeps the output) rather
        than let the buffer fill up to dropping lines."""
        self._wake.set()
        while self.buffered >= HIGH_WATER and self.healthy:
            self._room.clear()
            await self._room.wait()

    def add(self, record: LogRecord) -> None:
        if self.skip.get(record.stream) > 0:
            self.skip = self.skip.plus(record.stream, -1)
            return
        if self.buffered >= MAX_BUFFER:
            self._drop_oldest()
        self.buffer.append(
            NewLine(
                ts=record.ts,
                stream=record.stream,
                phase=record.phase.value,
                message=self.mask(record.message),
                replica=self.replica,
            )
        )
        self.buffered += 1
        if self.buffered >= BATCH:
            self._wake.set()

    def _drop_oldest(self) -> None:
        marker = Offsets()
        while self.buffer and isinstance(self.buffer[0], Offsets):
            front = self.buffer.popleft()
            assert isinstance(front, Offsets)
            marker = Offsets(marker.stdout + front.stdout, marker.stderr + front.stderr)
        line = self.buffer.popleft()
        assert isinstance(line, NewLine)
        self.buffer.appendleft(marker.plus(line.stream))
        self.buffered -= 1
        self.dropped += 1
        self._unreported_drops += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.error(
                "log buffer full, dropping lines",
                extra={"deployment_id": self.deployment_id, "dropped": self.dropped},
            )

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        wait = FLUSH_INTERVAL
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            started = loop.time()
            ok = await self.flush()
            self._room.set()
            # Under load a flush takes longer; waiting as long before the next one grows the
            # batches rather than the number of transactions.
            took = loop.time() - started
            wait = min(max(FLUSH_INTERVAL, took), MAX_BACKOFF) if ok else min(wait * 2, MAX_BACKOFF)

    async def flush(self) -> bool:
        """Store and publish what is buffered; False (lines kept) when the store is down."""
        async with self._lock:
            while self.buffer:
                if not await self._flush_batch():
                    self.healthy = False
                    return False
            self.healthy = True
            if self._unreported_drops:
                return await self._report_drops()
        return True

    async def _flush_batch(self) -> bool:
        batch: list[_Entry] = []
        lines: list[NewLine] = []
        reached = self.offsets
        while self.buffer and len(lines) < BATCH:
            entry = self.buffer.popleft()
            batch.append(entry)
            if isinstance(entry, Offsets):
                reached = Offsets(reached.stdout + entry.stdout, reached.stderr + entry.stderr)
            else:
                lines.append(entry)
                reached = reached.plus(entry.stream)
        self.buffered -= len(lines)
        try:
            async with session_scope(self.p.sessions) as session:
                stored = await self.store.append(
                    session=session,
                    deployment_id=self.deployment_id,
                    lines=lines,
                    offsets=None if self.replica else (self.offsets, reached),
                )
        except OffsetConflict as conflict:
            self._put_back(batch, len(lines))
            self._resync(conflict.current)
            return True
        except BaseException as exc:
            self._put_back(batch, len(lines))  # cancelled or failed: kept, in order
            if not isinstance(exc, Exception):
                raise
            log.warning(
                "log store unavailable, buffering",
                extra={
                    "deployment_id": self.deployment_id,
                    "buffered": self.buffered,
                    "error": str(exc)[:200],
                },
            )
            return False
        self.offsets = reached
        if self.replica:
            await self._save_replica_offsets()
        await self._publish(stored)
        return True

    def _replica_key(self) -> str:
        return replica_offsets_key(self.handle.id)

    async def _replica_offsets(self) -> Offsets:
        try:
            value = await self.p.redis.get(self._replica_key())
        except Exception as exc:  # noqa: BLE001 - Redis down: ship from the start
            log.warning("cannot read a replica's log offsets", extra={"error": str(exc)[:200]})
            return Offsets()
        return Offsets.unpack(int(value)) if value else Offsets()

    async def _save_replica_offsets(self) -> None:
        try:
            await self.p.redis.set(
                self._replica_key(), str(self.offsets.packed()), ex=REPLICA_OFFSETS_KEPT
            )
        except Exception as exc:  # noqa: BLE001 - a restarted shipper repeats this batch
            log.warning("cannot save a replica's log offsets", extra={"error": str(exc)[:200]})

    def _put_back(self, batch: list[_Entry], n_lines: int) -> None:
        self.buffer.extendleft(reversed(batch))
        self.buffered += n_lines
        while self.buffered > MAX_BUFFER:  # lines came in meanwhile: keep the newest
            self._drop_oldest()

    def _resync(self, current: Offsets) -> None:
        """The store holds more of this runtime's lines than we thought (a commit we saw
        fail went through, or another shipper ran): forget the ones it has."""
        ahead = {
            "stdout": current.stdout - self.offsets.stdout,
            "stderr": current.stderr - self.offsets.stderr,
        }
        if min(ahead.values()) < 0:
            log.warning(
                "log offsets went backwards",
                extra={"deployment_id": self.deployment_id, "offsets": str(current)},
            )
        kept: deque[_Entry] = deque()
        for entry in self.buffer:
            if isinstance(entry, Offsets):
                out = min(entry.stdout, max(ahead["stdout"], 0))
                err = min(entry.stderr, max(ahead["stderr"], 0))
                ahead["stdout"] -= out
                ahead["stderr"] -= err
                rest = Offsets(entry.stdout - out, entry.stderr - err)
                if rest != Offsets():
                    kept.append(rest)
            elif ahead[entry.stream] > 0:
                ahead[entry.stream] -= 1
                self.buffered -= 1
            else:
                kept.append(entry)
        self.buffer = kept
        self.skip = Offsets(
            self.skip.stdout + max(ahead["stdout"], 0), self.skip.stderr + max(ahead["stderr"], 0)
        )
        self.offsets = current

    async def _report_drops(self) -> bool:
        count = self._unreported_drops
        note = NewLine(
            ts=utcnow(),
            stream="stderr",
            phase="system",
            message=(
                f"devpush: {count} log lines were dropped: the log store was unavailable and "
                f"more than {MAX_BUFFER} lines were waiting"
            ),
        )
        try:
            async with session_scope(self.p.sessions) as session:
                stored = await self.store.append(
                    session=session, deployment_id=self.deployment_id, lines=[note]
                )
        except Exception as exc:  # noqa: BLE001 - store down again: report on the next flush
            log.warning("cannot store the drop note", extra={"error": str(exc)[:200]})
            return False
        self._unreported_drops -= count
        await self._publish(stored)
        return True

    async def _publish(self, stored: list[StoredLine]) -> None:
        """One stream entry per PUBLISH_LINES lines (a Redis command per line would cost more
        than storing them); the stream keeps about STREAM_ENTRIES entries: a follower that
        falls further behind, or misses a publish, reads the gap from the store."""
        if not stored:
            return
        key = events.deployment_stream(self.deployment_id)
        try:
            async with self.p.redis.pipeline(transaction=False) as pipe:
                for start in range(0, len(stored), PUBLISH_LINES):
                    chunk = [line.to_json() for line in stored[start : start + PUBLISH_LINES]]
                    pipe.xadd(
                        key,
                        {"type": "logs", "data": json.dumps(chunk)},
                        maxlen=STREAM_ENTRIES,
                        approximate=True,
                    )
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - live view degrades; lines are stored
            log.warning("cannot publish log lines", extra={"error": str(exc)[:200]})


def replica_offsets_key(instance_id: str) -> str:
    """Where a replica's shipped offsets are kept (cleared when a replica is made anew)."""
    return f"devpush:log-offset:{instance_id}"


class ReplicaShippers:
    """A shipper for each of a deployment's replicas 1.., started as they appear (or change:
    a replacement) and stopped as they go; replica 0 has the monitor's own."""

    def __init__(self, p: Platform, runtime: Runtime) -> None:
        self.p = p
        self.runtime = runtime
        self.running: dict[str, tuple[RuntimeHandle, asyncio.Task[None]]] = {}

    def sync(self, row: Deployment) -> None:
        if isinstance(self.runtime, ReplicatingRuntime):
            return  # replica 0's logs are every task's
        wanted = {}
        for entry in row.replicas or []:
            handle = RuntimeHandle.from_json(entry["handle"])
            wanted[handle.id] = handle
        for instance_id, (handle, task) in list(self.running.items()):
            if wanted.get(instance_id) != handle:
                task.cancel()
                del self.running[instance_id]
        for instance_id, handle in wanted.items():
            if instance_id not in self.running:
                shipper = Shipper(self.p, row, self.runtime, handle)
                self.running[instance_id] = (handle, asyncio.create_task(self._ship(shipper)))

    @staticmethod
    async def _ship(shipper: Shipper) -> None:
        try:
            await shipper.run()
        except Exception as exc:  # noqa: BLE001 - a replica gone meanwhile: nothing to ship
            log.info("replica log shipping ended", extra={"error": str(exc)[:200]})

    async def close(self) -> None:
        for _, task in self.running.values():
            task.cancel()
        await asyncio.gather(*(task for _, task in self.running.values()), return_exceptions=True)
        self.running.clear()
