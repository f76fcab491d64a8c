"""The socket proxy's HTTP server: checks each request against `rules`, forwards the allowed
ones to the engine socket and streams the answer back (logs with follow stream as they come).
Everything else gets 403 with a JSON body `{"message": ...}`, which Docker clients show."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from devpush.socketproxy.rules import (
    MANAGED_LABEL,
    Refused,
    check_create,
    check_exec,
    check_volume,
    match,
)

log = logging.getLogger("devpush.socketproxy")

MAX_CREATE_BODY = 1024 * 1024
# Hop-by-hop headers, and the ones aiohttp recomputes.
_DROP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "content-length",
    "host",
}
_UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
_BASE = web.AppKey("base", str)


@dataclass(frozen=True)
class Upstream:
    """The engine: `unix:///run/docker.sock` or `http://host:port`."""

    url: str

    def __post_init__(self) -> None:
        if not self.url.startswith(("unix://", "http://", "tcp://")):
            raise ValueError(
                f"unsupported upstream {self.url!r}: use unix:///path or http://host:port"
            )

    def session(self) -> tuple[aiohttp.ClientSession, str]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        if self.url.startswith("unix://"):
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(self.url[len("unix://") :])
            return aiohttp.ClientSession(connector=connector, timeout=timeout), "http://engine"
        base = "http://" + self.url.split("://", 1)[1].rstrip("/")
        return aiohttp.ClientSession(timeout=timeout), base


def refuse(message: str, status: int = 403) -> web.Response:
    return web.json_response({"message": f"devpush socket proxy: {message}"}, status=status)


async def _managed(request: web.Request, container: str) -> web.Response | None:
    """None when the named container carries the devpush label; else the answer to send."""
    session, base = request.app[_UPSTREAM], request.app[_BASE]
    async with session.get(f"{base}/containers/{container}/json") as resp:
        if resp.status == 404:
            body = await resp.read()
            return web.Response(status=404, body=body, content_type="application/json")
        if resp.status != 200:
            return refuse(f"cannot inspect container {container} (HTTP {resp.status})", 502)
        info = await resp.json()
    labels = (info.get("Config") or {}).get("Labels") or {}
    if labels.get(MANAGED_LABEL) != "true":
        return refuse(f"container {container} is not managed by devpush")
    return None


async def _exec_container(request: web.Request, exec_id: str) -> str | web.Response:
    """The container an exec runs in, or the answer to send."""
    session, base = request.app[_UPSTREAM], request.app[_BASE]
    async with session.get(f"{base}/exec/{exec_id}/json") as resp:
        if resp.status == 404:
            body = await resp.read()
            return web.Response(status=404, body=body, content_type="application/json")
        if resp.status != 200:
            return refuse(f"cannot inspect exec {exec_id} (HTTP {resp.status})", 502)
        info = await resp.json()
    return str(info.get("ContainerID") or "")


async def handle(request: web.Request) -> web.StreamResponse:
    try:
        rule, container = match(request.method, request.path)
    except Refused as exc:
        log.warning("refused", extra={"method": request.method, "path": request.path})
        return refuse(f"{exc} (see docs/socket-proxy.md)")
    body: bytes | None = None
    if rule.create or rule.volume or rule.exec_create:
        body = await request.content.read(MAX_CREATE_BODY + 1)
        if len(body) > MAX_CREATE_BODY:
            return refuse("create body too large", 413)
        check = check_create if rule.create else check_exec if rule.exec_create else check_volume
        try:
            check(json.loads(body or b"{}"))
        except (Refused, ValueError) as exc:
            return refuse(str(exc))
    if rule.exec and container is not None:
        found = await _exec_container(request, container)
        if isinstance(found, web.Response):
            return found
        if not found:
            return refuse(f"exec {container} names no container")
        container = found
    if container is not None:
        answer = await _managed(request, container)
        if answer is not None:
            return answer
    return await _forward(request, body)


async def _forward(request: web.Request, body: bytes | None) -> web.StreamResponse:
    session, base = request.app[_UPSTREAM], request.app[_BASE]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
    data = body if body is not None else (request.content if request.can_read_body else None)
    try:
        upstream = await session.request(
            request.method,
            f"{base}{request.raw_path}",  # path and query, as the client encoded them
            headers=headers,
            data=data,
            allow_redirects=False,
        )
    except aiohttp.ClientError as exc:
        return refuse(f"the container engine is unreachable: {exc}", 502)
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in _DROP:
                response.headers.add(key, value)
        if upstream.headers.get("Content-Length") and request.method != "HEAD":
            response.content_length = int(upstream.headers["Content-Length"])
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        await response.write_eof()
    return response


def make_app(upstream: Upstream) -> web.Application:
    app = web.Application(client_max_size=0)

    async def lifespan(app: web.Application) -> AsyncIterator[None]:
        session, base = upstream.session()
        app[_UPSTREAM] = session
        app[_BASE] = base
        yield
        await session.close()

    app.cleanup_ctx.append(lifespan)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def parse_listen(listen: str) -> tuple[str, int] | str:
    """`host:port`, or `unix:/path` for a unix socket."""
    if listen.startswith("unix:"):
        return listen.removeprefix("unix:").removeprefix("//")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen {listen!r}: use HOST:PORT or unix:/path")
    return host, int(port)


def serve(listen: str, upstream: str) -> None:
    where = parse_listen(listen)
    app = make_app(Upstream(upstream))  # raises ValueError before serving anything
    if isinstance(where, str):
        web.run_app(app, path=where, print=None, access_log=None)
    else:
        web.run_app(app, host=where[0], port=where[1], print=None, access_log=None)


async def _ping(listen: str) -> bool:
    where = parse_listen(listen)
    if isinstance(where, str):
        connector: aiohttp.BaseConnector = aiohttp.UnixConnector(where)
        url = "http://proxy/_ping"
    else:
        connector = aiohttp.TCPConnector()
        url = f"http://{where[0]}:{where[1]}/_ping"
    timeout = aiohttp.ClientTimeout(total=4)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            async with session.get(url) as resp:
                return resp.status == 200 and (await resp.text()).strip() == "OK"
        except (aiohttp.ClientError, TimeoutError):
            return False


def check(listen: str) -> bool:
    """True when a proxy on `listen` answers /_ping with the engine's OK."""
    return asyncio.run(_ping(listen))
