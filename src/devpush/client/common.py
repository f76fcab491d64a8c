"""What the client commands share: the consoles, the common options, the error handler, the
API client from the stored credentials, JSON-or-table output and finding a project by name."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devpush.client import config
from devpush.client.api import EXIT_AUTH, EXIT_USAGE, Api, ClientError

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project id or name (default: $DEVPUSH_PROJECT)"),
]
TeamOpt = Annotated[
    str | None,
    typer.Option("--team", "-t", help="Team slug (default: the project's, or your only team)"),
]


def handle(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn ClientError into a one-line message, a hint and an exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except ClientError as exc:
            err.print(f"[red]error:[/red] {escape(exc.message)}")
            if exc.hint:
                err.print(f"[dim]hint:[/dim] {escape(exc.hint)}")
            raise typer.Exit(exc.code) from None

    return wrapper


def api() -> Api:
    credentials = config.load()
    if credentials is None:
        raise ClientError(
            "not logged in",
            "run `devpush login --url URL --token TOKEN`, or set DEVPUSH_URL and DEVPUSH_TOKEN",
            EXIT_AUTH,
        )
    return Api(credentials)


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        render(data)


def table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Rows as a table; the `id` column is never cut short, however narrow the terminal, since
    ids are what the other commands take."""
    t = Table()
    for column in columns:
        if column == "id":
            width = max((len(str(row.get(column) or "")) for row in rows), default=2)
            t.add_column(column, no_wrap=True, min_width=width)
        else:
            t.add_column(column)
    for row in rows:
        t.add_row(*(escape(str(row[c])) if row.get(c) is not None else "-" for c in columns))
    out.print(t)


def resolve_project(client: Api, ref: str | None) -> dict[str, Any]:
    ref = ref or os.environ.get("DEVPUSH_PROJECT")
    if not ref:
        raise ClientError(
            "which project?", "pass --project NAME or set DEVPUSH_PROJECT", EXIT_USAGE
        )
    for team in client.get("/teams"):
        for project in client.get(f"/teams/{team['slug']}/projects"):
            if ref in (project["id"], project["name"], project["slug"]):
                return dict(project)
    raise ClientError(
        f"no project {ref!r} in your teams", "list them with `devpush projects list`", 4
    )
