"""The monitor's heartbeat: a file its main loop touches every few seconds, which
`devpush monitor --check` (the compose healthcheck) finds fresh only while that loop makes
progress. One file per host name, so monitors sharing a data directory stay apart."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from devpush.settings import Settings

INTERVAL = 5.0
STALE_AFTER = 60.0


def heartbeat_path(settings: Settings) -> Path:
    return settings.data_dir / "run" / f"monitor-{socket.gethostname()}.heartbeat"


def beat(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def age(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last beat, or None when there was none."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - mtime
