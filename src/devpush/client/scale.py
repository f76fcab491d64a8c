"""`devpush scale web=N`: an environment's replica count, applied to its live deployment."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from devpush.client.api import EXIT_FAILED, EXIT_USAGE, Api, ClientError
from devpush.client.common import JsonOpt, ProjectOpt, api, emit, err, handle, out, resolve_project

PROCESS_TYPES = ("web",)  # the one process a deployment runs


def parse(formation: str) -> int:
    """`web=3` -> 3, with a clear error for anything else."""
    kind, sep, value = formation.partition("=")
    if not sep or kind not in PROCESS_TYPES or not value.isdigit():
        raise ClientError(
            f"cannot read {formation[:40]!r}",
            "write it as web=N, e.g. `devpush scale web=3` (web is the only process type)",
            EXIT_USAGE,
        )
    return int(value)


@handle
def scale(
    formation: Annotated[str, typer.Argument(help="web=N: how many replicas serve the app")],
    project: ProjectOpt = None,
    environment: Annotated[
        str, typer.Option("--env", "-e", help="Environment name")
    ] = "production",
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until that many serve")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits")] = 300,
    as_json: JsonOpt = False,
) -> None:
    """Run N replicas of the environment's app: its live deployment starts or retires
    replicas without a redeploy, and its next deployments run N."""
    count = parse(formation)
    client = api()
    data = resolve_project(client, project)
    result = client.post(
        f"/projects/{data['id']}/environments/{environment}/scale", {"replicas": count}
    )
    deployment_id = result.get("deployment_id")
    if wait and deployment_id:
        serving = _wait(client, deployment_id, count, timeout, quiet=as_json)
        result = {**result, "serving": serving}
    emit(result, as_json, lambda r: _say(r, environment))


def _wait(client: Api, deployment_id: str, count: int, timeout: float, quiet: bool) -> int:
    deadline = time.monotonic() + timeout
    serving = -1
    while True:
        deployment = client.get(f"/deployments/{deployment_id}")
        if deployment["replicas"] != serving:
            serving = deployment["replicas"]
            if not quiet:
                err.print(f"[dim]{serving} of {count} replicas serving[/dim]")
        if serving == count:
            return serving
        if deployment.get("conclusion") != "succeeded" or time.monotonic() > deadline:
            raise ClientError(
                f"{serving} of {count} replicas serve after {timeout:.0f}s",
                f"see why with `devpush logs --deployment {deployment_id}`",
                EXIT_FAILED,
            )
        time.sleep(1)


def _say(result: dict[str, object], environment: str) -> None:
    replicas = result["replicas"]
    if result.get("deployment_id"):
        out.print(f"{environment}: {replicas} replicas (deployment {result['deployment_id']})")
    else:
        out.print(f"{environment}: {replicas} replicas from its next deployment")
