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

    [[volumes]]            # kept per environment across deploys (projects/volumes.py)
    name = "data"
    mount_path = "/data"
    size_mb = 1024         # optional

    [[cron]]               # run in each environment's live deployment (projects/cron.py)
    name = "nightly"
    schedule = "0 3 * * *" # five cron fields, UTC
    command = "python manage.py clearsessions"
    timeout = 600          # seconds, optional (600)

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
from devpush.projects import cron as cron_rules
from devpush.projects import volumes as volume_rules
from devpush.projects.limits import MAX_REPLICAS

FILENAME = "devpush.toml"
_SECTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "build": {"command": str, "pre_deploy": str},
    "start": {"command": str, "port": int, "health_path": str, "replicas": int},
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
    ("start", "replicas"): "replicas",
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


def _entry_line(text: str, section: str, index: int, key: str | None) -> int:
    """The line of `key` in the index-th `[[section]]` table (its header without a key)."""
    seen, inside = -1, False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped == f"[[{section}]]"
            seen += inside
            if inside and seen == index and key is None:
                return number
        elif inside and seen == index and key and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return _entry_line(text, section, index, None) if key else 1


def _volumes(text: str, entries: Any) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        raise _fail(text, "volumes", None, "volumes are [[volumes]] tables")
    found: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _fail(text, "volumes", None, "volumes are [[volumes]] tables")
        keys = {"name", "mount_path", "size_mb"}
        unknown = sorted(set(entry) - keys)
        if unknown:
            line = _entry_line(text, "volumes", index, unknown[0])
            raise Invalid(f"{FILENAME} line {line}: unknown key {unknown[0]!r} in [[volumes]]")
        for key, check in (
            ("name", volume_rules.check_name),
            ("mount_path", volume_rules.check_mount_path),
            ("size_mb", volume_rules.check_size),
        ):
            try:
                check(entry.get(key))
            except ValueError as exc:
                line = _entry_line(text, "volumes", index, key if key in entry else None)
                raise Invalid(f"{FILENAME} line {line}: [[volumes]] {key}: {exc}") from None
        found.append({k: entry.get(k) for k in sorted(keys)})
    try:
        return volume_rules.check_set(found)
    except ValueError as exc:
        raise _fail(text, "volumes", None, str(exc)) from None


def _cron(text: str, entries: Any) -> list[dict[str, Any]]:
    if not isinstance(entries, list):
        raise _fail(text, "cron", None, "cron jobs are [[cron]] tables")
    found: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _fail(text, "cron", None, "cron jobs are [[cron]] tables")
        unknown = sorted(set(entry) - {"name", "schedule", "command", "timeout"})
        if unknown:
            line = _entry_line(text, "cron", index, unknown[0])
            raise Invalid(f"{FILENAME} line {line}: unknown key {unknown[0]!r} in [[cron]]")
        job: dict[str, Any] = {}
        for key, check in (
            ("name", cron_rules.check_name),
            ("schedule", cron_rules.check_schedule),
            ("command", cron_rules.check_command),
            ("timeout", cron_rules.check_timeout),
        ):
            try:
                job[key] = check(entry.get(key))
            except ValueError as exc:
                line = _entry_line(text, "cron", index, key if key in entry else None)
                raise Invalid(f"{FILENAME} line {line}: [[cron]] {key}: {exc}") from None
        found.append(job)
    try:
        return cron_rules.check_set(found)
    except ValueError as exc:
        names = [j["name"] for j in found]
        twice = next((i for i, n in enumerate(names) if names.index(n) != i), None)
        line = _entry_line(text, "cron", twice, "name") if twice is not None else 1
        raise Invalid(f"{FILENAME} line {line}: {exc}") from None


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
    if key == "replicas" and not 1 <= value <= MAX_REPLICAS:
        raise _fail(text, section, key, f"[start] replicas must be between 1 and {MAX_REPLICAS}")
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
        if section == "volumes":
            overrides["volumes"] = _volumes(text, body)
            continue
        if section == "cron":
            overrides["cron"] = _cron(text, body)
            continue
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
                f"unknown section [{section}]; use {', '.join(sorted(_SECTIONS))}, environments, "
                "[[volumes]], [[cron]]",
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
