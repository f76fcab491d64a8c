"""The platform's signing secret: DEVPUSH_SECRET_KEY, or one generated once under the data dir."""

from __future__ import annotations

import os
import secrets

from devpush.settings import Settings


def secret_key(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_path / "secrets" / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()
