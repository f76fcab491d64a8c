"""The monitor's heartbeat: a file its main loop touches every few seconds, which
`devpush monitor --check` (the compose healthcheck) finds fresh only while that loop makes
progress."""

from __future__ import annotations

import hashlib
import socket
import tempfile
import time
from pathlib import Path

from devpush.settings import Settings

INTERVAL = 5.0
STALE_AFTER = 60.0


def heartbeat_path(settings: Settings) -> Path:
    """In the temp dir that the monitor and its check share (the same container under
    compose, whose data dir's run/ belongs to the host's CLI), named after the host and the
    data dir, so that platforms sharing a machine stay apart."""
    tag = hashlib.sha256(str(settings.data_path).encode()).hexdigest()[:12]
    name = f"devpush-monitor-{tag}-{socket.gethostname()}.heartbeat"
    return Path(tempfile.gettempdir()) / name


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
