"""The client side of the `devpush` command: it talks to a platform over the API with a token.

    devpush login --url URL [--token T]      devpush whoami
    devpush projects list|create|show|delete devpush deploy [--project P] [--branch B] [--wait]
    devpush deployments list|show|cancel|rollback|promote|redeploy
    devpush logs [--project P] [--deployment D] [-f] [--since 1h] [-q TEXT]
    devpush env list|set K=V [--env E] [--secret [--previews]]|unset K
    devpush domains list|add|verify|remove   devpush tokens create|list|revoke

Every command takes --json for machine-readable output. Errors are one line with a hint; the
exit codes are listed in client/api.py and the README.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from devpush.client import config
from devpush.client.api import EXIT_AUTH, EXIT_FAILED, EXIT_USAGE, Api, ClientError

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
ProjectOpt = Annotated[
    str | None,
    typer.Option("--project", "-p", help="Project id or name (default: $DEVPUSH_PROJECT)"),
]

projects_app = typer.Typer(help="Projects.", no_args_is_help=True)
deployments_app = typer.Typer(help="Deployments.", no_args_is_help=True)
env_app = typer.Typer(help="Environment variables.", no_args_is_help=True)
domains_app = typer.Typer(help="Custom domains.", no_args_is_help=True)
tokens_app = typer.Typer(help="Your API tokens.", no_args_is_help=True)


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
    t = Table(*columns)
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


# ---- session ------------------------------------------------------------------------------
@handle
def login(
    url: Annotated[str, typer.Option("--url", help="The platform's URL")],
    token: Annotated[str | None, typer.Option("--token", help="An API token")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store the platform URL and a token (mode 0600)."""
    token = token or typer.prompt("API token", hide_input=True)
    credentials = config.Credentials(url=url.rstrip("/"), token=token.strip())
    user = Api(credentials).get("/user")
    path = config.save(credentials)
    emit(
        {"user": user, "config": str(path)},
        as_json,
        lambda _: out.print(f"Logged in to {url} as {user['email']} (saved to {path})"),
    )


@handle
def whoami(as_json: JsonOpt = False) -> None:
    """Show who the token belongs to, and its teams."""
    client = api()
    data = {"user": client.get("/user"), "teams": client.get("/teams")}
    emit(
        data,
        as_json,
        lambda d: out.print(
            f"{d['user']['email']} on {client.credentials.url} — teams: "
            + ", ".join(f"{t['slug']} ({t['role']})" for t in d["teams"])
        ),
    )


# ---- projects -----------------------------------------------------------------------------
@projects_app.command("list")
@handle
def projects_list(
    team: Annotated[str | None, typer.Option(help="Team slug")] = None, as_json: JsonOpt = False
) -> None:
    client = api()
    teams = [team] if team else [t["slug"] for t in client.get("/teams")]
    rows = [p for slug in teams for p in client.get(f"/teams/{slug}/projects")]
    emit(rows, as_json, lambda r: table(r, ["name", "id", "repo_url", "production_branch", "url"]))


@projects_app.command("create")
@handle
def projects_create(
    name: str,
    repo: Annotated[str | None, typer.Option(help="git URL (https://, ssh://, file://)")] = None,
    team: Annotated[str | None, typer.Option(help="Team slug (default: your first team)")] = None,
    branch: Annotated[str, typer.Option(help="Production branch")] = "main",
    start: Annotated[str | None, typer.Option(help="Start command")] = None,
    build: Annotated[str | None, typer.Option(help="Build command")] = None,
    port: Annotated[int | None, typer.Option(help="Port the app listens on")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a project (empty commands are detected from the repository)."""
    client = api()
    team = team or client.get("/teams")[0]["slug"]
    body = {
        "name": name,
        "repo_url": repo,
        "production_branch": branch,
        "start_command": start,
        "build_command": build,
        "port": port,
    }
    project = client.post(f"/teams/{team}/projects", {k: v for k, v in body.items() if v})
    emit(project, as_json, lambda p: out.print(f"Created {p['name']} ({p['id']}): {p['url']}"))


@projects_app.command("show")
@handle
def projects_show(
    project: Annotated[str, typer.Argument(help="Project id or name")], as_json: JsonOpt = False
) -> None:
    data = resolve_project(api(), project)
    emit(data, as_json, lambda p: out.print_json(json.dumps(p, default=str)))


@projects_app.command("delete")
@handle
def projects_delete(
    project: Annotated[str, typer.Argument(help="Project id or name")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    data = resolve_project(client, project)
    if not yes:
        typer.confirm(f"Delete {data['name']} and all its deployments?", abort=True)
    client.request("DELETE", f"/projects/{data['id']}")
    emit({"deleted": data["id"]}, as_json, lambda _: out.print(f"Deleting {data['name']}"))


# ---- deployments --------------------------------------------------------------------------
PHASES = ["prepare", "deploy", "finalize", "completed"]


def follow_deployment(client: Api, deployment_id: str, *, show_logs: bool = True) -> dict[str, Any]:
    """Show phases and build lines until the deployment concludes; return the final row."""
    status = "prepare"
    with out.status(f"[bold]{deployment_id[:7]}[/bold] prepare") as spinner:
        for kind, data in client.events(f"/deployments/{deployment_id}/events"):
            if kind == "status":
                status = data.get("status", status)
                spinner.update(f"[bold]{deployment_id[:7]}[/bold] {status}")
                if status == "completed":
                    break
            elif kind == "end":
                break
            elif kind == "log" and show_logs and data.get("phase") != "runtime":
                message = escape(str(data.get("message", "")))
                out.print(f"[dim]{data.get('phase', ''):>10}[/dim] {message}", highlight=False)
    return dict(client.get(f"/deployments/{deployment_id}"))


def conclude(deployment: dict[str, Any], as_json: bool) -> None:
    def render(d: dict[str, Any]) -> None:
        if d["conclusion"] == "succeeded":
            out.print(
                f"[green]Ready[/green] {d['urls'].get('environment') or d['urls']['deployment']}"
            )
        else:
            err.print(f"[red]{d['conclusion']}[/red]: {escape(d.get('error') or '')}")

    emit(deployment, as_json, render)
    if deployment["conclusion"] != "succeeded":
        raise typer.Exit(EXIT_FAILED)


@handle
def deploy(
    project: ProjectOpt = None,
    branch: Annotated[
        str | None, typer.Option("--branch", "-b", help="Default: production")
    ] = None,
    commit: Annotated[str | None, typer.Option("--commit", help="A commit SHA")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it concludes")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Deploy a branch (or one commit of it)."""
    client = api()
    data = resolve_project(client, project)
    body = {k: v for k, v in {"branch": branch, "commit_sha": commit}.items() if v}
    key = os.environ.get("DEVPUSH_IDEMPOTENCY_KEY")
    headers = {"Idempotency-Key": key} if key else {}
    deployment = client.post(f"/projects/{data['id']}/deployments", body, **headers)
    if not wait:
        emit(
            deployment,
            as_json,
            lambda d: out.print(f"Deployment {d['id']} queued: {d['urls']['deployment']}"),
        )
        return
    if not as_json:
        out.print(
            f"Deploying {data['name']} {deployment['branch']} → {deployment['urls']['deployment']}"
        )
    conclude(follow_deployment(client, deployment["id"], show_logs=not as_json), as_json)


@deployments_app.command("list")
@handle
def deployments_list(
    project: ProjectOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    data = resolve_project(client, project)
    page = client.get(f"/projects/{data['id']}/deployments", limit=limit)
    emit(
        page["items"],
        as_json,
        lambda r: table(r, ["id", "branch", "status", "conclusion", "trigger", "created_at"]),
    )


@deployments_app.command("show")
@handle
def deployments_show(deployment: str, as_json: JsonOpt = False) -> None:
    data = api().get(f"/deployments/{deployment}")
    emit(data, as_json, lambda d: out.print_json(json.dumps(d, default=str)))


def _action(name: str) -> Callable[..., None]:
    @handle
    def command(
        deployment: str,
        as_json: JsonOpt = False,
        wait: Annotated[bool, typer.Option("--wait", help="Follow a redeploy")] = False,
    ) -> None:
        client = api()
        data = client.post(f"/deployments/{deployment}/{name}")
        if name == "redeploy" and wait:
            conclude(follow_deployment(client, data["id"], show_logs=not as_json), as_json)
            return
        emit(
            data,
            as_json,
            lambda d: out.print(f"{name}: {d['id']} is {d['conclusion'] or d['status']}"),
        )

    command.__doc__ = f"{name.capitalize()} a deployment."
    return command


for _name in ("cancel", "rollback", "promote", "redeploy"):
    deployments_app.command(_name)(_action(_name))


# ---- logs ---------------------------------------------------------------------------------
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


# ---- env ----------------------------------------------------------------------------------
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Environment (default: all)")]


@env_app.command("list")
@handle
def env_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    client = api()
    data = resolve_project(client, project)
    emit(
        client.get(f"/projects/{data['id']}/env"),
        as_json,
        lambda r: table(r, ["key", "environment", "secret", "previews", "updated_at"]),
    )


@env_app.command("set")
@handle
def env_set(
    pairs: Annotated[list[str], typer.Argument(help="KEY=VALUE ...")],
    project: ProjectOpt = None,
    environment: EnvOpt = None,
    secret: Annotated[bool, typer.Option("--secret", help="Mask in logs")] = False,
    previews: Annotated[
        bool,
        typer.Option("--previews", help="A project-wide secret also goes to preview deployments"),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    data = resolve_project(client, project)
    results = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ClientError(f"{pair!r} is not KEY=VALUE", None, EXIT_USAGE)
        results.append(
            client.request(
                "PUT",
                f"/projects/{data['id']}/env/{key}",
                params={"environment": environment} if environment else None,
                json={"value": value, "secret": secret, "previews": previews},
            )
        )
    emit(
        results,
        as_json,
        lambda r: out.print("Set " + ", ".join(v["key"] for v in r) + "; redeploy to apply"),
    )


@env_app.command("unset")
@handle
def env_unset(
    key: str, project: ProjectOpt = None, environment: EnvOpt = None, as_json: JsonOpt = False
) -> None:
    client = api()
    data = resolve_project(client, project)
    client.request(
        "DELETE",
        f"/projects/{data['id']}/env/{key}",
        params={"environment": environment} if environment else None,
    )
    emit({"unset": key}, as_json, lambda _: out.print(f"Unset {key}; redeploy to apply"))


# ---- domains ------------------------------------------------------------------------------
@domains_app.command("list")
@handle
def domains_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    client = api()
    data = resolve_project(client, project)
    emit(
        client.get(f"/projects/{data['id']}/domains"),
        as_json,
        lambda r: table(
            r, ["hostname", "id", "kind", "status", "verification_record", "verification_value"]
        ),
    )


@domains_app.command("add")
@handle
def domains_add(
    hostname: str,
    project: ProjectOpt = None,
    environment: Annotated[str, typer.Option("--env", "-e")] = "production",
    redirect_to: Annotated[str | None, typer.Option("--redirect-to")] = None,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    data = resolve_project(client, project)
    body = {
        "hostname": hostname,
        "environment": environment,
        "kind": "redirect" if redirect_to else "route",
        "redirect_to": redirect_to,
    }
    domain = client.post(f"/projects/{data['id']}/domains", body)
    emit(
        domain,
        as_json,
        lambda d: out.print(
            f"Added {d['hostname']} ({d['status']}). Create a TXT record "
            f"{d['verification_record']} = {d['verification_value']}, then `devpush domains verify "
            f"{d['id']}`"
        ),
    )


@domains_app.command("verify")
@handle
def domains_verify(domain_id: str, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    client = api()
    data = resolve_project(client, project)
    domain = client.post(f"/projects/{data['id']}/domains/{domain_id}/verify")
    emit(domain, as_json, lambda d: out.print(f"{d['hostname']}: {d['status']}"))
    if domain["status"] != "verified":
        raise typer.Exit(EXIT_FAILED)


@domains_app.command("remove")
@handle
def domains_remove(domain_id: str, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    client = api()
    data = resolve_project(client, project)
    client.request("DELETE", f"/projects/{data['id']}/domains/{domain_id}")
    emit({"removed": domain_id}, as_json, lambda _: out.print("Removed"))


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


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Client")(login)
    app.command(rich_help_panel="Client")(whoami)
    app.command(rich_help_panel="Client")(deploy)
    app.command(rich_help_panel="Client")(logs)
    for name, sub in (
        ("projects", projects_app),
        ("deployments", deployments_app),
        ("env", env_app),
        ("domains", domains_app),
        ("tokens", tokens_app),
    ):
        app.add_typer(sub, name=name, rich_help_panel="Client")
