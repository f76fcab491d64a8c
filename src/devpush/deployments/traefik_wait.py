"""Wait, through Traefik's loopback API, until a router serves its hostname or is gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import httpx

from devpush.platform import Platform
from devpush.signing import traefik_api_auth

log = logging.getLogger("devpush.flows")


ROUTE_TIMEOUT = 3.0  # seconds Traefik has to load a route before the switch is undone


async def _ask_traefik(client: httpx.AsyncClient, url: str) -> httpx.Response | None:
    """Traefik's answer about a router (200 or 404), or None when there is no API to ask: an
    external proxy (nothing listens at TRAEFIK_API_URL, or something that isn't our Traefik
    answers, refusing our credentials)."""
    try:
        response = await client.get(url)
    except httpx.TransportError as exc:
        log.info("Traefik's API not reachable (%s); not waiting for routes", type(exc).__name__)
        return None
    if response.status_code not in (200, 404):
        log.warning(
            "Traefik's API answered %s; not waiting for routes",
            response.status_code,
            extra={"url": url},
        )
        return None
    return response


def _rule(response: httpx.Response) -> str | None:
    """The router's rule from a 200, or None when the body isn't Traefik's."""
    try:
        body = response.json()
    except ValueError:
        return None
    rule = body.get("rule") if isinstance(body, dict) else None
    return rule if isinstance(rule, str) else None


async def wait_route_live(
    p: Platform, router: str, hostname: str, timeout: float = ROUTE_TIMEOUT
) -> bool:
    """Wait until Traefik's `router` serves `hostname` (read from Traefik's loopback API).
    False only when that API answered, and never with the route, for `timeout` seconds.
    Without that API (an external proxy) there is nothing to wait for: True, as when live."""
    host = f"Host(`{hostname}`)"

    def live(response: httpx.Response) -> bool:
        rule = _rule(response) if response.status_code == 200 else ""
        return rule is None or host in rule

    return await _poll_router(p, router, timeout, live, "route not live in time")


async def wait_route_gone(p: Platform, router: str, timeout: float = ROUTE_TIMEOUT) -> bool:
    """Wait until Traefik no longer has `router` (its file was rewritten without it). Without
    Traefik's API (an external proxy) there is nothing to wait for: True, as when gone."""

    def gone(response: httpx.Response) -> bool:
        return response.status_code == 404

    return await _poll_router(p, router, timeout, gone, "route not gone in time")


async def wait_server_gone(
    p: Platform, router: str, upstream: str, timeout: float = ROUTE_TIMEOUT
) -> bool:
    """Wait until Traefik no longer sends `router`'s requests to `upstream`: its service is
    gone, or balances over other replicas only. As wait_route_gone without Traefik's API."""
    url = f"http://{upstream}"

    def gone(response: httpx.Response) -> bool:
        if response.status_code == 404:
            return True
        try:
            servers = response.json()["loadBalancer"]["servers"]
            return all(server.get("url") != url for server in servers)
        except (ValueError, KeyError, TypeError, AttributeError):
            return True  # not Traefik's answer: nothing to wait for

    return await _poll_router(p, router, timeout, gone, "server not gone in time", "services")


async def _poll_router(
    p: Platform,
    router: str,
    timeout: float,
    done: Callable[[httpx.Response], bool],
    late: str,
    kind: str = "routers",
) -> bool:
    """Ask Traefik's API about `router` (or its service: `kind`) until `done` says so (True),
    no usable API answers (True: nothing to wait for), or `timeout` passes (False)."""
    url = f"{p.settings.traefik_api}/api/http/{kind}/{router}@file"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=1, auth=traefik_api_auth(p.settings)) as client:
        while loop.time() < deadline:
            response = await _ask_traefik(client, url)
            if response is None or done(response):
                return True
            await asyncio.sleep(0.01)
    log.warning(late, extra={"router": router})
    return False
