"""Session, projects and deployments: `devpush login|whoami|deploy`, `devpush projects ...` and
`devpush deployments ...`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.markup import escape

from devpush.client import config
from devpush.client.api import EXIT_FAILED, Api
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

projects_app = typer.Typer(help="Projects.", no_args_is_help=True)
deployments_app = typer.Typer(help="Deployments.", no_args_is_help=True)


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


NO_COPY = {"environment": "-", "environment_id": "", "used_bytes": 0, "size_mb": None}


@projects_app.command("volumes")
@handle
def projects_volumes(
    project: Annotated[str, typer.Argument(help="Project id or name")], as_json: JsonOpt = False
) -> None:
    """The project's volumes and each environment's copy, with the space it uses."""
    client = api()
    data = resolve_project(client, project)
    found = client.get(f"/projects/{data['id']}/volumes")
    rows = [
        {
            "volume": v["name"],
            "mount_path": v["mount_path"] or "(not declared)",
            "environment": c["environment"] or c["environment_id"],
            "used_mib": f"{c['used_bytes'] / 2**20:.1f}",
            "size_mib": c["size_mb"] or v["size_mb"] or "",
        }
        for v in found
        for c in v["copies"] or [NO_COPY]
    ]
    emit(found, as_json, lambda _: table(rows, list(rows[0]) if rows else ["volume"]))


@projects_app.command("delete")
@handle
def projects_delete(
    project: Annotated[str, typer.Argument(help="Project id or name")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    delete_volumes: Annotated[
        bool,
        typer.Option(
            "--delete-volumes", help="Also delete the data in its volumes and its databases"
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    client = api()
    data = resolve_project(client, project)
    held = [f"volume {v['name']}" for v in client.get(f"/projects/{data['id']}/volumes")]
    held += [f"database {d['name']}" for d in client.get(f"/projects/{data['id']}/databases")]
    if held and not delete_volumes:
        err.print(
            f"{data['name']} keeps data in {', '.join(held)}. Back it up (devpush backup), "
            "then delete with --delete-volumes."
        )
        raise typer.Exit(1)
    if not yes:
        also = f" and the data in {', '.join(held)}" if held else ""
        typer.confirm(f"Delete {data['name']}, all its deployments{also}?", abort=True)
    client.request(
        "DELETE", f"/projects/{data['id']}", params={"delete_volumes": str(delete_volumes).lower()}
    )
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
