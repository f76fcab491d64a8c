"""PostgreSQL's client programs (pg_dump, pg_restore, psql) as the platform finds them:
pgserver's bundled binaries, or those on PATH, of a version able to talk to a given server.
Shared by the embedded database, the platform's backup and managed databases' backups."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

from devpush.errors import ConfigError


def pg_bin() -> Path:
    """pgserver's bundled binaries (found without importing pgserver, which has side effects)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the pgserver package is missing; run `pip install pgserver`")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def major(binary: str) -> int:
    """The major version a client program reports (0: unknown)."""
    try:
        result = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return 0
    match = re.search(r"(\d+)(?:\.\d+)?", result.stdout)
    return int(match.group(1)) if match else 0


def find(name: str, server_major: int, *, path_first: bool) -> str:
    """`name` able to talk to a server of `server_major` (a client at least as new): the one
    on PATH first for an external server (`path_first`), the bundled one first otherwise."""
    try:
        bundled_dir: Path | None = pg_bin()
    except ConfigError:
        bundled_dir = None
    bundled = str(bundled_dir / name) if bundled_dir and (bundled_dir / name).exists() else None
    on_path = shutil.which(name)
    order = [on_path, bundled] if path_first else [bundled, on_path]
    found = []
    for candidate in [c for c in order if c]:
        version = major(candidate)
        found.append(f"{candidate} ({version or 'unknown version'})")
        if version >= server_major:
            return candidate
    if not found:
        raise ConfigError(
            f"{name} is missing: install PostgreSQL's client tools "
            "(`apt-get install postgresql-client`) or the pgserver package"
        )
    raise ConfigError(
        f"no {name} for PostgreSQL {server_major} (found {', '.join(found)}); "
        f"install postgresql-client-{server_major} so that {name} on PATH matches the server"
    )
