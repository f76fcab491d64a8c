"""Runtime backends by name. The choice is explicit: the project's `runtime` setting, then
DEVPUSH_RUNTIME, then docker when a Docker/Podman socket is configured, else process."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from devpush.errors import ConfigError, Invalid
from devpush.settings import Settings

if TYPE_CHECKING:
    from devpush.runtime.base import Runtime


# The runtimes whose apps run in runner images (containers), reached on 0.0.0.0 inside them.
IMAGE_RUNTIMES = ("docker", "swarm")


def owner_id(settings: Settings) -> str:
    """A platform's id on a shared container engine: derived from its database (without the
    password), which every process of one platform shares and no other platform does."""
    from sqlalchemy.engine import make_url

    from devpush.runstate import database_url

    url = make_url(database_url(settings)).set(password=None)
    return hashlib.sha256(url.render_as_string().encode()).hexdigest()[:16]


class Runtimes:
    """Lazily built runtime backends, one per name, for one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._built: dict[str, Runtime] = {}

    def get(self, name: str) -> Runtime:
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str) -> Runtime:
        s = self.settings
        if name == "docker":
            if not s.docker_host:
                raise ConfigError(
                    "the docker runtime needs DEVPUSH_DOCKER_HOST "
                    "(e.g. unix:///run/podman/podman.sock)"
                )
            from devpush.runtime.docker import DockerRuntime

            return DockerRuntime(
                url=s.docker_host,
                network=s.runner_network,
                default_image=s.runner_image,
                owner=owner_id(s),
                ca_bundle=s.build_ca_bundle,
                isolation=s.network_isolation,
            )
        if name == "swarm":
            if not s.swarm_host:
                raise ConfigError(
                    "the swarm runtime needs DEVPUSH_SWARM_HOST, a swarm manager's Docker API "
                    "(e.g. unix:///var/run/docker.sock); see docs/scale-out.md"
                )
            from devpush.runtime.swarm import SwarmRuntime

            return SwarmRuntime(
                url=s.swarm_host,
                default_image=s.runner_image,
                owner=owner_id(s),
                ca_bundle=s.build_ca_bundle,
                isolation=s.network_isolation,
                drain_seconds=s.drain_seconds,
                start_period=s.deploy_timeout,
                registry=s.swarm_registry,
            )
        if name == "process":
            import uv

            from devpush.runtime import volumes
            from devpush.runtime.process import ProcessRuntime

            return ProcessRuntime(
                root=s.data_path / "runtime" / "process",
                protected_paths=[s.data_path],
                allow_unsandboxed=s.allow_unsandboxed,
                cache_dir=s.build_cache_dir or s.data_path / "cache" / "builds",
                trees_dir=s.data_path / "cache" / "trees",
                volumes_dir=volumes.root_of(s.data_path),
                toolchains_dir=s.data_path / "toolchains",
                python_prefixes=s.python_interpreters,
                python_downloads=s.python_downloads,
                ca_bundle=s.build_ca_bundle,
                tools={"bin/uv": Path(uv.find_uv_bin())},
                network_isolation=s.network_isolation,
                instance_subnet=s.instance_subnet,
                host_services=_database_service(s),
                uid_range=(s.sandbox_uid_base, s.sandbox_uid_count),
            )
        raise ConfigError(f"unknown runtime {name!r}; use docker, process or swarm")

    def check(self, name: str) -> None:
        """Refuse a project's runtime this platform is not set up for, saying what sets it up."""
        if name in self.available():
            return
        needs = {"docker": "DEVPUSH_DOCKER_HOST", "swarm": "DEVPUSH_SWARM_HOST"}.get(name)
        hint = f": its administrator sets {needs} to enable it" if needs else ""
        raise Invalid(
            f"this platform has no {name} runtime{hint}; "
            f"choose one of {', '.join(self.available())}"
        )

    def available(self) -> list[str]:
        s = self.settings
        return [
            *(["docker"] if s.docker_host else []),
            "process",
            *(["swarm"] if s.swarm_host else []),
        ]

    async def close(self) -> None:
        for runtime in self._built.values():
            await runtime.close()
        self._built.clear()


def _database_service(s: Settings) -> list[tuple[str, int]]:
    """The managed databases' server, when isolated apps could not reach it otherwise (this
    machine, or an address in a private range)."""
    import ipaddress

    from devpush.runstate import databases_endpoint

    endpoint = databases_endpoint(s)
    if endpoint is None:
        return []
    host, port = endpoint
    if not host:
        return [("", port)]
    try:
        private = ipaddress.ip_address(host).is_private
    except ValueError:
        return []  # a name: public servers are reachable anyway
    return [(host, port)] if private else []
