"""The shipper (the job Alloy did in the original design): follows one runtime instance's
output, masks secret values, writes lines in batches to the log store, and publishes them on
the deployment's Redis Stream for the live view.

When the store is down it keeps lines in memory and retries; past MAX_BUFFER lines it drops
the oldest, counting and logging the drop. Lines already stored are never shipped twice: the
store advances the deployment's runtime-line offset in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque

from devpush import events
from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.deployments.models import Deployment
from devpush.logs.store import NewLine, PostgresLogStore, StoredLine
from devpush.platform import Platform
from devpush.runtime.base import Runtime, RuntimeHandle

log = logging.getLogger("devpush.shipper")
MAX_BUFFER = 100_000
BATCH = 1_000
FLUSH_INTERVAL = 0.02
MASK = "••••••"


def masker(deployment: Deployment) -> list[str]:
    env = deployments.env_snapshot(deployment)
    values = [env[k] for k in deployment.secret_keys if len(env.get(k, "")) >= 4]
    return sorted(values, key=len, reverse=True)


class Shipper:
    def __init__(
        self, p: Platform, deployment: Deployment, runtime: Runtime, handle: RuntimeHandle
    ) -> None:
        self.p = p
        self.deployment_id = deployment.id
        self.runtime = runtime
        self.handle = handle
        self.skip = deployment.log_offset
        self.secrets = masker(deployment)
        self.buffer: deque[NewLine] = deque()
        self.dropped = 0
        self.store = PostgresLogStore()
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def mask(self, message: str) -> str:
        for value in self.secrets:
            message = message.replace(value, MASK)
        return message

    async def run(self) -> None:
        flusher = asyncio.create_task(self._flush_loop())
        try:
            seen = 0
            async for record in self.runtime.logs(self.handle, follow=True):
                seen += 1
                if seen <= self.skip:
                    continue
                self._add(
                    NewLine(
                        ts=record.ts,
                        stream=record.stream,
                        phase=record.phase.value,
                        message=self.mask(record.message),
                    )
                )
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        await self.flush()

    def _add(self, line: NewLine) -> None:
        if len(self.buffer) >= MAX_BUFFER:
            self.buffer.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "log buffer full, dropping lines",
                    extra={"deployment_id": self.deployment_id, "dropped": self.dropped},
                )
        self.buffer.append(line)
        if len(self.buffer) >= BATCH:
            self._wake.set()

    async def _flush_loop(self) -> None:
        backoff = FLUSH_INTERVAL
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff)
            self._wake.clear()
            ok = await self.flush()
            backoff = FLUSH_INTERVAL if ok else min(backoff * 2, 2.0)

    async def flush(self) -> bool:
        """Store and publish what is buffered; False (lines kept) when the store is down."""
        async with self._lock:
            while self.buffer:
                batch = [self.buffer[i] for i in range(min(BATCH, len(self.buffer)))]
                try:
                    async with session_scope(self.p.sessions) as session:
                        stored = await self.store.append(
                            session=session,
                            deployment_id=self.deployment_id,
                            lines=batch,
                            runtime_lines=len(batch),
                        )
                except Exception as exc:  # noqa: BLE001 - store down: keep lines, retry later
                    log.warning(
                        "log store unavailable, buffering",
                        extra={
                            "deployment_id": self.deployment_id,
                            "buffered": len(self.buffer),
                            "error": str(exc)[:200],
                        },
                    )
                    return False
                for _ in batch:
                    self.buffer.popleft()
                await self._publish(stored)
        return True

    async def _publish(self, stored: list[StoredLine]) -> None:
        try:
            async with self.p.redis.pipeline(transaction=False) as pipe:
                for line in stored:
                    pipe.xadd(
                        events.deployment_stream(self.deployment_id),
                        {"type": "log", "data": json.dumps(line.to_json())},
                        maxlen=events.DEPLOYMENT_MAXLEN,
                        approximate=True,
                    )
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - live view degrades; lines are stored
            log.warning("cannot publish log lines", extra={"error": str(exc)[:200]})
