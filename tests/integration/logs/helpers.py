"""Helpers for the log tests: project references, storing lines as the shipper does, and a
small SSE reader."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx

from devpush import events
from devpush.db import session_scope, utcnow
from devpush.logs.lines import StoredLine
from devpush.logs.store import NewLine, PostgresLogStore
from devpush.platform import Platform

SECRET = "s3cr3t-v4lue-9f8e"


@dataclass
class ProjectRefs:
    id: str
    team_id: str
    environments: dict[str, str]  # slug -> id


MakeDeployment = Callable[..., Awaitable[str]]


async def append(
    p: Platform,
    deployment_id: str,
    messages: list[str],
    *,
    ts: datetime | None = None,
    publish: bool = True,
    phase: str = "runtime",
) -> list[StoredLine]:
    """Store lines through the store (and publish them, as the shipper does)."""
    start = ts or utcnow()
    lines = [
        NewLine(ts=start + timedelta(milliseconds=i), stream="stdout", phase=phase, message=m)
        for i, m in enumerate(messages)
    ]
    async with session_scope(p.sessions) as session:
        stored = await PostgresLogStore().append(
            session=session, deployment_id=deployment_id, lines=lines
        )
    if publish:
        for line in stored:
            await events.publish_deployment(p.redis, deployment_id, "log", line.to_json())
    return stored


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class EventStream:
    """Reads SSE events from an open streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, timeout: float = 10) -> Event:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> Event:
        event = Event()
        has_field = False
        async for line in self.lines:
            if not line:
                if has_field:
                    return event
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                self.comments.append(value)
                continue
            has_field = True
            if name == "data":
                event.data = f"{event.data}\n{value}" if event.data else value
            elif name == "event":
                event.event = value
            elif name == "id":
                event.id = value
        raise EOFError("the stream ended")

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 20) -> list[Event]:
        """Events up to and including the first matching `predicate`."""
        seen: list[Event] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            event = await self.next(max(remaining, 0.01))
            seen.append(event)
            if predicate(event):
                return seen


def lines_of(events_: list[Event]) -> list[dict[str, Any]]:
    return [e.json() for e in events_ if e.event == "log"]
