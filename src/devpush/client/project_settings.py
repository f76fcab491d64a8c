"""A project's settings: `devpush env ...` (environment variables) and `devpush domains ...`
(custom domains)."""

from __future__ import annotations

from typing import Annotated

import typer

from devpush.client.api import EXIT_FAILED, EXIT_USAGE, ClientError
from devpush.client.common import (
    JsonOpt,
    ProjectOpt,
    api,
    emit,
    handle,
    out,
    resolve_project,
    table,
)

env_app = typer.Typer(help="Environment variables.", no_args_is_help=True)
domains_app = typer.Typer(help="Custom domains.", no_args_is_help=True)


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
