"""Running a CGI program (here `git http-backend`) as an ASGI response: the request body
streams into its stdin while its stdout streams back, headers first, so neither a large push
nor a long build log is ever held in memory. The program runs in its own process group, which
is killed when the client goes away or the time limit passes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

log = logging.getLogger("devpush.git_remote")
CHUNK = 64 * 1024
MAX_HEADER = 64 * 1024


async def read_cgi_headers(
    stream: asyncio.StreamReader,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Parse the CGI header block: (status, headers, the body bytes already read)."""
    buffer = b""
    while b"\r\n\r\n" not in buffer and b"\n\n" not in buffer:
        chunk = await stream.read(CHUNK)
        if not chunk:
            raise ValueError("the CGI program ended before its headers")
        buffer += chunk
        if len(buffer) > MAX_HEADER:
            raise ValueError("the CGI program's headers are too long")
    crlf, lf = buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        head, rest = buffer[:crlf], buffer[crlf + 4 :]
    else:
        head, rest = buffer[:lf], buffer[lf + 2 :]
    status, headers = 200, []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"status":
            status = int(value.split(b" ", 1)[0])
        elif name:
            headers.append((name, value))
    return status, headers, rest


class CGIResponse(Response):
    def __init__(self, argv: list[str], env: dict[str, str], timeout: float) -> None:
        super().__init__()
        self.argv, self.env, self.timeout = argv, env, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert proc.stdout is not None
        tasks = [
            asyncio.create_task(_feed(proc, receive)),
            asyncio.create_task(_drain(proc.stderr)),
        ]
        started = False
        try:
            async with asyncio.timeout(self.timeout):
                status, headers, rest = await read_cgi_headers(proc.stdout)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                started = True
                if rest:
                    await send({"type": "http.response.body", "body": rest, "more_body": True})
                while chunk := await proc.stdout.read(CHUNK):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await proc.wait()
        except (TimeoutError, ValueError) as exc:
            log.warning("git http-backend failed", extra={"error": str(exc)})
        finally:
            for task in tasks:
                task.cancel()
            _kill(proc)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        if not started:
            message = b"the git backend failed; try again\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 502,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": message, "more_body": False})
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


async def _feed(proc: asyncio.subprocess.Process, receive: Receive) -> None:
    assert proc.stdin is not None
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            body = message.get("body", b"")
            if body:
                proc.stdin.write(body)
                await proc.stdin.drain()
            if not message.get("more_body", False):
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
            proc.stdin.close()


async def _drain(stream: asyncio.StreamReader | None) -> None:
    """Keep the CGI's stderr from filling up; its lines go to the platform log."""
    if stream is None:
        return
    while line := await stream.readline():
        log.info("git http-backend: %s", line.decode(errors="replace").rstrip()[:500])
