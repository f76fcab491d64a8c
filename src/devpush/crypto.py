"""Secrets at rest: MultiFernet over the configured keys (newest first), so keys can rotate.

Keys come from DEVPUSH_ENCRYPTION_KEYS, or from a key file generated once under the data dir.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from devpush.errors import ConfigError
from devpush.settings import Settings, get_settings


def key_file(settings: Settings) -> Path:
    """Where file-held keys live (DEVPUSH_ENCRYPTION_KEYS unset), newest first."""
    return settings.data_path / "secrets" / "fernet_keys"


def load_keys(settings: Settings) -> list[str]:
    if settings.encryption_keys:
        return [k.strip() for k in settings.encryption_keys.split(",") if k.strip()]
    path = key_file(settings)
    if not path.exists():
        write_keys(settings, [Fernet.generate_key().decode()])
    return [k for k in path.read_text().split() if k]


def write_keys(settings: Settings, keys: list[str]) -> None:
    path = key_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(keys) + "\n")
    os.replace(tmp, path)


def fernets(keys: list[str]) -> list[Fernet]:
    try:
        return [Fernet(k.encode()) for k in keys]
    except ValueError as exc:
        raise ConfigError(
            "DEVPUSH_ENCRYPTION_KEYS holds an invalid Fernet key; "
            "generate one with `devpush keys generate`"
        ) from exc


@lru_cache
def get_fernet() -> MultiFernet:
    return MultiFernet(fernets(load_keys(get_settings())))


def encrypt(value: str) -> str:
    return get_fernet().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return get_fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ConfigError(
            "A stored secret cannot be decrypted with the configured keys; "
            "restore the old key to DEVPUSH_ENCRYPTION_KEYS (after the new one)"
        ) from exc


def encrypt_json(value: Any) -> str:
    return encrypt(json.dumps(value))


def decrypt_json(token: str) -> Any:
    return json.loads(decrypt(token))


def rotate(token: str) -> str:
    """Re-encrypt `token` under the newest key."""
    return get_fernet().rotate(token.encode()).decode()


def reencrypt(keys: list[str], token: str) -> str | None:
    """`token` re-encrypted under `keys[0]`, or None when it already is under that key."""
    every = fernets(keys)
    try:
        every[0].decrypt(token.encode())
        return None
    except InvalidToken:
        pass
    try:
        return MultiFernet(every).rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise ConfigError(
            "A stored secret cannot be decrypted with the configured keys; "
            "restore the old key to DEVPUSH_ENCRYPTION_KEYS (after the new one)"
        ) from exc
