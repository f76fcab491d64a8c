"""The runtime protocol: how a deployment's build, pre-deploy and app run, wherever that is.

Contract (every backend keeps it; tests/integration/runtime checks it for each):

- `create(spec)` allocates the instance and copies `spec.source_dir` into it. Nothing runs yet.
  The instance is labelled with `spec.labels` (devpush ids only, never secrets).
- `replicate(source, spec)` allocates replica `spec.replica` (1 and up) of the deployment
  whose replica 0 is `source` (built: its app phase has started), with a copy of its built app
  instead of `spec.source_dir`. Its start runs the start command only (no install, build or
  pre-deploy), on a port and address (process) or in a container (docker) of its own. Every
  other call treats a replica as an instance of its own; `handle.data["replica"]` says which
  one it is, and `list()` returns every replica of every deployment.
- `start(handle)` runs, inside the instance, the shared `entrypoint.sh`: install and build
  commands (the build phase, under the build's own limits where the backend can separate
  them), then the pre-deploy command, then the start command. It returns the handle with `upstream`
  ("host:port" the proxy and the readiness probe use) filled in.
- `restart(handle, spec)` runs the app of an instance that exited again, without its build
  (the monitor restarts a live app that exits, after pulling its route): the process runtime
  claims a fresh port and address (`spec` gives the env, which it never stores), the docker
  runtime starts the same container again. A running instance is left as it is.
- `status(handle)` says whether the instance is building, running the app, or has exited (with
  the exit code and the phase it was in), or is missing.
- `logs(handle, follow=...)` yields every output line from the beginning, tagged with its stream
  and phase (the entrypoint prints `::devpush phase=<phase>` markers, which are not yielded).
- `stop(handle, timeout)` sends SIGTERM (the entrypoint passes it on to the app), SIGKILL only
  after `timeout`, and returns as soon as the instance has exited: a retired or canceled
  instance gets `DEVPUSH_DRAIN_SECONDS` to finish its requests. `remove` stops a running
  instance the same way (a short grace) before deleting it.
- `stop` and `remove` are idempotent: a missing instance is not an error.
- `list()` returns every instance this backend manages (found by label/directory), so the
  monitor can remove those with no live deployment.
- `toolchains()` lists the interpreters and Node versions this backend can run (host
  interpreters for `process`, runner images for `docker`), for the builder to choose from.
- `provide(language, spec)` fetches a toolchain that satisfies `spec` where the backend can
  (the process runtime: Node from the npm registry's node-linux-* package), else None.
- `stats(handle)` reports the instance's CPU time and memory (metrics/), or None when it is
  not running or the backend cannot tell.
- `listening(handle)` lists the TCP ports the app listens on, where the backend can tell
  (else an empty list), so an app that ignores $PORT is told so.
- `/devpush/trees` is the project's own cache of installed trees (entrypoint.sh keeps and
  restores them by `spec.install_cache`); `forget_project(id)` removes it with the project.
- `spec.support_files` are placed read-only at `/devpush/<name>` in the instance.
- `spec.volumes` are mounted read-write, owned by the app's user: each environment's copy of a
  volume outlives every instance (redeploys, rollbacks, restarts of the platform) until
  `delete_volumes(project_id)`; a preview's scratch volume goes with its instance.
  `volumes(project_id)` lists the copies that hold data, with the bytes used and whether the
  backend enforces their size.
- `exec(handle, spec, command, timeout=, output=)` runs a one-off shell command (a cron job)
  beside the running app of the instance, with its code, env (`spec.env`, rebuilt by the
  caller: never stored), PATH entries, volumes and limits: process, a new sandboxed process
  in the instance's network namespace and its own cgroup; docker, an Engine API exec in the
  container. Each output line goes to `output(stream, line)`. After `timeout` seconds the
  command and its children are killed and the result says `timed_out`.
- Backend errors are raised as `devpush.errors.RuntimeFailure` with a message for people.

A backend that runs a deployment's replicas itself (swarm: the tasks of one service) also has
`scale(handle, count)` and `endpoints(handle)` (`ReplicatingRuntime`): the platform sets the
count and routes whichever tasks run; the backend places, restarts and health-checks them. Its
`status(handle)` reports the whole deployment (running while a task runs) and the address of
one task in `upstream`, which it learns only once the build is done and a task runs.

The app's instance outlives the worker that started it: killing the worker never kills apps.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

ENTRYPOINT = Path(__file__).with_name("entrypoint.sh")
# The variables that make Python (uv, pip, requests), Node and npm trust the CA bundle a runtime
# places at /devpush/ca.crt, so builds reach package registries behind TLS inspection too.
CA_ENV = (
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "npm_config_cafile",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
)
PHASE_MARKER = "::devpush phase="


class Phase(enum.StrEnum):
    build = "build"
    pre_deploy = "pre_deploy"
    runtime = "runtime"


class InstanceState(enum.StrEnum):
    created = "created"  # created, not started
    building = "building"  # running the build or pre-deploy command
    running = "running"  # the start command is running
    exited = "exited"  # the entrypoint ended; see exit_code and phase
    missing = "missing"  # no such instance


@dataclass(frozen=True)
class Toolchain:
    """A language version a backend can run: a host interpreter or a runner image."""

    language: str  # "python" | "node"
    version: str  # "3.11.2", or "3.11" when only the minor version is known
    path: str | None = None  # process: the interpreter as seen inside the sandbox
    image: str | None = None  # docker: the runner image


@dataclass(frozen=True)
class VolumeMount:
    """A persistent volume at `mount_path`: the environment's copy, or (environment_id None,
    a preview) an empty scratch directory that goes with the instance."""

    name: str
    mount_path: str
    environment_id: str | None
    size_mb: int | None = None


@dataclass(frozen=True)
class VolumeUsage:
    environment_id: str
    name: str
    used_bytes: int
    size_mb: int | None  # the size the backend enforces; None: not enforced here
    enforced: bool


@dataclass(frozen=True)
class RuntimeSpec:
    deployment_id: str
    project_id: str
    source_dir: Path  # prepared source tree on the worker's side (root_directory applied)
    start_command: str
    install_command: str | None = None
    build_command: str | None = None
    pre_deploy_command: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # includes PORT
    port: int = 8000
    image: str | None = None  # docker: the runner image
    cpus: float | None = None
    memory_mb: int | None = None
    pids_limit: int | None = None
    build_memory_mb: int | None = None  # the build phase's own limits (None: the app's)
    build_cpus: float | None = None
    path: tuple[str, ...] = ()  # directories (relative to the app) put first on PATH
    # "KEY:DIR": the install's output DIR is kept per project under KEY (/devpush/trees) and
    # restored instead of installing when KEY is there already.
    install_cache: str | None = None
    support_files: dict[str, Path] = field(default_factory=dict)  # name -> host file
    labels: dict[str, str] = field(default_factory=dict)
    volumes: tuple[VolumeMount, ...] = ()
    replica: int = 0  # 0 builds; 1.. are made by Runtime.replicate from replica 0's build
    health_path: str = "/"  # what the backend's own health check asks (swarm)


def entrypoint_env(spec: RuntimeSpec, user_env: dict[str, str]) -> dict[str, str]:
    """The user's env vars, less the names the entrypoint reads, plus those from the spec:
    commands, PATH entries and the install cache are never taken from the user."""
    own = {
        "DEVPUSH_INSTALL_COMMAND": spec.install_command,
        "DEVPUSH_BUILD_COMMAND": spec.build_command,
        "DEVPUSH_PRE_DEPLOY_COMMAND": spec.pre_deploy_command,
        "DEVPUSH_START_COMMAND": spec.start_command,
        "DEVPUSH_PATH": ":".join(spec.path) or None,
        "DEVPUSH_INSTALL_CACHE": spec.install_cache,
    }
    env = {k: v for k, v in user_env.items() if k not in own}
    return env | {k: v for k, v in own.items() if v is not None}


@dataclass(frozen=True)
class RuntimeHandle:
    backend: str
    id: str  # container id, or instance directory name
    deployment_id: str
    upstream: str | None = None  # "host:port"
    data: dict[str, Any] = field(default_factory=dict)  # backend specifics (pid, ...)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RuntimeHandle:
        return cls(**value)


@dataclass(frozen=True)
class InstanceStatus:
    state: InstanceState
    phase: Phase | None = None  # the phase running now, or the one it exited in
    exit_code: int | None = None
    error: str | None = None  # backend's own explanation, e.g. "OOM killed"
    upstream: str | None = None  # where it answers now, for a backend that assigns it late


@dataclass(frozen=True)
class InstanceStats:
    """A running instance's resource use now: CPU time consumed since it started (seconds,
    cumulative: rates come from two samples) and memory in use (bytes, page cache excluded
    where the backend can tell)."""

    cpu_seconds: float | None
    memory_bytes: int | None


@dataclass(frozen=True)
class LogRecord:
    ts: datetime
    stream: str  # stdout|stderr
    phase: Phase
    message: str  # one line without its newline; invalid UTF-8 replaced


@dataclass(frozen=True)
class ExecResult:
    """How a one-off command (Runtime.exec) ended: its exit code (None when it never
    started or was killed), and whether it ran out of time."""

    exit_code: int | None
    timed_out: bool = False
    error: str | None = None  # why it could not run, for people


ExecOutput = Callable[[str, str], Awaitable[None]]  # (stream "stdout"|"stderr", line)
_Toolchains = list[Toolchain]  # aliases: inside Runtime, `list` is a method
_Ports = list[int]
_Volumes = list[VolumeUsage]


@dataclass(frozen=True)
class Endpoint:
    """One running task of a ReplicatingRuntime's deployment and where it answers."""

    task: str
    slot: int
    upstream: str


class Runtime(Protocol):
    """One backend that runs deployments. See the module docstring for the contract."""

    name: str

    async def create(self, spec: RuntimeSpec) -> RuntimeHandle: ...

    async def replicate(self, source: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle: ...

    async def start(self, handle: RuntimeHandle) -> RuntimeHandle: ...

    async def restart(self, handle: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle: ...

    async def status(self, handle: RuntimeHandle) -> InstanceStatus: ...

    def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]: ...

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None: ...

    async def remove(self, handle: RuntimeHandle) -> None: ...

    async def list(self) -> list[RuntimeHandle]: ...

    async def toolchains(self) -> _Toolchains: ...

    async def listening(self, handle: RuntimeHandle) -> _Ports: ...

    async def stats(self, handle: RuntimeHandle) -> InstanceStats | None: ...

    async def forget_project(self, project_id: str) -> None: ...

    async def volumes(self, project_id: str) -> _Volumes: ...

    async def delete_volumes(self, project_id: str) -> None: ...

    async def volume_dir(self, project_id: str, environment_id: str, name: str) -> Path | None:
        """The host directory holding an environment's copy of a volume (None: it has no
        data yet, or the engine's files are not on this machine)."""
        ...

    async def provide(self, language: str, spec: str) -> Toolchain | None: ...

    async def exec(
        self,
        handle: RuntimeHandle,
        spec: RuntimeSpec,
        command: str,
        *,
        timeout: float,
        output: ExecOutput,
    ) -> ExecResult: ...

    async def host_address(self) -> str:
        """The address at which an instance reaches services of this machine that it is
        given (the managed databases' PostgreSQL)."""
        ...

    async def describe(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


@runtime_checkable
class ReplicatingRuntime(Runtime, Protocol):
    """A backend that runs a deployment's replicas itself (see the module docstring)."""

    async def scale(self, handle: RuntimeHandle, count: int) -> None: ...

    async def endpoints(self, handle: RuntimeHandle) -> list[Endpoint]: ...
