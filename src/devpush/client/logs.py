"""`devpush logs`: search a project's logs, or follow a deployment's."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape

from devpush.client.api import EXIT_USAGE, ClientError
from devpush.client.common import JsonOpt, ProjectOpt, api, handle, out, resolve_project


def parse_since(value: str) -> datetime:
    match = re.fullmatch(r"(\d+)([smhd])", value.strip())
    if not match:
        raise ClientError(
            f"--since {value!r} is not a duration", "use e.g. 30m, 2h or 1d", EXIT_USAGE
        )
    amount, unit = int(match.group(1)), match.group(2)
    seconds = amount * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return datetime.now(UTC) - timedelta(seconds=seconds)


def print_line(line: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(line, default=str))
        return
    out.print(
        f"[dim]{str(line.get('ts', ''))[11:23]} {line.get('phase', ''):>8}[/dim] "
        f"{escape(str(line.get('message', '')))}",
        highlight=False,
    )


@handle
def logs(
    project: ProjectOpt = None,
    deployment: Annotated[str | None, typer.Option("--deployment", "-d")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming")] = False,
    since: Annotated[str | None, typer.Option(help="How far back, e.g. 1h")] = None,
    query: Annotated[str | None, typer.Option("--query", "-q", help="Keyword or /regex/")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search a project's logs, or follow a deployment's."""
    client = api()
    if follow:
        if deployment is None:
            data = resolve_project(client, project)
            items = client.get(f"/projects/{data['id']}/deployments", limit=1)["items"]
            if not items:
                raise ClientError("this project has no deployments yet", None, 4)
            deployment = items[0]["id"]
        for kind, line in client.events(f"/deployments/{deployment}/events"):
            if kind == "end":
                break
            if kind == "log" and (not query or query.lower() in line.get("message", "").lower()):
                print_line(line, as_json)
        return
    data = resolve_project(client, project)
    params = {
        "q": query,
        "deployment": deployment,
        "limit": 200,
        "since": parse_since(since).isoformat() if since else None,
    }
    page = client.get(f"/projects/{data['id']}/logs", **params)
    for line in reversed(page["items"]):
        print_line(line, as_json)
