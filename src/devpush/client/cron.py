"""`devpush cron list|runs|run`: a project's cron jobs (declared in devpush.toml or its
settings), their runs, and a run now."""

from __future__ import annotations

from typing import Annotated

import typer

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

cron_app = typer.Typer(help="Cron jobs and their runs.", no_args_is_help=True)
EnvironmentOpt = Annotated[
    str | None, typer.Option("--env", "-e", help="Environment name (default: all)")
]


@cron_app.command("list")
@handle
def cron_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Each environment's jobs, with their next and last run."""
    client = api()
    data = resolve_project(client, project)
    jobs = client.get(f"/projects/{data['id']}/cron")
    rows = [{**job, "last": (job.get("last_run") or {}).get("status", "")} for job in jobs]
    emit(
        jobs,
        as_json,
        lambda _: table(
            rows, ["name", "environment", "schedule", "command", "next_run_at", "last"]
        ),
    )


@cron_app.command("runs")
@handle
def cron_runs(
    project: ProjectOpt = None,
    job: Annotated[str | None, typer.Option("--job", help="Only this job's runs")] = None,
    environment: EnvironmentOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The newest runs: status, start, duration and exit code."""
    client = api()
    data = resolve_project(client, project)
    page = client.get(
        f"/projects/{data['id']}/cron/runs", job=job, environment=environment, limit=limit
    )
    emit(
        page["items"],
        as_json,
        lambda r: table(
            r, ["id", "job", "environment", "status", "started_at", "duration", "exit_code"]
        ),
    )


@cron_app.command("run")
@handle
def cron_run(
    job: Annotated[str, typer.Argument(help="The job's name")],
    project: ProjectOpt = None,
    environment: Annotated[
        str, typer.Option("--env", "-e", help="Environment name")
    ] = "production",
    as_json: JsonOpt = False,
) -> None:
    """Run a job now in the environment's live deployment."""
    client = api()
    data = resolve_project(client, project)
    run = client.request(
        "POST", f"/projects/{data['id']}/cron/{job}/run", params={"environment": environment}
    )
    emit(
        run,
        as_json,
        lambda r: out.print(f"Queued {job} in {environment} (run {r['id']}); `devpush cron runs`"),
    )
