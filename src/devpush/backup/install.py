"""What restore installs besides the database: the keys and signing secret, the push
remote's repositories and Traefik's dynamic files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from devpush import crypto
from devpush.backup import archive
from devpush.errors import ConfigError, Invalid
from devpush.settings import Settings


def check_keys(settings: Settings, archive_keys: list[str], archive_path: Path) -> None:
    """With keys in the environment, they must open what the archive's keys encrypted."""
    if not settings.encryption_keys:
        return
    configured = set(crypto.load_keys(settings))
    if not set(archive_keys) <= configured:
        raise ConfigError(
            "DEVPUSH_ENCRYPTION_KEYS differs from the backup's keys, so the restored secrets "
            "could not be decrypted. Put the backup's keys in .env "
            f"(DEVPUSH_ENCRYPTION_KEYS=$(tar -xzOf {archive_path} {archive.KEYS} | paste -sd,)), "
            "restart the platform, and run the restore again"
        )


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".restore-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    os.replace(tmp, path)


def install_keys(settings: Settings, staging: Path) -> list[str]:
    """Put the archive's keys where this platform reads them; returns warnings."""
    warnings = []
    keys = staged_keys(staging)
    if not settings.encryption_keys:
        crypto.write_keys(settings, keys)
    crypto.get_fernet.cache_clear()
    secret = (staging / archive.SECRET_KEY).read_text().strip()
    if settings.secret_key and settings.secret_key != secret:
        warnings.append(
            "DEVPUSH_SECRET_KEY differs from the backup's: sign-in sessions and links from "
            "before the backup are no longer valid (everything else is unaffected)"
        )
    elif not settings.secret_key:
        _write_private(settings.data_path / "secrets" / "secret_key", secret + "\n")
    return warnings


def staged_keys(staging: Path) -> list[str]:
    keys = [k for k in (staging / archive.KEYS).read_text().split() if k]
    if not keys:
        raise Invalid(f"the archive's {archive.KEYS} is empty")
    return keys


def install_files(settings: Settings, staging: Path) -> None:
    """Swap in the archive's push-remote repositories and Traefik dynamic files."""
    new_repos = staging / "repos"
    repos = settings.data_path / "repos"
    if new_repos.is_dir():
        old = staging / "previous-repos"
        if repos.exists():
            os.replace(repos, old)
        shutil.move(str(new_repos), repos)
        shutil.rmtree(old, ignore_errors=True)
    dynamic = staging / "traefik" / "dynamic"
    if dynamic.is_dir():
        settings.traefik_dynamic_dir.mkdir(parents=True, exist_ok=True)
        for path in dynamic.iterdir():
            if path.is_file():
                shutil.copy2(path, settings.traefik_dynamic_dir / path.name)
