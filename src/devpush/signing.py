"""The platform's signing secret: DEVPUSH_SECRET_KEY, or one generated once under the data dir."""

from __future__ import annotations

import hashlib
import hmac
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


TRAEFIK_API_USER = "devpush"


def traefik_api_password(key: str) -> str:
    """The password of Traefik's API for the platform (basic auth on the loopback-only
    "traefik" entrypoint), derived from the signing secret `key`: every platform process has
    it, no app does."""
    return hmac.new(key.encode(), b"devpush traefik api", hashlib.sha256).hexdigest()


def traefik_api_auth(settings: Settings) -> tuple[str, str]:
    """(user, password) for httpx's `auth=` on Traefik's API."""
    return TRAEFIK_API_USER, traefik_api_password(secret_key(settings))
