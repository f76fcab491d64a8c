"""The log store protocol and its PostgreSQL implementation (the default).

append() writes a batch and assigns per-deployment sequence numbers (the SSE event ids) in
the same transaction that advances the deployment's counters, so a batch is stored exactly
once even when the shipper restarts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from devpush.deployments.models import Deployment
from devpush.logs.models import LogLine

MAX_LINE = 16_384


@dataclass(frozen=True)
class NewLine:
    ts: datetime
    stream: str
    phase: str
    message: str


@dataclass(frozen=True)
class StoredLine:
    seq: int
    ts: datetime
    deployment_id: str
    stream: str
    phase: str
    level: str | None
    message: str

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "ts": self.ts.isoformat(),
            "deployment_id": self.deployment_id,
            "stream": self.stream,
            "phase": self.phase,
            "level": self.level,
            "message": self.message,
        }


class LogStore(Protocol):
    async def append(
        self,
        *,
        session: AsyncSession,
        deployment_id: str,
        lines: list[NewLine],
        runtime_lines: int = 0,
    ) -> list[StoredLine]: ...

    async def since(
        self, *, session: AsyncSession, deployment_id: str, after_seq: int, limit: int = 5000
    ) -> list[StoredLine]: ...


_TEXT_LEVEL = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|FATAL|PANIC)\b", re.I
)
_LEVELS = {
    "warning": "warn",
    "err": "error",
    "critical": "fatal",
    "panic": "fatal",
    "notice": "info",
    "trace": "debug",
}


def parse_level(message: str) -> str | None:
    """The level of a JSON log line (`level`/`severity`/`lvl`) or of a common text format."""
    text = message.lstrip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("level", "severity", "lvl", "levelname"):
                value = data.get(key)
                if isinstance(value, str) and value:
                    low = value.lower()
                    return _LEVELS.get(low, low)[:8]
    match = _TEXT_LEVEL.search(text[:120])
    if match:
        low = match.group(1).lower()
        return _LEVELS.get(low, low)
    return None


def cut(message: str) -> str:
    if len(message) <= MAX_LINE:
        return message
    return message[:MAX_LINE] + f" … [line cut: {len(message) - MAX_LINE} more characters]"


class PostgresLogStore:
    async def append(
        self,
        *,
        session: AsyncSession,
        deployment_id: str,
        lines: list[NewLine],
        runtime_lines: int = 0,
    ) -> list[StoredLine]:
        if not lines:
            return []
        row = (
            await session.execute(
                update(Deployment)
                .where(Deployment.id == deployment_id)
                .values(
                    log_seq=Deployment.log_seq + len(lines),
                    log_offset=Deployment.log_offset + runtime_lines,
                )
                .returning(
                    Deployment.log_seq,
                    Deployment.project_id,
                    Deployment.environment_id,
                    Deployment.branch,
                )
            )
        ).one_or_none()
        if row is None:
            return []
        last, project_id, environment_id, branch = row
        first = last - len(lines) + 1
        stored = [
            StoredLine(
                seq=first + i,
                ts=line.ts,
                deployment_id=deployment_id,
                stream=line.stream,
                phase=line.phase,
                level=parse_level(line.message),
                message=cut(line.message.replace("\x00", "\ufffd")),
            )
            for i, line in enumerate(lines)
        ]
        await session.execute(
            insert(LogLine),
            [
                {
                    "ts": s.ts,
                    "project_id": project_id,
                    "deployment_id": deployment_id,
                    "environment_id": environment_id,
                    "branch": branch,
                    "seq": s.seq,
                    "stream": s.stream,
                    "phase": s.phase,
                    "level": s.level,
                    "message": s.message,
                }
                for s in stored
            ],
        )
        return stored

    async def since(
        self, *, session: AsyncSession, deployment_id: str, after_seq: int, limit: int = 5000
    ) -> list[StoredLine]:
        rows = await session.scalars(
            select(LogLine)
            .where(LogLine.deployment_id == deployment_id, LogLine.seq > after_seq)
            .order_by(LogLine.seq)
            .limit(limit)
        )
        return [
            StoredLine(
                seq=r.seq,
                ts=r.ts,
                deployment_id=r.deployment_id,
                stream=r.stream,
                phase=r.phase,
                level=r.level,
                message=r.message,
            )
            for r in rows
        ]
