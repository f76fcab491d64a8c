"""`devpush update` on the embedded platform, `--full`'s runner-image rebuild (both modes), and
the upgrade steps table that `devpush status` and `devpush upgrades` print."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from devpush.errors import DevpushError
from devpush.settings import Settings, get_settings

if TYPE_CHECKING:
    from devpush.upgrades.service import StepState

STOPPED = "the platform keeps running the version it was started with"


def say(message: str) -> None:
    from devpush.console import err

    err.print(f"[dim]·[/dim] {message}", highlight=False, soft_wrap=True)


def rebuild_runner_images(settings: Settings) -> None:
    """`--full`: the runner images again, with the newest Node.js/npm/uv of their release
    lines and the host packages their build needs (scripts/runner-images.sh --refresh)."""
    from devpush.console import fail
    from devpush.runtime import runner_images

    say("rebuilding the runner images (scripts/runner-images.sh --refresh)")
    try:
        code = asyncio.run(runner_images.build(settings, None, refresh=True, on_line=say))
    except DevpushError as exc:
        raise fail(f"update stopped: {exc.message}", STOPPED) from None
    if code != 0:
        raise fail(
            f"update stopped: building the runner images failed (exit {code}); its output is above",
            STOPPED,
        )


def update_embedded(full: bool) -> None:
    """Runner images (--full, docker runtime), then migrations and upgrade steps, then restart
    the app, worker and monitor. Anything failing before the restart leaves them as they run."""
    from devpush.console import fail
    from devpush.embedded import control
    from devpush.embedded.private import set_private_umask
    from devpush.runstate import database_url
    from devpush.upgrades.migrate import upgrade

    settings = get_settings()
    if control.running(settings) is None:
        raise control.not_running(settings)
    set_private_umask()
    if full and settings.docker_host:
        rebuild_runner_images(settings)
    elif full:
        say("process runtime only: no runner images to rebuild")
    say("running database migrations and upgrade steps")
    try:
        upgrade(database_url(settings), say=say)
    except DevpushError as exc:
        raise fail(
            f"update stopped: {exc.message}",
            f"{STOPPED}; fix the cause and run `devpush update` again",
        ) from None
    say("restarting app, worker and monitor")
    control.control("restart", "app,worker,monitor")
    control.wait_and_show("app,worker,monitor", "running")
    print_upgrades(settings)


def print_upgrades(settings: Settings) -> None:
    """The upgrade steps with their state, under the components' table."""
    from devpush.console import out

    try:
        steps = asyncio.run(_states(settings))
    except (DevpushError, OSError) as exc:
        message = exc.message if isinstance(exc, DevpushError) else str(exc)
        out.print(f"upgrade steps: unknown ({message})", highlight=False)
        return
    table = Table("upgrade step", "state", "when", "reason")
    for step in steps:
        when = step.finished_at.strftime("%Y-%m-%d %H:%M") if step.finished_at else "-"
        reason = step.reason + (f" [red]({step.detail})[/red]" if step.status == "failed" else "")
        table.add_row(step.version, step.status, when, reason)
    out.print(table)


async def _states(settings: Settings) -> list[StepState]:
    from devpush.db import make_engine, make_sessionmaker, session_scope
    from devpush.runstate import database_url
    from devpush.upgrades.service import states

    engine = make_engine(database_url(settings), pool_size=1)
    try:
        async with session_scope(make_sessionmaker(engine)) as session:
            return await states(session, settings)
    finally:
        await engine.dispose()


def upgrades() -> None:
    """List the versioned upgrade steps: applied, baseline, failed or pending."""
    from devpush.console import require_platform

    settings = get_settings()
    require_platform(settings)
    print_upgrades(settings)
    raise typer.Exit(0)
