"""What the log store hands out: stored lines, and the status changes followers receive
among them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StoredLine:
    seq: int
    ts: datetime
    deployment_id: str
    stream: str
    phase: str
    level: str | None
    message: str
    environment_id: str | None = None
    branch: str | None = None
    replica: int | None = None  # which replica wrote it (None: the platform's own line)

    def to_json(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "ts": self.ts.isoformat(),
            "deployment_id": self.deployment_id,
            "environment_id": self.environment_id,
            "branch": self.branch,
            "stream": self.stream,
            "phase": self.phase,
            "level": self.level,
            "message": self.message,
            "replica": self.replica,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredLine:
        return cls(
            seq=int(data["seq"]),
            ts=datetime.fromisoformat(data["ts"]),
            deployment_id=data["deployment_id"],
            stream=data["stream"],
            phase=data["phase"],
            level=data.get("level"),
            message=data["message"],
            environment_id=data.get("environment_id"),
            branch=data.get("branch"),
            replica=data.get("replica"),
        )


# Followed events: a stored line, or a deployment status payload (domain_events.status_payload).
@dataclass(frozen=True)
class StatusChange:
    payload: dict[str, Any]


Followed = StoredLine | StatusChange
