"""The `devpush backup` and `devpush restore` commands: parse arguments, show progress and the
key warning, and call the backup service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.panel import Panel

from devpush.console import NO_PLATFORM, require_platform
from devpush.errors import DevpushError, ServiceUnavailable
from devpush.settings import get_settings

err = Console(stderr=True)
out = Console()

KEY_WARNING = (
    "This archive holds the platform's ENCRYPTION KEYS and signing secret.\n"
    "Anyone who has it can decrypt every environment variable, token and credential stored "
    "in devpush.\n"
    "Keep it encrypted (e.g. `gpg -c`, `age`) and off this server, and delete copies you "
    "no longer need."
)


class RichProgress:
    """A spinner per long step on stderr, then a tick with how long it took."""

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        started = time.monotonic()
        with err.status(f"{message}…"):
            yield
        err.print(f"[green]✓[/green] {message} [dim]({time.monotonic() - started:.1f}s)[/dim]")


def _fail(exc: DevpushError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
    return typer.Exit(NO_PLATFORM if isinstance(exc, ServiceUnavailable) else 1)


def backup(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Archive path (default: <data dir>/backups/devpush-backup-<time>.tar.gz)",
        ),
    ] = None,
) -> None:
    """Write the database, keys, Traefik files and push-remote repositories to one archive."""
    from devpush.backup import service
    from devpush.embedded.private import set_private_umask

    set_private_umask()
    require_platform(get_settings())
    try:
        path = service.backup(get_settings(), output, RichProgress())
    except DevpushError as exc:
        raise _fail(exc) from None
    err.print(Panel(KEY_WARNING, title="WARNING: SECRET KEYS INSIDE", border_style="bold red"))
    out.print(f"backup written to {path} ({path.stat().st_size} bytes, mode 0600)")


def restore(
    archive: Annotated[Path, typer.Argument(help="A file written by `devpush backup`")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a database that already holds projects or teams"),
    ] = False,
) -> None:
    """Restore a backup onto this (fresh) platform and bring its deployments back up."""
    from devpush.backup import service
    from devpush.embedded.private import set_private_umask

    set_private_umask()  # restored repositories and keys are private like the rest
    require_platform(get_settings())
    try:
        result = service.restore(get_settings(), archive, force=force, progress=RichProgress())
    except DevpushError as exc:
        raise _fail(exc) from None
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}")
    manifest = result.manifest
    out.print(
        f"restored the backup of {manifest.created_at} (devpush {manifest.devpush_version}, "
        f"schema {manifest.alembic_revision})"
    )
    out.print(
        f"redeploying {len(result.redeployed)} deployments from their commits: "
        + (", ".join(d[:7] for d in result.redeployed) or "none")
    )
    for reason in result.skipped:
        out.print(f"[yellow]not redeployed:[/yellow] {reason}")


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
