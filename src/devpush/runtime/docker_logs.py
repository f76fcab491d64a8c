"""The docker runtime's logs: the engine's multiplexed log stream, split into lines per stream,
with the engine's timestamps stripped and the entrypoint's phase markers followed."""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import aiodocker
import aiohttp

from devpush.runtime.base import PHASE_MARKER, LogRecord, Phase

MAX_LINE_BYTES = 64 * 1024

# "2024-05-01T12:34:56Z " (Podman) or "2024-05-01T12:34:56.123456789Z " (Docker)
_TIMESTAMP = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d) ")
LOG_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)


async def log_frames(content: aiohttp.StreamReader) -> AsyncIterator[tuple[int, bytes]]:
    """The engine's multiplexed log stream: an 8-byte header (stream, size), then the bytes."""
    while True:
        try:
            header = await content.readexactly(8)
            stream, size = struct.unpack(">BxxxL", header)
            payload = await content.readexactly(size)
        except asyncio.IncompleteReadError:
            return
        yield stream, payload


class LogParser:
    """Splits frames into lines per stream, strips the engine's timestamps, follows phases."""

    def __init__(self) -> None:
        # The entrypoint marks each phase on both streams, so each stream follows its own
        # markers and its lines keep the right phase however the engine interleaves them.
        self._phase: dict[str, Phase] = {"stdout": Phase.build, "stderr": Phase.build}
        self._buffers: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self._started: dict[str, datetime] = {}
        self._cut: dict[str, bool] = {"stdout": False, "stderr": False}

    def feed(self, stream_id: int, payload: bytes) -> Iterator[LogRecord]:
        stream = "stderr" if stream_id == 2 else "stdout"
        ts, data = split_timestamp(payload)
        buf = self._buffers[stream]
        if not buf and not self._cut[stream]:
            self._started[stream] = ts  # a line's time is the time its first part arrived
        while data:
            head, newline, data = data.partition(b"\n")
            if not self._cut[stream]:
                buf += head[: MAX_LINE_BYTES - len(buf)]
            if len(buf) >= MAX_LINE_BYTES and not newline:
                self._cut[stream] = True  # drop the rest of this overlong line
            if newline:
                record = self._line(stream, bytes(buf))
                buf.clear()
                self._cut[stream] = False
                self._started[stream] = ts
                if record:
                    yield record

    def flush(self) -> Iterator[LogRecord]:
        for stream, buf in self._buffers.items():
            if buf:
                record = self._line(stream, bytes(buf))
                buf.clear()
                if record:
                    yield record

    def _line(self, stream: str, raw: bytes) -> LogRecord | None:
        message = raw.decode("utf-8", errors="replace")
        if message.startswith(PHASE_MARKER):
            with contextlib.suppress(ValueError):
                self._phase[stream] = Phase(message[len(PHASE_MARKER) :].strip())
                return None
        ts = self._started.get(stream) or datetime.now(UTC)
        return LogRecord(ts=ts, stream=stream, phase=self._phase[stream], message=message)


def split_timestamp(payload: bytes) -> tuple[datetime, bytes]:
    match = _TIMESTAMP.match(payload)
    if not match:
        return datetime.now(UTC), payload
    base, fraction, zone = match.groups()
    text = base.decode() + "." + (fraction or b"0").decode()[:6].ljust(6, "0")
    text += "+00:00" if zone == b"Z" else zone.decode()
    return datetime.fromisoformat(text).astimezone(UTC), payload[match.end() :]


async def engine_logs(
    docker: aiodocker.Docker, path: str, *, follow: bool
) -> AsyncIterator[LogRecord]:
    """The records of an engine log endpoint (`containers/{id}/logs`, `services/{id}/logs`),
    from the beginning: the raw multiplexed stream (aiodocker's log() merges stdout and
    stderr), split into lines that follow the entrypoint's phase markers. Raises DockerError."""
    params = {"stdout": True, "stderr": True, "follow": follow, "timestamps": True}
    parser = LogParser()
    async with docker._query(path, params=params, timeout=LOG_TIMEOUT) as response:
        async for stream, payload in log_frames(response.content):
            for record in parser.feed(stream, payload):
                yield record
    for record in parser.flush():
        yield record
