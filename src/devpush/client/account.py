"""Account and team commands: `devpush tokens ...` (your API tokens) and
`devpush notifications ...` (a team's notification channels)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from devpush.client.api import EXIT_FAILED, EXIT_USAGE, Api, ClientError
from devpush.client.common import (
    JsonOpt,
    TeamOpt,
    api,
    emit,
    err,
    handle,
    out,
    resolve_project,
    table,
)

tokens_app = typer.Typer(help="Your API tokens.", no_args_is_help=True)
notifications_app = typer.Typer(
    help="Notifications: webhook, Slack, Discord or email, per team.", no_args_is_help=True
)


# ---- tokens -------------------------------------------------------------------------------
@tokens_app.command("create")
@handle
def tokens_create(
    name: Annotated[str, typer.Option(help="A name to recognise it by")] = "cli",
    scopes: Annotated[str, typer.Option(help="read,deploy,admin")] = "read,deploy,admin",
    team: Annotated[str | None, typer.Option(help="Limit it to one team (id)")] = None,
    expires_days: Annotated[int | None, typer.Option("--expires-days", min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    body = {
        "name": name,
        "scopes": scopes.split(","),
        "team_id": team,
        "expires_days": expires_days,
    }
    token = api().post("/tokens", body)
    emit(token, as_json, lambda t: typer.echo(t["token"]))


@tokens_app.command("list")
@handle
def tokens_list(as_json: JsonOpt = False) -> None:
    emit(
        api().get("/tokens"),
        as_json,
        lambda r: table(
            r, ["id", "name", "prefix", "scopes", "team_id", "expires_at", "last_used_at"]
        ),
    )


@tokens_app.command("revoke")
@handle
def tokens_revoke(token_id: str, as_json: JsonOpt = False) -> None:
    api().request("DELETE", f"/tokens/{token_id}")
    emit({"revoked": token_id}, as_json, lambda _: out.print(f"Revoked {token_id}"))


# ---- notifications ------------------------------------------------------------------------
def resolve_team(client: Api, ref: str | None, projects: list[dict[str, Any]]) -> str:
    """The team's slug: --team, else the projects' team, else the caller's only team."""
    teams = client.get("/teams")
    if ref:
        for team in teams:
            if ref in (team["slug"], team["id"]):
                return str(team["slug"])
        raise ClientError(f"no team {ref!r}", "see your teams with `devpush whoami`", 4)
    if projects:
        owners = {p["team_id"] for p in projects}
        if len(owners) > 1:
            raise ClientError("the projects are in different teams", None, EXIT_USAGE)
        return next(str(t["slug"]) for t in teams if t["id"] in owners)
    if len(teams) == 1:
        return str(teams[0]["slug"])
    raise ClientError("which team?", "pass --team SLUG", EXIT_USAGE)


def _channel_row(channel: dict[str, Any]) -> dict[str, Any]:
    return {
        **channel,
        "events": ",".join(channel["events"]),
        "scope": ",".join(channel["projects"] + channel["environments"]) or "all",
    }


@notifications_app.command("add")
@handle
def notifications_add(
    channel: Annotated[str, typer.Option("--channel", "-c", help="webhook|slack|discord|email")],
    events: Annotated[str, typer.Option("--events", help="Comma list, e.g. deployment.failed")],
    url: Annotated[str | None, typer.Option("--url", help="Where to post")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Email channels' address")] = None,
    project: Annotated[
        list[str] | None, typer.Option("--project", "-p", help="Project id or name (repeatable)")
    ] = None,
    environment: Annotated[
        list[str] | None, typer.Option("--environment", "-e", help="Environment (repeatable)")
    ] = None,
    team: TeamOpt = None,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    projects = [resolve_project(client, ref) for ref in project or []]
    slug = resolve_team(client, team, projects)
    body = {
        "channel": channel,
        "url": url,
        "email": email,
        "events": [e.strip() for e in events.split(",") if e.strip()],
        "projects": [p["id"] for p in projects],
        "environments": environment or [],
    }
    made = client.post(f"/teams/{slug}/notifications", {k: v for k, v in body.items() if v})

    def render(c: dict[str, Any]) -> None:
        out.print(f"Added {c['channel']} channel {c['id']} -> {escape(c['target'])}")
        if c.get("secret"):
            out.print("Signing secret (shown only now; verify X-Devpush-Signature with it):")
            typer.echo(c["secret"])

    emit(made, as_json, render)


@notifications_app.command("list")
@handle
def notifications_list(team: TeamOpt = None, as_json: JsonOpt = False) -> None:
    client = api()
    slug = resolve_team(client, team, [])
    emit(
        client.get(f"/teams/{slug}/notifications"),
        as_json,
        lambda r: table(
            [_channel_row(c) for c in r],
            ["id", "channel", "target", "events", "scope", "enabled", "state"],
        ),
    )


@notifications_app.command("remove")
@handle
def notifications_remove(channel_id: str, as_json: JsonOpt = False) -> None:
    api().request("DELETE", f"/notifications/{channel_id}")
    emit({"removed": channel_id}, as_json, lambda _: out.print(f"Removed {channel_id}"))


@notifications_app.command("test")
@handle
def notifications_test(channel_id: str, as_json: JsonOpt = False) -> None:
    """Send a test event now; exits 1 when the receiver did not take it."""
    delivery = api().post(f"/notifications/{channel_id}/test")

    def render(d: dict[str, Any]) -> None:
        if d["status"] == "succeeded":
            out.print(f"Test delivered ({d['id']})")
        else:
            err.print(f"[red]Test not delivered:[/red] {escape(d['last_error'] or d['status'])}")

    emit(delivery, as_json, render)
    if delivery["status"] != "succeeded":
        raise typer.Exit(EXIT_FAILED)
