"""Component-scoped operations on the compose deployment: start, stop, restart, status.

Components are app, worker, monitor, postgres, redis, traefik and socket-proxy. The app and
the worker each run in one colour at a time (`app-blue` or `app-green`...); the active colour
lives in `<host data dir>/run/compose.json` and `devpush update` flips it. Starting goes in
stages (data stores and the socket proxy, then migrations, then app/worker/monitor, then the
dashboard route and Traefik), waiting for each stage's healthchecks, because podman-compose
does not wait for `depends_on: condition: service_healthy` with Podman < 4.6.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from dotenv import dotenv_values

from devpush.compose.engine import Compose, ComposeError
from devpush.settings import Settings
from devpush.signing import TRAEFIK_API_USER, secret_key, traefik_api_password

COMPONENTS = ("app", "worker", "monitor", "postgres", "redis", "traefik", "socket-proxy")
COLOURED = ("app", "worker")
COLOURS = ("blue", "green")
STAGES = (("postgres", "redis", "socket-proxy"), ("app", "worker", "monitor"), ("traefik",))
REQUIRED_ENV = (
    "DEVPUSH_APP_HOSTNAME",
    "DEVPUSH_DEPLOY_DOMAIN",
    "DEVPUSH_SECRET_KEY",
    "DEVPUSH_ENCRYPTION_KEYS",
    "DEVPUSH_POSTGRES_PASSWORD",
    "DEVPUSH_REDIS_PASSWORD",
)
DATA_UID = 10001
Say = Callable[[str], None]


def quiet(_: str) -> None:
    return None


@dataclass
class ComponentState:
    component: str
    service: str
    state: str  # running | stopped | missing
    health: str  # healthy | unhealthy | -
    container: str


class ComposeStack:
    def __init__(self, settings: Settings, compose: Compose | None = None) -> None:
        self.settings = settings
        self.compose = compose or Compose.from_settings(settings)

    # ---- colours -----------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.settings.host_data_dir / "run" / "compose.json"

    def colours(self) -> dict[str, str]:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            data = {}
        return {c: data.get(c, "blue") if data.get(c) in COLOURS else "blue" for c in COLOURED}

    def save_colours(self, colours: dict[str, str]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(colours, indent=2))
        os.replace(tmp, self.state_file)

    def service(self, component: str, colour: str | None = None) -> str:
        if component in COLOURED:
            return f"{component}-{colour or self.colours()[component]}"
        return component

    # ---- preparing the host ------------------------------------------------------------
    def values(self) -> dict[str, str]:
        """What compose interpolates: the .env file, overridden by the environment."""
        env_file = self.settings.compose_env_file
        values = (
            {k: v or "" for k, v in dotenv_values(env_file).items()} if env_file.is_file() else {}
        )
        return {
            **values,
            **{k: v for k, v in os.environ.items() if k.startswith(("DEVPUSH_", "TRAEFIK_"))},
        }

    def prepare(self) -> None:
        """Check .env, create the data dir (owned by the containers' uid) and the runner
        network. Raises before anything starts when something is missing."""
        values = self.values()
        missing = [key for key in REQUIRED_ENV if not values.get(key)]
        if missing:
            raise ComposeError(
                f"missing in {self.settings.compose_env_file}: {', '.join(missing)}; "
                "scripts/install.sh writes them"
            )
        data = self.settings.host_data_dir
        for sub in ("", "traefik/dynamic", "traefik/acme", "run"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for path in (data, data / "traefik", data / "traefik/dynamic", data / "traefik/acme"):
                os.chown(path, DATA_UID, DATA_UID)
        self.compose.ensure_network(values.get("DEVPUSH_RUNNER_NETWORK") or "devpush_runner")

    # ---- operations --------------------------------------------------------------------
    def start(self, components: list[str], say: Say = quiet) -> None:
        self.prepare()
        for stage in STAGES:
            wanted = [c for c in stage if c in components]
            if not wanted:
                continue
            if "app" in wanted or "worker" in wanted:
                say("applying database migrations")
                self.migrate(self.service("app"))
            services = [self.service(c) for c in wanted]
            say(f"starting {', '.join(services)}")
            self.compose.run("up", "-d", "--no-deps", *services)
            self.wait_healthy(services)
            if "app" in wanted:
                self.route_dashboard(self.service("app"))
        if "traefik" in components:
            self.confirm_route(self.service("app"))

    def stop(self, components: list[str], say: Say = quiet) -> None:
        services = []
        for component in reversed([c for s in STAGES for c in s]):
            if component in components:
                services += self.all_services(component)
        say(f"stopping {', '.join(services)}")
        self.compose.run("stop", *services)

    def restart(self, components: list[str], say: Say = quiet) -> None:
        services = [self.service(c) for s in STAGES for c in s if c in components]
        say(f"restarting {', '.join(services)}")
        self.compose.run("restart", *services)
        self.wait_healthy(services)

    def status(self, components: list[str]) -> list[ComponentState]:
        by_service: dict[str, list] = {}
        for container in self.compose.containers():
            by_service.setdefault(container.service, []).append(container)
        states = []
        for component in components:
            service = self.service(component)
            found = by_service.get(service, [])
            running = [c for c in found if c.running]
            if running:
                healthy = all(self.compose.healthy(c) for c in running)
                state, health = "running", "healthy" if healthy else "unhealthy"
                short = running[0].id[:12]
            else:
                state, health = ("stopped" if found else "missing"), "-"
                short = found[0].id[:12] if found else "-"
            states.append(ComponentState(component, service, state, health, short))
        return states

    def all_services(self, component: str) -> list[str]:
        if component in COLOURED:
            return [f"{component}-{colour}" for colour in COLOURS]
        return [component]

    # ---- building blocks (also used by update) -----------------------------------------
    def migrate(self, service: str) -> None:
        """`devpush migrate` in a one-off container of `service` (its image)."""
        result = self.compose.run(
            "run", "--rm", "--no-deps", "-T", service, "devpush", "migrate", check=False
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip()[-1500:]
            raise ComposeError(f"database migrations failed with the image of {service}:\n{tail}")

    def wait_healthy(self, services: list[str], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        pending = list(services)
        while True:
            containers = {c.service: c for c in self.compose.containers() if c.running}
            pending = [
                s for s in pending if not (s in containers and self.compose.healthy(containers[s]))
            ]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise ComposeError(
                    f"not healthy within {timeout:.0f}s: {', '.join(pending)}; see "
                    f"`{' '.join(self.compose.argv('logs', pending[0]))}`"
                )
            time.sleep(2)

    def route_dashboard(self, service: str) -> None:
        """Point Traefik's dashboard route at `service`: its own container writes the
        platform dynamic file (render_platform with its DEVPUSH_APP_UPSTREAM)."""
        code = (
            "from devpush.proxy.traefik import write_platform_config;"
            "from devpush.settings import get_settings;"
            "print(write_platform_config(get_settings()))"
        )
        self.compose.run("exec", "-T", service, "python3", "-c", code, timeout=120)

    def confirm_route(self, service: str, *, timeout: float = 60) -> None:
        """Wait until Traefik's API shows the dashboard service pointing at `service`."""
        url = (
            f"http://127.0.0.1:{self.settings.traefik_api_port}/api/http/services/devpush-app@file"
        )
        want = f"http://{service}:8000"
        key = self.values().get("DEVPUSH_SECRET_KEY") or secret_key(self.settings)
        auth = (TRAEFIK_API_USER, traefik_api_password(key))
        deadline = time.monotonic() + timeout
        seen: object = None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(url, timeout=3, auth=auth)
            except httpx.HTTPError as exc:
                seen = f"no answer from {url}: {exc}"  # Traefik starting: ask again
            else:
                if response.is_success:
                    servers = response.json().get("loadBalancer", {}).get("servers", [])
                    seen = [s.get("url") for s in servers]
                    if seen == [want]:
                        return
                else:
                    seen = f"HTTP {response.status_code} from {url}"
            time.sleep(0.2)
        raise ComposeError(
            f"Traefik does not route the dashboard to {want} (it shows {seen}); check "
            f"{self.settings.host_data_dir}/traefik/dynamic and Traefik's logs"
        )
