"""The swarm runtime's service: its spec (Engine API `ServiceSpec`), the image of a built app
made from its build container, and its tasks read as statuses and endpoints."""

from __future__ import annotations

import asyncio
import io
import tarfile
import tempfile
from typing import IO, Any

import aiodocker

from devpush.runtime.base import (
    Endpoint,
    InstanceState,
    InstanceStatus,
    Phase,
    RuntimeSpec,
    entrypoint_env,
)
from devpush.runtime.docker_container import (
    APP_DIR,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_PORT,
    LABEL_PROJECT,
    MIB,
    RUNNER_UID,
    STATE_DIR,
    source_archive,
)

LABEL_BUILD = "devpush.build"  # the build container's id, on the service
LABEL_BUILT = "devpush.built"  # on the service once its tasks run the built app's image
APP_IMAGE = "devpush-app"  # the built apps' repository: devpush-app:<deployment id>
BUILD_NETWORK = "devpush-builds"
TERMINAL = {"complete", "failed", "shutdown", "rejected", "orphaned", "remove"}
STARTING = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
# Swarm's health check: the app answers its health path on $PORT (2xx/3xx), asked with
# whichever interpreter the runner image has.
HEALTH_SCRIPT = (
    'p="${DEVPUSH_HEALTH_PATH:-/}"; '
    "if command -v python3 >/dev/null 2>&1; then "
    "python3 -c 'import os,sys,urllib.request as u; "
    'u.urlopen("http://127.0.0.1:"+os.environ["PORT"]+sys.argv[1], timeout=3)\' "$p"; '
    'else node -e \'require("http").get("http://127.0.0.1:"+process.env.PORT+'
    'process.argv[1],r=>process.exit(r.statusCode<400?0:1)).on("error",()=>process.exit(1))\' '
    '"$p"; fi'
)


def service_name(deployment_id: str) -> str:
    return f"devpush-{deployment_id}"


def project_network(project_id: str) -> str:
    """Each project's own overlay network: its tasks reach each other, never another's."""
    return f"devpush-p-{project_id}"


def app_image(deployment_id: str, registry: str | None = None) -> str:
    """The built app's image: pushed to `registry` (host:port[/path]) for the other nodes to
    pull, else on the building node only."""
    prefix = f"{registry.strip('/')}/" if registry else ""
    return f"{prefix}{APP_IMAGE}:{deployment_id}"


def service_spec(
    spec: RuntimeSpec,
    *,
    image: str,
    owner: str | None,
    build_id: str,
    mounts: list[dict[str, Any]],
    drain_seconds: float,
    start_period: float,
    node: str | None = None,
) -> dict[str, Any]:
    """The deployment's service, made before its build with no task (replicas 0): its build
    then puts the built app's image in it and one task (`promote`)."""
    env = entrypoint_env(spec, spec.env) | {
        "DEVPUSH_APP_DIR": APP_DIR,
        "DEVPUSH_STATE_DIR": STATE_DIR,
        "DEVPUSH_HEALTH_PATH": spec.health_path,
    }
    labels = {
        **spec.labels,
        LABEL_MANAGED: "true",
        LABEL_DEPLOYMENT: spec.deployment_id,
        LABEL_PROJECT: spec.project_id,
        LABEL_PORT: str(spec.port),
        LABEL_BUILD: build_id,
    }
    if owner:
        labels[LABEL_OWNER] = owner
    limits: dict[str, Any] = {}
    if spec.memory_mb:
        limits["MemoryBytes"] = spec.memory_mb * MIB
    if spec.cpus:
        limits["NanoCPUs"] = int(spec.cpus * 1e9)
    if spec.pids_limit:
        limits["Pids"] = spec.pids_limit
    second = 1_000_000_000
    container: dict[str, Any] = {
        "Image": image,
        "Command": ["/bin/sh", "/devpush/entrypoint.sh", "run"],
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Labels": {k: v for k, v in labels.items() if k != LABEL_BUILD},
        "User": f"{RUNNER_UID}:{RUNNER_UID}",
        "Dir": APP_DIR,
        "CapabilityDrop": ["ALL"],
        "StopGracePeriod": int(drain_seconds * second),
        "Healthcheck": {
            "Test": ["CMD-SHELL", HEALTH_SCRIPT],
            "Interval": 5 * second,
            "Timeout": 4 * second,
            "Retries": 3,
            "StartPeriod": int(start_period * second),
        },
    }
    if mounts:
        container["Mounts"] = mounts
    return {
        "Name": service_name(spec.deployment_id),
        "Labels": labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": limits},
            "RestartPolicy": {"Condition": "any", "Delay": 2 * second, "MaxAttempts": 0},
            "Networks": [{"Target": project_network(spec.project_id)}],
            # `node`: the tasks stay where their image (no registry) or volumes are.
            "Placement": {"Constraints": [f"node.id=={node}"] if node else []},
        },
        "Mode": {"Replicated": {"Replicas": 0}},
        # No virtual IP (IPVS, which the routing mesh needs too): each task publishes the
        # app's port on a port of its own node, where Traefik reaches that task.
        "EndpointSpec": {
            "Mode": "dnsrr",
            "Ports": [{"Protocol": "tcp", "TargetPort": spec.port, "PublishMode": "host"}],
        },
    }


def _since(task: dict[str, Any]) -> str:
    return str((task.get("Status") or {}).get("Timestamp") or task.get("UpdatedAt") or "")


def task_status(tasks: list[dict[str, Any]], addresses: dict[str, str]) -> InstanceStatus:
    """The deployment's status from its service's tasks: running while one runs (`upstream`
    is the lowest slot's), exited when none runs and the newest one ended (swarm is about to
    start its replacement, or has given up), else starting."""
    found = endpoints(tasks, addresses)
    if found:
        return InstanceStatus(InstanceState.running, Phase.runtime, upstream=found[0].upstream)
    ended = [t for t in tasks if (t.get("Status") or {}).get("State") in TERMINAL]
    live = [t for t in tasks if (t.get("Status") or {}).get("State") in STARTING]
    if ended and not (live and max(map(_since, live)) > max(map(_since, ended))):
        last = max(ended, key=_since)
        status = last.get("Status") or {}
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        error = status.get("Err") or None
        if code == 137 and not error:
            error = "killed (SIGKILL): out of memory, or its health check failed"
        return InstanceStatus(InstanceState.exited, Phase.runtime, exit_code=code, error=error)
    return InstanceStatus(InstanceState.building, Phase.runtime)


def endpoints(tasks: list[dict[str, Any]], addresses: dict[str, str]) -> list[Endpoint]:
    """The running tasks, lowest slot first, each at its node's address and the port its
    node published for it."""
    found = []
    for task in tasks:
        status = task.get("Status") or {}
        if status.get("State") != "running" or task.get("DesiredState") != "running":
            continue
        ports = (status.get("PortStatus") or {}).get("Ports") or []
        published = next((p.get("PublishedPort") for p in ports if p.get("PublishedPort")), None)
        address = addresses.get(str(task.get("NodeID")))
        if published and address:
            found.append(
                Endpoint(
                    task=str(task["ID"]),
                    slot=int(task.get("Slot") or 0),
                    upstream=f"{address}:{published}",
                )
            )
    return sorted(found, key=lambda e: (e.slot, e.task))


def node_address(node: dict[str, Any]) -> str:
    """Where Traefik reaches a node's published ports; a manager advertised on loopback (a
    single-node swarm) answers on it."""
    address = str((node.get("Status") or {}).get("Addr") or "")
    if address in ("", "0.0.0.0"):
        manager = (node.get("ManagerStatus") or {}).get("Addr") or ""
        address = str(manager).rsplit(":", 1)[0] or "127.0.0.1"
    return address


async def build_app_image(
    docker: aiodocker.Docker,
    build_id: str,
    *,
    base: str,
    tag: str,
    files: dict[str, Any],
    labels: dict[str, str],
) -> None:
    """The built app's image: the runner image `base`, the build container's /app as it is
    (owners, modes, links) and the runtime's files, with none of the build's env vars (they may
    be secrets; the service gives its tasks theirs)."""
    with tempfile.TemporaryFile() as app_tar, tempfile.TemporaryFile() as context:
        query = docker._query(f"containers/{build_id}/archive", params={"path": APP_DIR})
        async with query as response:
            async for chunk in response.content.iter_chunked(1 << 16):
                await asyncio.to_thread(app_tar.write, chunk)
        await asyncio.to_thread(_context, context, app_tar, base, files)
        context.seek(0)
        answers = await docker.images.build(
            fileobj=context, tag=tag, labels=labels, rm=True, forcerm=True, encoding="identity"
        )
    errors = [a["error"] for a in answers if isinstance(a, dict) and a.get("error")]
    if errors:
        raise RuntimeError(f"building the app's image failed: {errors[-1]}")


def _context(out: IO[bytes], app_tar: IO[bytes], base: str, files: dict[str, Any]) -> None:
    dockerfile = f"FROM {base}\nADD app.tar /\nADD devpush.tar /\nUSER {RUNNER_UID}:{RUNNER_UID}\n"
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        app_tar.seek(0, io.SEEK_END)
        info = tarfile.TarInfo("app.tar")
        info.size = app_tar.tell()
        app_tar.seek(0)
        tar.addfile(info, app_tar)
        with source_archive(None, files) as devpush:
            devpush.seek(0, io.SEEK_END)
            info = tarfile.TarInfo("devpush.tar")
            info.size = devpush.tell()
            devpush.seek(0)
            tar.addfile(info, devpush)
