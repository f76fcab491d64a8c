"""The build plan: plain data that says what was detected in a source tree and how it will be
installed, built and started. Detection produces it (`builds.detect`), runtimes execute it, and
it is printed first in the build log, by `devpush plan` and by the API, so a user sees what was
chosen and why."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from devpush.errors import Invalid


class PlanError(Invalid):
    """The tree can't be built as it is; the message says what to change (one line)."""

    code = "plan_failed"


class MissingToolchain(PlanError):
    """The version a tree asks for is not among the runtime's toolchains (yet): a runtime that
    can fetch one (`Runtime.provide`) gets the chance before the build fails."""

    def __init__(self, message: str, *, language: str, spec: str) -> None:
        super().__init__(message)
        self.language = language
        self.spec = spec


# Where the instance keeps the shared package caches: a directory (process) or a volume
# (docker) mounted at /devpush/cache, content-addressed by the tools themselves.
CACHE_ENV = {
    "UV_CACHE_DIR": "/devpush/cache/uv",
    "UV_LINK_MODE": "copy",  # the cache and /app are different mounts: no hard links
    "UV_PYTHON_DOWNLOADS": "never",
    "UV_NO_PROGRESS": "1",
    "npm_config_cache": "/devpush/cache/npm",
    "npm_config_update_notifier": "false",
    "npm_config_fund": "false",
    "npm_config_audit": "false",
    "COREPACK_HOME": "/devpush/cache/corepack",
    "COREPACK_ENABLE_DOWNLOAD_PROMPT": "0",
    "YARN_CACHE_FOLDER": "/devpush/cache/yarn",
    "npm_config_store_dir": "/devpush/cache/pnpm",
}


@dataclass(frozen=True)
class Plan:
    stack: str  # python | node | static | custom
    start: str
    framework: str | None = None  # django, flask, fastapi, express, next, vite, ...
    language: str | None = None  # python | node
    version: str | None = None  # the version chosen, e.g. "3.11.2"
    version_reason: str | None = None  # e.g. ".python-version asks for 3.11"
    image: str | None = None  # docker: the runner image
    package_manager: str | None = None  # e.g. "uv from uv.lock", "npm ci"
    install: str | None = None
    build: str | None = None
    pre_deploy: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()  # relative to the app directory, first on PATH
    notes: tuple[str, ...] = ()  # why things were chosen
    files: dict[str, str] = field(default_factory=dict)  # generated files, path -> text
    # The installed tree (".venv", "node_modules") is kept per project under this key, derived
    # from the lockfile, the version and the install command: an unchanged lockfile restores
    # it instead of installing again. None when nothing locks the install.
    cache_key: str | None = None
    cache_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = list(self.path)
        data["notes"] = list(self.notes)
        data["files"] = sorted(self.files)
        return data

    def lines(self) -> list[str]:
        """The plan as a person reads it, one fact per line."""
        what = self.framework or self.stack
        lines = [f"Plan: {what} ({self.stack})"]
        if self.language:
            runner = f" in {self.image}" if self.image else ""
            reason = f" ({self.version_reason})" if self.version_reason else ""
            lines.append(f"  {self.language} {self.version or '?'}{runner}{reason}")
        if self.package_manager:
            lines.append(f"  packages: {self.package_manager}")
        if self.cache_key:
            lines.append(
                f"  cache: {self.cache_dir} kept for this lockfile ({self.cache_key[:12]})"
            )
        for label, command in (
            ("install", self.install),
            ("build", self.build),
            ("pre-deploy", self.pre_deploy),
            ("start", self.start),
        ):
            if command:
                lines.append(f"  {label}: {command}")
        lines += [f"  note: {note}" for note in self.notes]
        return lines


def cache_key(*parts: str | bytes | None) -> str:
    """A content address for an installed tree: the hash of everything that shapes it."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else (part or b"")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()[:32]
