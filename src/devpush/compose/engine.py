"""Running the compose command and the container engine for the compose deployment.

`Compose` builds every argv (`docker compose` or `podman-compose` with the project name, the
files and the .env file), runs it with a timeout, and answers questions about the project's
containers through the engine CLI (`docker`/`podman` with compose's labels). Health is
asked of the engine: `podman healthcheck run` (Podman without systemd runs no healthcheck
timers) or Docker's own health status.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devpush.errors import ConfigError
from devpush.settings import Settings

SSL_FILES = {
    "default": "ssl-default.yml",
    "cloudflare": "ssl-cloudflare.yml",
    "route53": "ssl-route53.yml",
}


class ComposeError(ConfigError):
    """A compose or engine command failed; the message holds its output's tail."""


def detect_command(settings: Settings) -> list[str]:
    """DEVPUSH_COMPOSE_CMD, else `docker compose` when it works, else podman-compose."""
    if settings.compose_cmd:
        return shlex.split(settings.compose_cmd)
    docker = shutil.which("docker")
    if docker and _succeeds([docker, "compose", "version"]):
        return [docker, "compose"]
    local = Path(sys.executable).with_name("podman-compose")
    found = str(local) if local.exists() else shutil.which("podman-compose")
    if not found:
        raise ComposeError(
            "neither `docker compose` nor podman-compose is installed: install one, or set "
            "DEVPUSH_COMPOSE_CMD"
        )
    return [found]


def _succeeds(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def compose_files(settings: Settings) -> list[Path]:
    folder = settings.compose_dir.resolve()
    override = "override.dev.yml" if settings.compose_dev else "override.yml"
    files = [
        folder / "base.yml",
        folder / override,
        folder / SSL_FILES[settings.cert_challenge_provider],
    ]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ComposeError(
            f"compose files missing: {', '.join(missing)}; set DEVPUSH_COMPOSE_DIR to the "
            "checkout's compose/ directory"
        )
    return files


@dataclass
class Container:
    id: str
    name: str
    service: str
    running: bool
    state: str


@dataclass
class Compose:
    settings: Settings
    command: list[str]
    files: list[Path]
    engine: str = "podman"
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Compose:
        command = detect_command(settings)
        engine = "docker" if Path(command[0]).name == "docker" else "podman"
        return cls(settings=settings, command=command, files=compose_files(settings), engine=engine)

    @property
    def project(self) -> str:
        return self.settings.compose_project

    def argv(self, *args: str) -> list[str]:
        argv = [*self.command, "-p", self.project]
        for path in self.files:
            argv += ["-f", str(path)]
        env_file = self.settings.compose_env_file
        if env_file.is_file():
            argv += ["--env-file", str(env_file.resolve())]
        return [*argv, *args]

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._exec(self.argv(*args), timeout=timeout, check=check)

    def engine_run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._exec([self.engine, *args], timeout=timeout, check=check)

    def _exec(
        self, argv: list[str], *, timeout: float, check: bool
    ) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ComposeError(f"`{_short(argv)}` did not finish within {timeout:.0f}s") from exc
        except OSError as exc:
            raise ComposeError(f"cannot run `{argv[0]}`: {exc}") from exc
        if check and result.returncode != 0:
            tail = (result.stderr or result.stdout).strip()[-1500:]
            raise ComposeError(f"`{_short(argv)}` failed (exit {result.returncode}):\n{tail}")
        return result

    def containers(self, service: str | None = None) -> list[Container]:
        """The project's containers (of one service), from the engine's compose labels."""
        args = ["ps", "-a", "--no-trunc", "--format", "json"]
        args += ["--filter", f"label=com.docker.compose.project={self.project}"]
        if service:
            args += ["--filter", f"label=com.docker.compose.service={service}"]
        output = self.engine_run(*args).stdout.strip()
        rows = _json_rows(output)
        found = []
        for row in rows:
            labels = row.get("Labels") or {}
            if isinstance(labels, str):  # docker: "k=v,k=v"
                labels = dict(item.split("=", 1) for item in labels.split(",") if "=" in item)
            names = row.get("Names")
            name = names[0] if isinstance(names, list) else str(names)
            state = str(row.get("State", "")).lower()
            if labels.get("com.docker.compose.oneoff") == "True" or "_tmp" in name:
                continue  # `compose run` containers
            found.append(
                Container(
                    id=str(row.get("Id") or row.get("ID")),
                    name=name,
                    service=labels.get("com.docker.compose.service", ""),
                    running=state == "running",
                    state=state,
                )
            )
        return found

    def healthy(self, container: Container) -> bool:
        """Run (Podman) or read (Docker) the container's healthcheck."""
        if not container.running:
            return False
        if self.engine == "podman":
            result = self.engine_run("healthcheck", "run", container.id, check=False, timeout=60)
            return result.returncode == 0
        result = self.engine_run(
            "inspect",
            "--format",
            "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
            container.id,
            check=False,
        )
        return result.stdout.strip() in ("healthy", "")

    def ensure_network(self, name: str) -> None:
        if self.engine_run("network", "inspect", name, check=False).returncode != 0:
            self.engine_run("network", "create", name)


def _json_rows(output: str) -> list[dict[str, Any]]:
    if not output:
        return []
    if output.startswith("["):
        return list(json.loads(output))
    return [json.loads(line) for line in output.splitlines() if line.strip()]  # docker


def _short(argv: list[str]) -> str:
    return " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))[:300]
