"""The control file between `devpush start|stop|restart` and a running supervisor: a request
written to run/control.json and announced with SIGUSR1, and the id of the last request carried
out in run/control.done."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from pathlib import Path

import psutil

from devpush.errors import ConfigError
from devpush.runstate import read_state
from devpush.settings import Settings


def control_path(settings: Settings) -> Path:
    return settings.data_path / "run" / "control.json"


def done_path(settings: Settings) -> Path:
    """The id of the last control request the supervisor has carried out."""
    return settings.data_path / "run" / "control.done"


def read_control(settings: Settings) -> tuple[str, list[str], str] | None:
    path = control_path(settings)
    try:
        data = json.loads(path.read_text())
        path.unlink()
        return str(data["action"]), [str(n) for n in data["components"]], str(data.get("id"))
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


def send_control(
    settings: Settings, action: str, components: list[str], timeout: float = 300
) -> None:
    """Ask a running supervisor to start, stop or restart some components, and wait until it
    has (a restart that returned at once would let `devpush status` show the old processes)."""
    state = read_state(settings)
    if not state or not state.supervisor_pid:
        raise ConfigError(
            f"devpush is not running from {settings.data_path}; start it with `devpush up --detach`"
        )
    request_id = secrets.token_hex(8)
    path = control_path(settings)
    path.write_text(json.dumps({"action": action, "components": components, "id": request_id}))
    os.kill(state.supervisor_pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if done_path(settings).read_text() == request_id:
                return
        except FileNotFoundError:
            pass
        if not psutil.pid_exists(state.supervisor_pid):
            pid = state.supervisor_pid
            raise ConfigError(f"devpush stopped (pid {pid}) before it could {action}")
        time.sleep(0.1)
    raise ConfigError(
        f"devpush did not {action} {', '.join(components)} within {timeout:.0f}s; see "
        f"{settings.data_path / 'logs'} and the output of `devpush up`"
    )
