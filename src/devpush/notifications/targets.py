"""Where a notification may be sent: http(s) URLs whose host resolves to public addresses only
(unless DEVPUSH_NOTIFICATIONS_ALLOW_PRIVATE), so that a team cannot make the platform call its
own services, its network's or the cloud's metadata endpoint. Checked when a channel is saved
and again before each delivery, since DNS answers change; a delivery then connects to the very
address it checked (`pinned`), so a name that resolves elsewhere a moment later (DNS
rebinding) can't redirect it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from devpush.errors import Invalid

ALLOWED_SCHEMES = ("http", "https")
RESOLVE_TIMEOUT = 5.0


def parse(url: str) -> tuple[str, int]:
    """The host and port of an acceptable URL, or Invalid saying what is wrong."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise Invalid("the URL may not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Invalid("the URL is malformed; use https://host/path") from None
    if parts.scheme not in ALLOWED_SCHEMES:
        raise Invalid("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise Invalid("the URL has no host; use https://host/path")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except (OSError, TimeoutError):
        raise Invalid(f"the URL's host {host!r} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


async def check_url(url: str, *, allow_private: bool) -> list[str]:
    """Invalid unless `url` is http(s) and (unless `allow_private`) every address its host
    resolves to is public. Returns the addresses checked (none when `allow_private`)."""
    host, port = parse(url)
    if allow_private:
        return []
    addresses = await resolve(host, port)
    if not all(is_public(a) for a in addresses):
        raise Invalid(
            f"the URL's host {host!r} is a loopback, private or link-local address; "
            "notifications go to public addresses only"
        )
    return addresses


def pinned(url: str, addresses: list[str]) -> tuple[httpx.URL, dict[str, str], dict[str, str]]:
    """The request for `url` sent to one of the `addresses` checked (IPv4 first), with its
    Host header and TLS server name (for SNI and the certificate check) still the URL's host;
    `url` as it is when nothing was checked. Returns the URL, headers and httpx extensions."""
    target = httpx.URL(url)
    if not addresses:
        return target, {}, {}
    address = min(addresses, key=lambda a: (ipaddress.ip_address(a.split("%", 1)[0]).version, a))
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return target.copy_with(host=address), {"Host": target.netloc.decode()}, extensions


def masked(url: str) -> str:
    """The URL as lists show it: scheme and host, never the path (Slack's and Discord's carry
    their secret) or credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/…"
