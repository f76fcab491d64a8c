"""`devpush.toml`: configuration in the repository, overriding the project's settings for the
deployment of that commit.

    [build]
    command = "pip install -r requirements.txt"
    pre_deploy = "python manage.py migrate"

    [start]
    command = "gunicorn app:app --bind $HOST:$PORT"
    port = 8000
    health_path = "/healthz"

    [resources]
    cpus = 0.5
    memory_mb = 256
    build_memory_mb = 2048
    build_cpus = 2
    build_timeout = 900   # seconds

    [runner]
    language = "python"   # python | node
    version = "3.12"

    [environments]
    staging = "release/*"  # environment name = branch pattern

    [watch]
    paths = ["services/api/**", "shared/**"]  # a push touching none of these is skipped

A malformed file fails the deployment with a message that names the line.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devpush.errors import Invalid

FILENAME = "devpush.toml"
_SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "build": {"command": str, "pre_deploy": str},
    "start": {"command": str, "port": int, "health_path": str},
    "resources": {
        "cpus": (int, float),
        "memory_mb": int,
        "build_memory_mb": int,
        "build_cpus": (int, float),
        "build_timeout": int,
    },
    "runner": {"language": str, "version": str},
    "watch": {"paths": list},
}
_CONFIG_KEYS = {
    ("build", "command"): "build_command",
    ("build", "pre_deploy"): "pre_deploy_command",
    ("start", "command"): "start_command",
    ("start", "port"): "port",
    ("start", "health_path"): "health_path",
    ("resources", "cpus"): "cpus",
    ("resources", "memory_mb"): "memory_mb",
    ("resources", "build_memory_mb"): "build_memory_mb",
    ("resources", "build_cpus"): "build_cpus",
    ("resources", "build_timeout"): "build_timeout",
    ("runner", "language"): "runner_language",
    ("runner", "version"): "runner_version",
}
_LANGUAGES = {"python", "node"}


@dataclass(frozen=True)
class RepoConfig:
    overrides: dict[str, Any] = field(default_factory=dict)  # project config keys
    environments: dict[str, str] = field(default_factory=dict)  # name -> branch pattern
    watch: tuple[str, ...] = ()

    def touches(self, changed: list[str]) -> bool:
        """Whether a change to `changed` files concerns this app (no watch list: always)."""
        if not self.watch:
            return True
        return any(fnmatch.fnmatch(path, pattern) for path in changed for pattern in self.watch)


def _line_of(text: str, section: str, key: str | None = None) -> int:
    lines = text.splitlines()
    in_section = False
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = stripped.strip("[] ") == section
            if in_section and key is None:
                return number
        elif in_section and key and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return 1


def _fail(text: str, section: str, key: str | None, message: str) -> Invalid:
    return Invalid(f"{FILENAME} line {_line_of(text, section, key)}: {message}")


def _check_value(text: str, section: str, key: str, value: Any) -> None:
    expected = _SECTIONS[section][key]
    if isinstance(value, bool) or not isinstance(value, expected):
        kind = getattr(expected, "__name__", "a number")
        raise _fail(text, section, key, f"[{section}] {key} must be {kind}")
    if key == "port" and not 1 <= value <= 65535:
        raise _fail(text, section, key, "[start] port must be between 1 and 65535")
    if key == "health_path" and not value.startswith("/"):
        raise _fail(text, section, key, "[start] health_path must start with '/'")
    if key in ("memory_mb", "build_memory_mb") and not 32 <= value <= 262144:
        raise _fail(text, section, key, f"[resources] {key} must be between 32 and 262144")
    if key in ("cpus", "build_cpus") and not 0 < value <= 64:
        raise _fail(text, section, key, f"[resources] {key} must be between 0 and 64")
    if key == "build_timeout" and not 10 <= value <= 86400:
        raise _fail(text, section, key, "[resources] build_timeout must be 10 to 86400 seconds")
    if key == "language" and value not in _LANGUAGES:
        raise _fail(text, section, key, f"[runner] language must be one of {sorted(_LANGUAGES)}")
    if key == "version" and not re.fullmatch(r"[0-9][0-9.]{0,15}", value):
        raise _fail(text, section, key, "[runner] version must look like 3.12 or 20")
    if key == "paths" and not all(isinstance(p, str) and p for p in value):
        raise _fail(text, section, key, "[watch] paths must be a list of glob strings")
    if isinstance(value, str) and "\x00" in value:
        raise _fail(text, section, key, f"[{section}] {key} must not contain NUL bytes")


def parse(text: str) -> RepoConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        where = f"line {match.group(1)}" if match else "somewhere"
        raise Invalid(f"{FILENAME} {where}: not valid TOML ({exc})") from None
    overrides: dict[str, Any] = {}
    environments: dict[str, str] = {}
    for section, body in data.items():
        if section == "environments":
            if not isinstance(body, dict):
                raise _fail(text, section, None, "[environments] must be a table")
            for name, pattern in body.items():
                if not isinstance(pattern, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
                    raise _fail(
                        text, section, name, '[environments] entries are name = "branch pattern"'
                    )
                environments[name] = pattern
            continue
        if section not in _SECTIONS or not isinstance(body, dict):
            raise _fail(
                text,
                section,
                None,
                f"unknown section [{section}]; use {', '.join(sorted(_SECTIONS))}, environments",
            )
        for key, value in body.items():
            if key not in _SECTIONS[section]:
                raise _fail(text, section, key, f"unknown key {key!r} in [{section}]")
            _check_value(text, section, key, value)
            if (section, key) in _CONFIG_KEYS:
                overrides[_CONFIG_KEYS[(section, key)]] = value
    watch = tuple(data.get("watch", {}).get("paths", ()))
    return RepoConfig(overrides=overrides, environments=environments, watch=watch)


def load(root: Path) -> RepoConfig | None:
    path = root / FILENAME
    if not path.is_file():
        return None
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise Invalid(f"{FILENAME} is not UTF-8 text") from None
    return parse(text)
