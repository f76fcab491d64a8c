"""A project's managed databases: `devpush databases add|list|remove` and their backups,
`devpush databases backup|backups|restore`. A database is named by its name in the project
(--project, or $DEVPUSH_PROJECT) or by its id."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape

from devpush.client.api import EXIT_FAILED, EXIT_NOT_FOUND, Api, ClientError
from devpush.client.common import (
    JsonOpt,
    ProjectOpt,
    api,
    emit,
    err,
    handle,
    out,
    resolve_project,
    table,
)

databases_app = typer.Typer(
    help="Managed databases (PostgreSQL or SQLite) and their backups.", no_args_is_help=True
)
LONG = 3600.0  # seconds a backup or restore may take before the client stops waiting

DatabaseArg = Annotated[str, typer.Argument(help="Database name (in --project) or id")]
EnvOpt = Annotated[str, typer.Option("--env", "-e", help="Environment name")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Do not ask")]


def _database(client: Api, project: str | None, ref: str) -> dict[str, Any]:
    """The database named `ref` in the project, or the one whose id it is."""
    if project or os.environ.get("DEVPUSH_PROJECT"):
        data = resolve_project(client, project)
        for database in client.get(f"/projects/{data['id']}/databases"):
            if ref in (database["id"], database["name"]):
                return dict(database)
        raise ClientError(
            f"{data['name']} has no database {ref!r}",
            "list them with `devpush databases list`",
            EXIT_NOT_FOUND,
        )
    return dict(client.get(f"/databases/{ref}"))


def _patient(client: Api) -> Api:
    client.http.timeout = httpx.Timeout(LONG, connect=10)
    return client


def _environments(database: dict[str, Any]) -> str:
    return ", ".join(c["environment"] or c["scope"] for c in database["copies"]) or "-"


@databases_app.command("add")
@handle
def databases_add(
    name: Annotated[str, typer.Option("--name", help="a-z, 0-9 and _, starting with a letter")],
    engine: Annotated[str, typer.Option("--engine", help="postgres|sqlite")] = "postgres",
    volume: Annotated[
        str | None, typer.Option("--volume", help="sqlite: the project's volume for the file")
    ] = None,
    previews: Annotated[
        str, typer.Option("--previews", help="none|own: preview branches get their own")
    ] = "none",
    backup_schedule: Annotated[
        str | None, typer.Option("--backup-schedule", help='Cron, UTC, e.g. "0 3 * * *"')
    ] = None,
    retention: Annotated[int, typer.Option("--retention", help="Backups kept per env")] = 7,
    env_var: Annotated[str | None, typer.Option("--env-var", help="Default: DATABASE_URL")] = None,
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    data = resolve_project(client, project)
    body = {
        "engine": engine,
        "name": name,
        "volume": volume,
        "previews": previews,
        "env_var": env_var,
        "backup_schedule": backup_schedule,
        "backup_retention": retention,
    }
    made = client.post(f"/projects/{data['id']}/databases", body)
    emit(
        made,
        as_json,
        lambda d: out.print(
            f"Added {d['name']} ({d['engine']}) as {d['env_var']}; redeploy to use it"
        ),
    )


@databases_app.command("list")
@handle
def databases_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    client = api()
    data = resolve_project(client, project)
    rows = client.get(f"/projects/{data['id']}/databases")
    emit(
        rows,
        as_json,
        lambda r: table(
            [{**d, "environments": _environments(d)} for d in r],
            ["id", "name", "engine", "env_var", "environments", "backup_schedule"],
        ),
    )


@databases_app.command("remove")
@handle
def databases_remove(
    database: DatabaseArg, project: ProjectOpt = None, yes: YesOpt = False, as_json: JsonOpt = False
) -> None:
    """Detach a database: every environment's data and every backup of it is deleted."""
    client = api()
    found = _database(client, project, database)
    if not yes:
        typer.confirm(
            f"Delete {found['name']}, its data in every environment and all its backups?",
            abort=True,
        )
    client.request("DELETE", f"/databases/{found['id']}")
    emit({"removed": found["id"]}, as_json, lambda _: out.print(f"Removed {found['name']}"))


@databases_app.command("backup")
@handle
def databases_backup(
    database: DatabaseArg,
    project: ProjectOpt = None,
    environment: EnvOpt = "production",
    as_json: JsonOpt = False,
) -> None:
    """Back up one environment's copy now; exits 1 when the backup failed."""
    client = _patient(api())
    found = _database(client, project, database)
    made = client.post(f"/databases/{found['id']}/backups", {"environment": environment})

    def render(b: dict[str, Any]) -> None:
        if b["status"] == "succeeded":
            out.print(f"Backed up {found['name']} ({environment}): {b['id']}, {b['size_bytes']} B")
        else:
            err.print(f"[red]Backup failed:[/red] {escape(b['error'] or b['status'])}")

    emit(made, as_json, render)
    if made["status"] != "succeeded":
        raise typer.Exit(EXIT_FAILED)


@databases_app.command("backups")
@handle
def databases_backups(
    database: DatabaseArg,
    project: ProjectOpt = None,
    environment: Annotated[
        str | None, typer.Option("--env", "-e", help="Environment (default: all)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    found = _database(client, project, database)
    rows = client.get(f"/databases/{found['id']}/backups", environment=environment)
    emit(
        rows,
        as_json,
        lambda r: table(
            r, ["id", "environment", "status", "trigger", "size_bytes", "created_at", "error"]
        ),
    )


@databases_app.command("restore")
@handle
def databases_restore(
    database: DatabaseArg,
    backup_id: Annotated[str, typer.Argument(help="A backup id (`devpush databases backups`)")],
    project: ProjectOpt = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Replace an environment's data with a backup, after a restore point of it as it is."""
    client = _patient(api())
    found = _database(client, project, database)
    if not yes:
        typer.confirm(f"Replace {found['name']}'s data with backup {backup_id}?", abort=True)
    point = client.post(f"/databases/{found['id']}/restore", {"backup_id": backup_id})
    emit(
        point,
        as_json,
        lambda p: out.print(
            f"Restored {backup_id}; undo with `devpush databases restore {found['id']} {p['id']}`"
        ),
    )
