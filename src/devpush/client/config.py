"""Where the client CLI keeps its credentials: <config dir>/devpush/credentials.json, mode
0600. DEVPUSH_URL and DEVPUSH_TOKEN override the file."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "devpush" / "credentials.json"


def load() -> Credentials | None:
    stored: dict[str, str] = {}
    try:
        stored = json.loads(config_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        pass
    url = os.environ.get("DEVPUSH_URL") or stored.get("url")
    token = os.environ.get("DEVPUSH_TOKEN") or stored.get("token")
    if not url or not token:
        return None
    return Credentials(url=url.rstrip("/"), token=token)


def save(credentials: Credentials) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": credentials.url, "token": credentials.token}, fh)
    os.replace(tmp, path)
    return path
