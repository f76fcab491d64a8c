"""Component-scoped control of a platform started with `devpush up`: which components run,
start/stop/restart requests to its supervisor, and waiting until they took effect."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from devpush.console import NO_PLATFORM, PLATFORM_HINT, fail, out, split_components
from devpush.errors import DevpushError
from devpush.settings import Settings, get_settings

if TYPE_CHECKING:
    from devpush.runstate import PlatformState


def component_names(value: str | None) -> list[str]:
    from devpush.embedded.launcher import COMPONENTS

    return split_components(value, COMPONENTS)


def running(settings: Settings) -> PlatformState | None:
    """The state of the platform whose supervisor runs from this data directory, or None."""
    from devpush.runstate import read_state

    state = read_state(settings)
    return state if state and state.supervisor_pid and alive(state.supervisor_pid) else None


def not_running(settings: Settings, hint: str = PLATFORM_HINT) -> typer.Exit:
    return fail(f"devpush is not running from {settings.data_path}", hint, NO_PLATFORM)


def control(action: str, components: str | None) -> None:
    from devpush.embedded.control_file import send_control

    names = component_names(components)
    settings = get_settings()
    if running(settings) is None:
        raise not_running(settings)
    try:
        send_control(settings, action, names)
    except DevpushError as exc:
        raise fail(exc.message) from None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_and_show(components: str, expect: str) -> None:
    """Wait until the components reach `expect` (running|stopped), show them, exit non-zero
    if they did not."""
    names = component_names(components or None)
    deadline = time.monotonic() + 60
    states = component_states(names)
    while time.monotonic() < deadline and any(
        v not in (expect, "external") for v in states.values()
    ):
        time.sleep(0.3)
        states = component_states(names)
    print_states(states)
    if any(v not in (expect, "external") for v in states.values()):
        raise fail(f"some components are not {expect}", "see <data dir>/logs/ for their logs")


def component_states(names: list[str]) -> dict[str, str]:
    from devpush.runstate import read_state

    settings = get_settings()
    state = read_state(settings)
    result = {}
    for name in names:
        pid = state.children.get(name) if state else None
        external = (name == "db" and settings.database_url) or (
            name == "redis" and settings.redis_url
        )
        if external and not pid:
            result[name] = "external"
        else:
            result[name] = "running" if pid and alive(pid) else "stopped"
    return result


def print_states(states: dict[str, str]) -> None:
    from devpush.runstate import read_state

    state = read_state(get_settings())
    table = Table("component", "state", "pid")
    for name, label in states.items():
        pid = state.children.get(name) if state else None
        table.add_row(name, label, str(pid or "-"))
    out.print(table)
