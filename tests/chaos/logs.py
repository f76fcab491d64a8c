"""An app printing numbered lines while it serves, and an SSE client of a deployment's log
stream that reconnects with Last-Event-ID whenever the stream breaks, as EventSource does."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.apps import OK_SERVER, Api, commit, git

NUMBERED_APP = (
    """
import os, threading, time


def count():
    for i in range(int(os.environ["LINES"])):
        print(f"line {i}", flush=True)
        time.sleep(float(os.environ["PAUSE"]))
    print("all lines printed", flush=True)


threading.Thread(target=count, daemon=True).start()
"""
    + OK_SERVER
)
DROPPED = re.compile(r"devpush: (\d+) log lines were dropped")


def numbered_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "app.py").write_text(NUMBERED_APP)
    return commit(path, "numbered")


class LogFollower:
    """Follows a deployment's log stream in a thread up to the line `until`, reconnecting
    after Last-Event-ID whenever the stream breaks, as EventSource does."""

    def __init__(self, api: Api, deployment_id: str, *, until: str) -> None:
        self.api, self.deployment_id, self.until = api, deployment_id, until
        self.seen: list[dict[str, Any]] = []
        self.reconnects = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LogFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(300)

    def _run(self) -> None:
        try:
            self.reconnects = follow_logs(
                self.api, self.deployment_id, until=self.until, seen=self.seen
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test by result()
            self.error = exc

    def wait_for(self, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            assert self.error is None and self._thread.is_alive(), self.error
            assert time.monotonic() < deadline, f"only {len(self.seen)} lines arrived"
            time.sleep(0.05)

    def result(self) -> list[dict[str, Any]]:
        self._thread.join(300)
        if self.error is not None:
            raise self.error
        return self.seen


def follow_logs(
    api: Api, deployment_id: str, *, until: str, seen: list[dict[str, Any]], timeout: float = 240
) -> int:
    """Append every log event up to the line `until` to `seen`, reconnecting after
    Last-Event-ID whenever the stream breaks; return how often it reconnected."""
    reconnects = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reconnects += 1
        headers = {"Last-Event-ID": str(seen[-1]["seq"])} if seen else {}
        event: dict[str, str] = {}
        try:
            with api.http.stream(
                "GET",
                f"/api/v1/deployments/{deployment_id}/events",
                headers=headers,
                timeout=httpx.Timeout(10, read=30),
            ) as response:
                if response.status_code != 200:
                    time.sleep(1)
                    continue
                for line in response.iter_lines():
                    if line:
                        name, _, value = line.partition(":")
                        event[name] = value[1:] if value.startswith(" ") else value
                        continue
                    if event.get("event") == "log":
                        seen.append(json.loads(event["data"]))
                        if seen[-1]["message"] == until:
                            return reconnects
                    assert event.get("event") != "end", (event, seen[-3:])
                    event = {}
        except httpx.HTTPError:
            time.sleep(0.5)
    raise AssertionError(f"the line {until!r} never arrived; last: {seen[-3:]}")


def dropped_lines(events: list[dict[str, Any]]) -> int:
    """Lines the shipper reported dropping (its buffer limit was passed)."""
    return sum(int(m.group(1)) for e in events if (m := DROPPED.search(e["message"])))


def assert_numbered_lines(events: list[dict[str, Any]], count: int) -> None:
    """Every numbered line once, in order, unless the shipper reported dropping some; the
    event sequence numbers have no gap and no repeat."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a sequence number is missing"
    numbers = [int(e["message"].split()[1]) for e in events if e["message"].startswith("line ")]
    assert numbers == sorted(set(numbers)), "a line is repeated or out of order"
    missing = count - len(numbers)
    assert missing == dropped_lines(events), f"{missing} lines lost, not counted as dropped"
