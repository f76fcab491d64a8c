"""The CLI side of compose mode (DEVPUSH_MODE=compose): `start|stop|restart|status|update`
with `--components`, and `backup|restore` run inside the app container. Only parses, calls
`devpush.compose.service`/`update` and prints."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from devpush.compose.engine import ComposeError
from devpush.compose.service import COMPONENTS, ComponentState, ComposeStack
from devpush.console import err, out, split_components
from devpush.console import fail as _fail
from devpush.settings import get_settings


def parse_components(value: str | None, default: tuple[str, ...] = COMPONENTS) -> list[str]:
    return split_components(value, COMPONENTS, default)


def _stack() -> ComposeStack:
    try:
        return ComposeStack(get_settings())
    except ComposeError as exc:
        raise _fail(exc.message) from None


def _say(message: str) -> None:
    err.print(f"[dim]·[/dim] {message}", highlight=False)


def _bad(states: list[ComponentState], expect: str | None) -> bool:
    if expect == "stopped":
        return any(s.state == "running" for s in states)
    return any(s.state != "running" or s.health != "healthy" for s in states)


def _show(stack: ComposeStack, names: list[str], expect: str | None = None) -> None:
    """Print the components' states. With `expect` (after an operation), ask again for up to
    a minute before failing: one healthcheck run can fail on a busy machine."""
    states = stack.status(names)
    deadline = time.monotonic() + 60
    while expect and _bad(states, expect) and time.monotonic() < deadline:
        time.sleep(3)
        states = stack.status(names)
    table = Table("component", "state", "health", "service", "container")
    for s in states:
        table.add_row(s.component, s.state, s.health, s.service, s.container)
    out.print(table)
    if expect == "running" and _bad(states, expect):
        raise _fail("some components are not running and healthy", "see `devpush status`")
    if expect == "stopped" and _bad(states, expect):
        raise _fail("some components are still running")
    if expect is None and _bad(states, expect):
        raise typer.Exit(1)


def _act(action: str, names: list[str], expect: str) -> None:
    """Run the stack's start/stop/restart on `names`, then show them in the expected state."""
    stack = _stack()
    try:
        getattr(stack, action)(names, say=_say)
    except ComposeError as exc:
        raise _fail(exc.message) from None
    _show(stack, names, expect)


def start(components: str) -> None:
    _act("start", parse_components(components), "running")


def stop(components: str) -> None:
    _act("stop", parse_components(components), "stopped")


def restart(components: str) -> None:
    names = parse_components(components, default=("app", "worker", "monitor", "traefik"))
    _act("restart", names, "running")


def status(components: str) -> None:
    stack = _stack()
    try:
        _show(stack, parse_components(components))
    except ComposeError as exc:
        raise _fail(exc.message) from None
    # The upgrade steps, from the database the app container reaches (`devpush upgrades`).
    if any(s.state == "running" for s in stack.status(["app"])):
        argv = stack.compose.argv("exec", "-T", stack.service("app"), "devpush", "upgrades")
        subprocess.run(argv, check=False)


def update(
    components: Annotated[
        str,
        typer.Option(
            "--components", "-c", help="Comma-separated components to update (default: app)"
        ),
    ] = "",
    all_: Annotated[
        bool, typer.Option("--all", help="app, worker, monitor and socket-proxy")
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Also rebuild the runner images (newest Node.js/npm/uv of their lines) and "
            "update every platform component",
        ),
    ] = False,
) -> None:
    """Migrate and run the pending upgrade steps, then swap app (and worker) blue-green under
    compose, or restart app, worker and monitor under `devpush up`."""
    from devpush.compose.update import update as run_update
    from devpush.upgrades.commands import rebuild_runner_images, update_embedded

    if get_settings().mode != "compose":
        if components or all_:
            raise _fail("--components and --all are for compose mode; `devpush up` updates all")
        return update_embedded(full)
    if all_ and components:
        raise _fail("give either --components or --all")
    default = ("app", "worker", "monitor", "socket-proxy") if all_ or full else ("app",)
    names = parse_components(components or None, default=default)
    stack = _stack()
    if full:
        rebuild_runner_images(stack.settings)
    try:
        colours = run_update(stack, names, say=_say)
    except ComposeError as exc:
        raise _fail(exc.message) from None
    out.print(
        f"updated {', '.join(names)}; active: " + ", ".join(f"{k}-{v}" for k, v in colours.items())
    )
    _show(stack, names, "running")


def container_path(stack: ComposeStack, path: Path) -> str:
    """The app container's view (/data/...) of a host path under the data dir."""
    host = stack.settings.host_data_dir.resolve()
    try:
        relative = path.resolve().relative_to(host)
    except ValueError:
        raise _fail(
            f"{path} is outside the data dir {host}, which is all the app container sees",
            f"copy the archive into {host}/backups/ and use that path",
        ) from None
    return str(Path("/data") / relative)


def in_app(stack: ComposeStack, args: list[str]) -> None:
    """Run `devpush ARGS` inside the running app container."""
    argv = stack.compose.argv("exec", "-T", stack.service("app"), "devpush", *args)
    raise typer.Exit(subprocess.run(argv, check=False).returncode)


def _host_archive(stack: ComposeStack) -> Path:
    """Where a backup lands on this host (the app container writes it under /data)."""
    from devpush.backup.service import default_output

    return stack.settings.host_data_dir / "backups" / default_output(stack.settings).name


def backup(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Archive path under the data dir (default: <data dir>/backups/)"
        ),
    ] = None,
) -> None:
    """Compose mode: `devpush backup` inside the app container (archives land in the data dir)."""
    stack = _stack()
    archive = output or _host_archive(stack)
    try:
        in_app(stack, ["backup", "--output", container_path(stack, archive)])
    except typer.Exit as done:
        if done.exit_code == 0:
            out.print(f"on this host: {archive}", highlight=False)
        raise


def restore(
    archive: Annotated[Path, typer.Argument(help="A backup archive inside the data dir")],
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty database")] = False,
) -> None:
    """Compose mode: `devpush restore` inside the app container."""
    stack = _stack()
    in_app(stack, ["restore", container_path(stack, archive)] + (["--force"] if force else []))


ACTIONS = {"start": start, "stop": stop, "restart": restart, "status": status}

# Commands that need the database, which only the containers reach: run them in the app.
IN_APP = ("user", "token", "keys", "upgrades")


def forward_in_app(argv: list[str]) -> None:
    """`devpush user create ...` on the host becomes the same command in the app container."""
    try:
        in_app(_stack(), argv)
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None


def register(app: typer.Typer) -> None:
    app.command("update")(update)


def register_backup(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
