"""Traefik configuration: the static file for embedded mode, and the dynamic files (file
provider, one per project plus one for the platform) derived from the database.

Rendering is pure (`render_project(...) -> dict`); writing validates the render, writes a temp
file and swaps it in with os.replace, and skips the write when nothing changed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devpush.errors import ConfigError
from devpush.settings import Settings
from devpush.signing import traefik_api_auth

PLATFORM_FILE = "_platform.yml"
# Seconds: the latency histogram's bounds, from which metrics/ reads p50/p95/p99.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_NAME = re.compile(r"[^a-z0-9-]")
RETRY = "replicas-retry"  # a project file's middleware retrying a request on another replica
HEALTH_INTERVAL = "1s"
HEALTH_TIMEOUT = "1s"
# A project file's transport to replicas. A killed container's address stops answering ARP,
# so a dial there hangs (30 s by Traefik's default) rather than being refused; a short dial
# timeout turns it into an error the retry middleware sends on to another replica.
TRANSPORT = "replicas-transport"
DIAL_TIMEOUT = "1s"


@dataclass(frozen=True)
class Route:
    """Hostnames served by one deployment: its replicas' upstreams, balanced (and, when there
    are several, health-checked on `health_path` so that one that stops answering drops out
    while the others serve)."""

    key: str  # deployment id
    upstreams: tuple[str, ...]  # host:port of each routed replica
    hostnames: tuple[str, ...]
    health_path: str = "/"


@dataclass(frozen=True)
class Redirect:
    hostname: str
    target: str  # hostname to redirect to, same path


@dataclass(frozen=True)
class ProjectRoutes:
    slug: str
    routes: tuple[Route, ...] = ()
    redirects: tuple[Redirect, ...] = ()
    tls_hostnames: frozenset[str] = field(default_factory=frozenset)


def router_name(slug: str, key: str) -> str:
    return _NAME.sub("-", f"{slug}-{key}")


def redirect_router_name(slug: str, hostname: str) -> str:
    return _NAME.sub("-", f"{slug}-redirect-{hostname}")


def _rule(hostnames: tuple[str, ...] | list[str]) -> str:
    for host in hostnames:
        if not re.fullmatch(r"[a-z0-9.-]+", host):
            raise ConfigError(f"refusing to route the invalid hostname {host!r}")
    return " || ".join(f"Host(`{h}`)" for h in sorted(hostnames))


def _entrypoints(settings: Settings) -> list[str]:
    return ["websecure"] if settings.https_port else ["web"]


def _tls(settings: Settings) -> dict[str, Any] | None:
    if not settings.https_port:
        return None
    return {"certResolver": settings.cert_resolver} if settings.cert_resolver else {}


def render_project(project: ProjectRoutes, settings: Settings) -> dict[str, Any]:
    routers: dict[str, Any] = {}
    services: dict[str, Any] = {}
    middlewares: dict[str, Any] = {}
    transports: dict[str, Any] = {}
    tls = _tls(settings)
    for route in project.routes:
        if not route.hostnames:
            continue
        name = router_name(project.slug, route.key)
        router: dict[str, Any] = {
            "rule": _rule(route.hostnames),
            "service": name,
            "entryPoints": _entrypoints(settings),
            "priority": 100,
        }
        if tls is not None:
            router["tls"] = tls
        balancer: dict[str, Any] = {
            "servers": [{"url": f"http://{upstream}"} for upstream in route.upstreams],
            "passHostHeader": True,
        }
        if len(route.upstreams) > 1:
            # A replica that dies is skipped within a check (and its request retried on
            # another: the retry middleware below) until its restart answers again.
            balancer["healthCheck"] = {
                "path": route.health_path,
                "interval": HEALTH_INTERVAL,
                "timeout": HEALTH_TIMEOUT,
            }
            balancer["serversTransport"] = TRANSPORT
            transports[TRANSPORT] = {"forwardingTimeouts": {"dialTimeout": DIAL_TIMEOUT}}
            middlewares[RETRY] = {"retry": {"attempts": 3, "initialInterval": "50ms"}}
            router["middlewares"] = [RETRY]
        routers[name] = router
        services[name] = {"loadBalancer": balancer}
    for redirect in project.redirects:
        name = redirect_router_name(project.slug, redirect.hostname)
        scheme = settings.url_scheme
        middlewares[name] = {
            "redirectRegex": {
                "regex": r"^https?://[^/]+(.*)$",
                "replacement": f"{scheme}://{redirect.target}${{1}}",
                "permanent": True,
            }
        }
        router = {
            "rule": _rule([redirect.hostname]),
            "service": "noop@internal",
            "middlewares": [name],
            "entryPoints": _entrypoints(settings),
            "priority": 100,
        }
        if tls is not None:
            router["tls"] = tls
        routers[name] = router
    http: dict[str, Any] = {}
    if routers:
        http["routers"] = routers
    if services:
        http["services"] = services
    if middlewares:
        http["middlewares"] = middlewares
    if transports:
        http["serversTransports"] = transports
    return {"http": http} if http else {}


def render_platform(settings: Settings) -> dict[str, Any]:
    """The dashboard router, and the catch-all that sends unknown deployment hostnames to the
    app's "deployment not found" page."""
    upstream = settings.app_upstream or f"http://127.0.0.1:{settings.app_port}"
    app = {
        "loadBalancer": {
            "servers": [{"url": upstream}],
            "passHostHeader": True,
        }
    }
    domain = re.escape(settings.deploy_domain)
    routers: dict[str, Any] = {
        "devpush-app": {
            "rule": _rule([settings.app_hostname]),
            "service": "devpush-app",
            "entryPoints": _entrypoints(settings),
            "priority": 50,
        },
        "devpush-catchall": {
            "rule": f"HostRegexp(`^.+\\.{domain}$`)",
            "service": "devpush-app",
            "entryPoints": _entrypoints(settings),
            "priority": 1,
        },
    }
    tls = _tls(settings)
    if tls is not None:
        for router in routers.values():
            router["tls"] = tls
    # Traefik's API, on its own loopback-only entrypoint, for the platform alone (basic auth):
    # finalize and `devpush update` read it; an app that reached the port would learn nothing.
    routers["devpush-api"] = {
        "rule": "PathPrefix(`/api`)",
        "service": "api@internal",
        "entryPoints": ["traefik"],
        "middlewares": ["devpush-api-auth"],
        "priority": 1000,
    }
    user, password = traefik_api_auth(settings)
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    middlewares = {"devpush-api-auth": {"basicAuth": {"users": [f"{user}:{{SHA}}{digest}"]}}}
    return {
        "http": {"routers": routers, "services": {"devpush-app": app}, "middlewares": middlewares}
    }


def render_static(settings: Settings) -> dict[str, Any]:
    entrypoints: dict[str, Any] = {
        "web": {"address": f"{settings.http_host}:{settings.http_port}"},
        "traefik": {"address": f"127.0.0.1:{settings.traefik_api_port}"},
    }
    if settings.https_port:
        entrypoints["websecure"] = {"address": f"{settings.http_host}:{settings.https_port}"}
        entrypoints["web"]["http"] = {
            "redirections": {"entryPoint": {"to": "websecure", "scheme": "https"}}
        }
    static: dict[str, Any] = {
        "entryPoints": entrypoints,
        "ping": {"entryPoint": "traefik"},
        # The API is served only through the "devpush-api" router (basic auth, loopback-only
        # "traefik" entrypoint: render_platform): finalize confirms a route there.
        "api": {"dashboard": False},
        "providers": {
            "providersThrottleDuration": "10ms",
            "file": {"directory": str(settings.traefik_dynamic_dir), "watch": True},
        },
        "log": {"level": "WARN"},
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        # Per-router request counts and latencies at /metrics on the loopback-only "traefik"
        # entrypoint: the monitor scrapes them into each deployment's metrics (metrics/).
        "metrics": {
            "prometheus": {
                "entryPoint": "traefik",
                "addRoutersLabels": True,
                "buckets": list(LATENCY_BUCKETS),
            }
        },
    }
    if settings.https_port and settings.cert_resolver and settings.acme_email:
        # HTTP-01: the CA fetches /.well-known/acme-challenge/ on port 80 of each hostname,
        # which must reach the "web" entrypoint; Traefik answers it ahead of the redirect.
        acme: dict[str, Any] = {
            "email": settings.acme_email,
            "storage": str(settings.data_path / "traefik" / "acme.json"),
            "httpChallenge": {"entryPoint": "web"},
        }
        if settings.acme_ca_server:
            acme["caServer"] = settings.acme_ca_server
        static["certificatesResolvers"] = {settings.cert_resolver: {"acme": acme}}
    return static


def _validate(data: dict[str, Any]) -> None:
    http = data.get("http", {})
    services = set(http.get("services", {}))
    for name, router in http.get("routers", {}).items():
        target = router.get("service", "")
        if not target.endswith("@internal") and target not in services:
            raise ConfigError(f"router {name} points at the missing service {target}")


def write_atomic(path: Path, data: dict[str, Any]) -> bool:
    """Write YAML to `path` unless it already holds exactly this; True when it changed."""
    _validate(data)
    text = yaml.safe_dump(data, sort_keys=True)
    try:
        if path.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return True


def project_file(settings: Settings, slug: str) -> Path:
    return settings.traefik_dynamic_dir / f"project-{slug}.yml"


def write_project(settings: Settings, project: ProjectRoutes) -> bool:
    data = render_project(project, settings)
    path = project_file(settings, project.slug)
    if not data:
        return remove_project(settings, project.slug)
    return write_atomic(path, data)


def remove_project(settings: Settings, slug: str) -> bool:
    path = project_file(settings, slug)
    if path.exists():
        path.unlink()
        return True
    return False


def write_platform_config(settings: Settings) -> Path:
    path = settings.traefik_dynamic_dir / PLATFORM_FILE
    write_atomic(path, render_platform(settings))
    return path


def write_static_config(settings: Settings) -> Path:
    path = settings.data_path / "traefik" / "traefik.yml"
    write_atomic(path, render_static(settings))
    return path


def read_dynamic(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every project file, by slug (tests and the reconciler compare it with the database)."""
    result: dict[str, dict[str, Any]] = {}
    for path in sorted(settings.traefik_dynamic_dir.glob("project-*.yml")):
        result[path.stem.removeprefix("project-")] = yaml.safe_load(path.read_text()) or {}
    return result
