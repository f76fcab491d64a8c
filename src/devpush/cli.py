"""The `devpush` command: the embedded platform (`up`), one component each (`app`, `worker`,
`monitor`), operations (`migrate`, `start|stop|restart|status`, `keys rotate`) and accounts
(`user`, `token`). Commands only parse arguments and call services."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer

from devpush import components
from devpush.console import NO_PLATFORM, PLATFORM_HINT, err, fail, out, require_platform
from devpush.embedded import control
from devpush.errors import DevpushError, ServiceUnavailable
from devpush.settings import Settings, get_settings

app = typer.Typer(
    help="devpush: git push to a running web app on your own server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(help="Manage users.", no_args_is_help=True)
token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage encryption keys.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")

T = TypeVar("T")

ComponentsOpt = Annotated[
    str,
    typer.Option(
        "--components",
        "-c",
        help="Comma-separated. `devpush up`: app,worker,monitor,proxy,db,redis; compose mode: "
        "app,worker,monitor,postgres,redis,traefik,socket-proxy",
    ),
]


def run_db(fn: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Run an async function against the platform's database, with one-line errors (an
    unreachable database is main()'s to answer)."""
    from devpush.embedded.private import set_private_umask

    set_private_umask()
    settings = get_settings()
    require_platform(settings)
    try:
        return asyncio.run(fn(settings))
    except DevpushError as exc:
        raise fail(exc.message) from None


# ---- the embedded platform ---------------------------------------------------------------
@app.command()
def up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background")] = False,
    background: Annotated[bool, typer.Option("--background", hidden=True)] = False,
) -> None:
    """Start everything on this machine: PostgreSQL, Redis, Traefik, app, worker, monitor."""
    from devpush.embedded.launcher import Supervisor
    from devpush.embedded.private import make_private_dir, set_private_umask
    from devpush.runstate import read_state

    set_private_umask()
    settings = get_settings()
    if detach:
        make_private_dir(settings.data_path)
        log = settings.data_path / "logs" / "devpush.log"
        log.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            # --background: the supervisor writes no sign-in link to its log; this terminal
            # gets it below.
            proc = subprocess.Popen(
                [sys.executable, "-m", "devpush", "up", "--background"],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            state = read_state(settings)
            if state and state.supervisor_pid == proc.pid and "monitor" in state.children:
                first = run_db(_first_admin_link)
                out.print(f"devpush is running in the background (pid {proc.pid}); logs: {log}")
                out.print(f"Dashboard: {settings.app_url}")
                who = settings.admin_email
                out.print(f"Sign in as {who} (one-time link): {first}", soft_wrap=True)
                return
            if proc.poll() is not None:
                raise fail(f"devpush up exited with code {proc.returncode}", f"see {log}")
            time.sleep(0.3)
        raise fail("devpush did not start within 180s", f"see {log}")
    supervisor = Supervisor(settings)
    link: str | None = None
    try:
        supervisor.start()
        if not background:
            link = run_db(_first_admin_link)
    except (DevpushError, subprocess.SubprocessError) as exc:
        supervisor.stop()
        message = exc.message if isinstance(exc, DevpushError) else str(exc)
        raise fail(message) from None
    except BaseException:
        supervisor.stop()
        raise
    out.print()
    out.print(f"[bold green]devpush is up.[/bold green] Dashboard: {settings.app_url}")
    if link:
        out.print(f"Sign in as {settings.admin_email} (one-time link): {link}", soft_wrap=True)
    else:
        out.print(
            f"Sign in as {settings.admin_email}: run `devpush user link {settings.admin_email}`"
        )
    out.print("Press Ctrl-C to stop.\n")
    raise typer.Exit(supervisor.wait())


async def _first_admin_link(settings: Settings) -> str:
    from devpush.operations import ensure_admin, sign_in_link

    user_id = await ensure_admin(settings, settings.admin_email)
    return await sign_in_link(settings, user_id)


@app.command("app")
def run_app() -> None:
    """Run the web app (API, pages, webhooks, SSE)."""
    components.run_app()


@app.command("worker")
def run_worker(
    check: Annotated[bool, typer.Option("--check", help="Exit non-zero if unhealthy")] = False,
) -> None:
    """Run the arq worker that executes deployment and cleanup jobs."""
    if not check:
        components.run_worker()
        return
    from arq.worker import async_check_health

    from devpush.platform import arq_redis_settings
    from devpush.workers.jobs import health_check_key

    settings = get_settings()
    require_platform(settings, "redis")
    key = health_check_key(settings)
    redis_settings = arq_redis_settings(settings)
    redis_settings.conn_retries = 0  # a healthcheck answers now; its caller retries
    code = asyncio.run(async_check_health(redis_settings, health_check_key=key))
    if code:
        err.print(f"worker unhealthy: no recent health check in Redis ({key})", soft_wrap=True)
    raise typer.Exit(code)


@app.command("monitor")
def run_monitor_cmd(
    check: Annotated[bool, typer.Option("--check", help="Exit non-zero if unhealthy")] = False,
) -> None:
    """Run the monitor: readiness probes, exits, timeouts, log shipping, reconciliation."""
    if not check:
        components.run_monitor()
        return
    from devpush.workers.liveness import STALE_AFTER, age, heartbeat_path

    path = heartbeat_path(get_settings())
    seconds = age(path)
    if seconds is None or seconds > STALE_AFTER:
        since = "never" if seconds is None else f"{seconds:.0f}s ago"
        err.print(
            f"monitor unhealthy: its heartbeat {path} was last refreshed {since}", soft_wrap=True
        )
        raise typer.Exit(1)


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the newest."""
    from devpush.embedded.private import set_private_umask
    from devpush.runstate import database_url
    from devpush.upgrades.migrate import upgrade

    set_private_umask()
    settings = get_settings()
    require_platform(settings)
    try:
        upgrade(database_url(settings), say=lambda line: out.print(line, highlight=False))
    except DevpushError as exc:
        raise fail(exc.message, "fix the cause and run `devpush migrate` again") from None
    out.print("database is up to date")


# ---- component-scoped operations on a platform started with `up --detach` ---------------
def _compose_mode() -> bool:
    return get_settings().mode == "compose"


def _compose(action: str, components: str) -> None:
    """DEVPUSH_MODE=compose: the same commands drive the compose stack (devpush.compose)."""
    from devpush.compose import commands

    commands.ACTIONS[action](components)


@app.command()
def start(components: ComponentsOpt = "") -> None:
    """Start components of a running platform (or the whole platform, detached)."""
    if _compose_mode():
        return _compose("start", components)
    settings = get_settings()
    if control.running(settings) is None:
        if components:
            hint = "`devpush start` without --components starts all of it"
            raise control.not_running(settings, hint)
        up(detach=True)
        return
    control.control("start", components or None)
    control.wait_and_show(components, "running")


@app.command()
def stop(components: ComponentsOpt = "") -> None:
    """Stop components, or the whole platform when none are given."""
    import signal

    if _compose_mode():
        return _compose("stop", components)
    settings = get_settings()
    state = control.running(settings)
    if state is None or not state.supervisor_pid:
        raise control.not_running(settings)
    if not components:
        os.kill(state.supervisor_pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and control.alive(state.supervisor_pid):
            time.sleep(0.2)
        out.print("devpush stopped")
        return
    control.control("stop", components)
    control.wait_and_show(components, "stopped")


@app.command()
def restart(components: ComponentsOpt = "") -> None:
    """Restart components of a running platform."""
    if _compose_mode():
        return _compose("restart", components)
    components = components or "app,worker,monitor,proxy"
    control.control("restart", components)
    control.wait_and_show(components, "running")


@app.command()
def status(components: ComponentsOpt = "") -> None:
    """Show which components run, with their pids. Exits 1 if any asked for is down, 3 if
    no platform runs from this data directory."""
    if _compose_mode():
        return _compose("status", components)
    names = control.component_names(components or None)
    settings = get_settings()
    if control.running(settings) is None:
        raise control.not_running(settings)
    from devpush.upgrades.commands import print_upgrades

    states = control.component_states(names)
    control.print_states(states)
    print_upgrades(settings)
    raise typer.Exit(1 if "stopped" in states.values() else 0)


@app.command()
def plan(
    path: Annotated[str, typer.Argument(help="The source tree")] = ".",
    runtime: Annotated[
        str | None, typer.Option("--runtime", help="process or docker (default: the platform's)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON")] = False,
) -> None:
    """Show the build plan of a source tree: what is detected and which commands would run,
    without deploying."""
    import json
    from pathlib import Path

    from devpush.builds import PlanError
    from devpush.deployments.flows import make_plan
    from devpush.deployments.service import default_runtime
    from devpush.projects import repo_config
    from devpush.runtime import Runtimes

    root = Path(path)
    if not root.is_dir():
        raise fail(f"{path} is not a directory", "give the path of an app's source tree")
    settings = get_settings()
    chosen = runtime or default_runtime(settings)

    async def run() -> list[str] | dict[str, Any]:
        repo = repo_config.load(root)
        runtimes = Runtimes(settings)
        try:

            async def say(line: str) -> None:
                err.print(line, highlight=False, markup=False)

            found = await make_plan(runtimes, chosen, root, repo.overrides if repo else {}, say)
        finally:
            await runtimes.close()
        return found.to_json() if as_json else found.lines()

    try:
        result = asyncio.run(run())
    except PlanError as exc:
        raise fail(exc.message) from None
    except DevpushError as exc:
        raise fail(exc.message, "check DEVPUSH_RUNTIME and DEVPUSH_DOCKER_HOST") from None
    if isinstance(result, dict):
        out.print_json(json.dumps(result))
    else:
        for line in result:
            out.print(line, highlight=False, markup=False, soft_wrap=True)


# ---- accounts ---------------------------------------------------------------------------
@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option("--email", help="The user's email")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user a platform admin")] = False,
) -> None:
    """Create a user (with a personal team)."""
    from devpush.operations import create_account

    async def create(settings: Settings) -> str:
        return await create_account(settings, email, is_admin=admin)

    user_id = run_db(create)
    out.print(f"created user {email} ({user_id})")


@user_app.command("link")
def user_link(
    email: Annotated[
        str | None, typer.Argument(help="The user's email", show_default=False)
    ] = None,
    email_option: Annotated[
        str | None, typer.Option("--email", help="The same, as an option", show_default=False)
    ] = None,
) -> None:
    """Print a fresh one-time sign-in link for an existing user (it works once, for 30
    minutes). This is how to sign in without a mail server: the link is shown only here,
    never logged. Exit codes: 1 no such user, 2 bad usage, 3 no platform to reach."""
    from devpush.operations import sign_in_link_for_email

    if (email and email_option and email != email_option) or not (email or email_option):
        raise fail("give the user's email once: `devpush user link EMAIL`", code=2)
    address = str(email or email_option)

    async def link(settings: Settings) -> str:
        return await sign_in_link_for_email(settings, address)

    typer.echo(run_db(link))


@token_app.command("create")
def token_create(
    email: Annotated[str, typer.Option("--email", help="The token's user")],
    name: Annotated[str, typer.Option("--name", help="A name to recognise it by")] = "cli",
    expires_days: Annotated[int | None, typer.Option("--expires-days", min=1)] = None,
    scopes: Annotated[
        str, typer.Option("--scopes", help="read,deploy,admin")
    ] = "read,deploy,admin",
) -> None:
    """Create an API token and print it (once) alone on stdout."""
    from devpush.operations import create_token_for_email

    async def create(settings: Settings) -> str:
        return await create_token_for_email(
            settings, email, name=name, scopes=scopes.split(","), expires_days=expires_days
        )

    token = run_db(create)
    typer.echo(token)


@app.command("settings")
def settings_table() -> None:
    """Print every DEVPUSH_* setting with its default and meaning (the README's table)."""
    from devpush.settings import Settings

    typer.echo("| variable | default | meaning |\n| --- | --- | --- |")
    for name, field in Settings.model_fields.items():
        value = field.get_default(call_default_factory=True)
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        default = "" if value is None else f"`{shown}`"
        typer.echo(f"| `DEVPUSH_{name.upper()}` | {default} | {field.description} |")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new encryption key, for DEVPUSH_ENCRYPTION_KEYS; nothing is stored."""
    from cryptography.fernet import Fernet

    typer.echo(Fernet.generate_key().decode())


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every secret under the newest key. Keys in the data directory: a new key is
    added first. Keys in DEVPUSH_ENCRYPTION_KEYS: its first key is the newest; when every
    secret is already under it, exit 1 with how to add one."""
    from devpush.crypto import key_file
    from devpush.operations import rotate_keys

    settings = get_settings()
    count = run_db(rotate_keys)
    if not settings.encryption_keys:
        out.print(
            f"added a new key first in {key_file(settings)} and re-encrypted {count} values "
            "under it; the old keys are kept for reading. Restart the platform "
            "(`devpush restart`) so that its running components read the new key",
            soft_wrap=True,
        )
    elif count:
        out.print(
            f"re-encrypted {count} values under the first key of DEVPUSH_ENCRYPTION_KEYS",
            soft_wrap=True,
        )
    else:
        raise fail(
            "nothing rotated: every secret is already under the first key of "
            "DEVPUSH_ENCRYPTION_KEYS, and devpush cannot add a key to the environment",
            "print a key with `devpush keys generate`, put it first in DEVPUSH_ENCRYPTION_KEYS "
            "(keep the old keys after it), restart the platform, then run `devpush keys rotate`",
        )


_registered = False


def full_app() -> typer.Typer:
    """The whole command: this module's commands, the client's, and the mode's others."""
    global _registered
    if _registered:
        return app
    _registered = True
    from devpush.backup.commands import register as register_backup
    from devpush.client.commands import register
    from devpush.compose import commands as compose_commands
    from devpush.socketproxy.commands import register as register_socket_proxy
    from devpush.upgrades.commands import upgrades

    register(app)
    compose_commands.register(app)  # `update`
    app.command("upgrades")(upgrades)
    register_socket_proxy(app)
    if _compose_mode():  # backup/restore, users, tokens and keys run inside the app container
        compose_commands.register_backup(app)
    else:
        register_backup(app)
    return app


def main() -> None:
    from devpush import unreachable
    from devpush.compose import commands as compose_commands

    full_app()
    if _compose_mode() and len(sys.argv) >= 2 and sys.argv[1] in compose_commands.IN_APP:
        compose_commands.forward_in_app(sys.argv[1:])
    try:
        app()
    except DevpushError as exc:  # one line for what a command left uncaught
        fail(exc.message)
        sys.exit(NO_PLATFORM if isinstance(exc, ServiceUnavailable) else 1)
    except Exception as exc:
        message = unreachable.describe(get_settings(), exc)
        if message is None:
            raise  # a bug: keep its traceback
        fail(message, PLATFORM_HINT)
        sys.exit(NO_PLATFORM)
