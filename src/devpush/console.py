"""What every CLI command module shares: the consoles, one-line failures with their exit
codes, and the checks that a platform is there to reach. Low in the layers: the command
modules (cli, compose, backup, upgrades, client) import it, it imports none of them."""

from __future__ import annotations

import typer
from rich.console import Console

from devpush.settings import Settings

err = Console(stderr=True)
out = Console()


def fail(message: str, hint: str | None = None, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)  # one line
    if hint:
        err.print(f"[dim]hint:[/dim] {hint}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# Exit codes of the server-side commands (README, "Commands"): 0 done, 1 refused or failed
# (e.g. no such user, unhealthy), 2 bad usage, 3 no platform to reach: none runs from this
# data directory, or its database or Redis refuses or does not answer (main() catches those).
NO_PLATFORM = 3
PLATFORM_HINT = (
    "start it with `devpush up --detach`, or set DEVPUSH_DATA_DIR to the data directory of the "
    "running platform (or DEVPUSH_DATABASE_URL and DEVPUSH_REDIS_URL)"
)


def require_platform(settings: Settings, service: str = "database") -> None:
    """Exit NO_PLATFORM unless the `service` (database or redis) is configured or a platform
    started here said where it is (run/state.json)."""
    from devpush.runstate import read_state

    configured = settings.database_url if service == "database" else settings.redis_url
    if not configured and read_state(settings) is None:
        raise fail(f"devpush is not running from {settings.data_path}", PLATFORM_HINT, NO_PLATFORM)


def split_components(
    value: str | None, allowed: tuple[str, ...], default: tuple[str, ...] | None = None
) -> list[str]:
    """`--components app,worker` as a list; unset means `default` (all of `allowed`)."""
    if not value:
        return list(allowed if default is None else default)
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise fail(f"unknown components: {', '.join(unknown)}", f"choose from {', '.join(allowed)}")
    return names
