"""The `process` runtime: each deployment runs as a local process tree, sandboxed by bubblewrap.

An instance lives in `root/<deployment_id>/` (a replica k >= 1 in `root/<deployment_id>-r<k>/`,
with a copy of replica 0's built `app/`): `app/` (the copied source, the app's working
directory), `state/` (the entrypoint writes `phase` and `exit_code` there), `logs/stdout.log`,
`logs/stderr.log`, and `instance.json` (pid, port, address, limits and a spec summary, never env
values). The app runs in its own session so that it outlives the worker, and is limited by
cgroups where this machine lets us write them (v2, else v1), else by setrlimit.

Network (runtime/netns.py, when isolated: root with `ip` and `nft`): build and app run in the
instance's own network namespace, with its own address on the `devpush0` bridge and HOST=0.0.0.0;
the upstream is `<address>:<port>`. From inside, nothing of the host (its loopback services, its
addresses) nor any other instance is reachable; the internet is, through NAT. Unisolated
(DEVPUSH_NETWORK_ISOLATION=off, or "auto" without root, ip or nft): the host network, a port of
its own on 127.0.0.1.

Sandbox (when `bwrap` is installed): its own mount, pid, ipc, uts and cgroup namespaces. It
sees read-only /usr (+ the /bin, /lib symlinks) and a few /etc entries, its own `app/` at /app
and `state/` at /devpush/state, its project's package cache and kept trees, a private /tmp, and
nothing else. When the worker is root, bwrap runs privileged and the app drops, with no
capabilities, to its project's own uid/gid (runtime/uids.py), which owns the instance's `app/`
and `state/` and the project's cache and trees; otherwise bwrap uses a user namespace and the
app keeps the worker's uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from devpush.errors import RuntimeFailure
from devpush.runtime import netns, uids, volumes
from devpush.runtime.base import (
    InstanceState,
    InstanceStats,
    InstanceStatus,
    LogRecord,
    Phase,
    RuntimeHandle,
    RuntimeSpec,
    Toolchain,
    _Volumes,
)
from devpush.runtime.process_exec import ExecMixin
from devpush.runtime.process_files import (
    POLL,
    Instance,
    LogFile,
    check_id,
    chown_tree,
    copy_present,
    instance_name,
    now,
    read_exit_code,
    read_phase,
    special_files,
)
from devpush.runtime.process_limits import (
    BUILD,
    Cgroups,
    cgroup_oom_killed,
    cgroup_remove,
    create_cgroups,
    detect_cgroups,
)
from devpush.runtime.process_root import RootMixin
from devpush.runtime.process_sandbox import SandboxMixin, run
from devpush.runtime.process_stats import instance_stats
from devpush.runtime.process_tree import (
    create_time,
    instance_processes,
    kill_strays,
    listening_ports,
    reap_when_done,
    root_process,
    stop_instance,
)
from devpush.runtime.toolchains import Toolchains

# Aliases, because inside ProcessRuntime the name `list` is the protocol's method.
_Handles = list[RuntimeHandle]
_Toolchains = list[Toolchain]
_Ports = list[int]


class ProcessRuntime(RootMixin, SandboxMixin, ExecMixin):
    """Runs deployments as local processes. See base.py for the contract."""

    name = "process"

    def __init__(
        self,
        *,
        root: Path,
        protected_paths: list[Path],
        allow_unsandboxed: bool,
        port_range: tuple[int, int] = (20000, 29999),
        bwrap: str | None = "bwrap",
        cgroup_root: Path | None = Path("/sys/fs/cgroup"),
        cache_dir: Path | None = None,
        trees_dir: Path | None = None,
        volumes_dir: Path | None = None,
        toolchains_dir: Path | None = None,
        python_prefixes: Sequence[Path] = (),
        python_downloads: bool = False,
        ca_bundle: Path | None = None,
        tools: dict[str, Path] | None = None,
        network_isolation: Literal["auto", "on", "off"] = "auto",
        instance_subnet: str = "10.213.0.0/16",
        ip: str = "ip",
        nft: str = "nft",
        host_services: Sequence[tuple[str, int]] = (),
        uid_range: tuple[int, int] = (200_000, 100_000),
    ) -> None:
        """`bwrap` is looked up on PATH (None: act as if it were not installed);
        `cgroup_root=None` turns cgroups off (setrlimit is used instead). `cache_dir` holds each
        project's package cache (its own at /devpush/cache inside), `trees_dir` each
        project's kept install trees (its own at /devpush/trees), `volumes_dir` the
        projects' persistent volumes (runtime/volumes.py), `toolchains_dir` the Node and
        Python versions fetched for apps that ask for one the host lacks (runtime/toolchains.py;
        `python_prefixes` and `python_downloads` are its other sources), `ca_bundle` the CA
        certificates builds trust for outbound HTTPS, and `tools` host files placed
        read-only under /devpush (e.g. {"bin/uv": ...}). `network_isolation`: "on" needs root,
        `ip` and `nft` (else instances are refused), "auto" isolates when they are there.
        `host_services`: (host, port) that isolated instances may reach although private
        (the managed databases' server; host "" is this machine).
        `uid_range` (first, count): the projects' own uids when the worker is root."""
        self._root = Path(root).absolute()
        self._cache_dir = Path(cache_dir).absolute() if cache_dir else None
        self._trees_dir = Path(trees_dir).absolute() if trees_dir else None
        self._volumes_dir = Path(volumes_dir or self._root.with_name("volumes")).absolute()
        self._tools = dict(tools or {})
        self._toolchains = Toolchains(
            toolchains_dir,
            python_prefixes=python_prefixes,
            python_downloads=python_downloads,
            uv=self._tools.get("bin/uv"),
        )
        self._ca_bundle = ca_bundle if ca_bundle and ca_bundle.is_file() else None
        self._protected = [Path(p).absolute() for p in protected_paths] + [self._root]
        self._allow_unsandboxed = allow_unsandboxed
        self._port_range = port_range
        self._bwrap = shutil.which(bwrap) if bwrap else None
        self._setpriv = shutil.which("setpriv")
        self._prlimit = shutil.which("prlimit")
        self._privileged = os.geteuid() == 0  # bwrap runs as root, the app drops to its uid
        self._cgroup_root = cgroup_root
        self._cgroups: Cgroups | None = None
        self._cgroups_detected = False
        self._sandbox_checked = False
        self._specs: dict[str, RuntimeSpec] = {}  # created, not yet started; env lives only here
        self._network, self._network_note, self._network_refusal = netns.choose(
            network_isolation,
            subnet=instance_subnet,
            root=self._root,
            ip=ip,
            nft=nft,
            services=host_services,
        )
        self._uids = uids.ProjectUids(self._root / ".uids.json", *uid_range)
        own_uids = self._bwrap is not None and self._privileged
        self._uid_refusal = uids.refusal(*uid_range) if own_uids else None

    # -- protocol ------------------------------------------------------------------------------

    async def create(self, spec: RuntimeSpec) -> RuntimeHandle:
        """Copies the source into a new instance. A leftover instance with the same deployment
        id (a retried job) is stopped and replaced."""
        if not spec.source_dir.is_dir():
            raise RuntimeFailure(f"source directory {spec.source_dir} does not exist")
        return await self._create(spec)

    async def replicate(self, source: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        """A new instance for replica `spec.replica` with a copy of `source`'s built app
        (files, not links: replicas never share a file they write); it runs no build."""
        if spec.replica < 1:
            raise RuntimeFailure("replicate() makes replicas 1 and up; replica 0 is create()d")
        built = self._root / check_id(source.id) / "app"
        if not built.is_dir():
            raise RuntimeFailure(f"instance {source.id} has no app to copy; create it first")
        run = replace(
            spec,
            source_dir=built,
            install_command=None,
            build_command=None,
            pre_deploy_command=None,
            install_cache=None,
        )
        return await self._create(run)

    async def _create(self, spec: RuntimeSpec) -> RuntimeHandle:
        instance_id = check_id(instance_name(check_id(spec.deployment_id), spec.replica))
        self._require_sandbox()
        if spec.volumes and not self._bwrap:
            raise RuntimeFailure(
                "volumes need the process runtime's sandbox (bubblewrap), which is not "
                "installed here; install the 'bubblewrap' package or use the docker runtime"
            )
        if (self._root / instance_id).exists():
            await self.remove(self._bare_handle(instance_id))
        instance = Instance.new(spec)
        await asyncio.to_thread(self._populate, spec, instance)
        self._specs[instance_id] = spec
        return self._handle(instance)

    async def start(self, handle: RuntimeHandle) -> RuntimeHandle:
        instance_id = check_id(handle.id)
        self._require_sandbox()
        instance = self._load(instance_id)
        if instance is None:
            raise RuntimeFailure(f"instance {instance_id} does not exist; create it first")
        if root_process(instance) is not None:
            return self._handle(instance)  # already running: starting twice is harmless
        spec = self._specs.get(instance_id)
        if spec is None:
            raise RuntimeFailure(
                f"instance {instance_id} has no pending spec (the env is never stored, and is"
                " dropped once started); create it again"
            )
        proc = await asyncio.to_thread(self._spawn, instance, spec)
        reap_when_done(proc)
        del self._specs[instance_id]  # the env (secrets) is not kept longer than needed
        return self._handle(instance)

    async def restart(self, handle: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        """Runs the app of an exited instance again, without its build. Until now its port and
        address stayed claimed in instance.json (the caller pulled its route first); what is
        left of it (processes, namespace) goes, then it claims a fresh port and address."""
        instance_id = check_id(handle.id)
        self._require_sandbox()
        instance = self._load(instance_id)
        if instance is None:
            raise RuntimeFailure(f"instance {instance_id} does not exist; create it first")
        if root_process(instance) is not None:
            return self._handle(instance)
        if instance.pid is not None:
            await asyncio.to_thread(self._stop, instance, 1.0)
        run = replace(spec, install_command=None, build_command=None, pre_deploy_command=None)
        proc = await asyncio.to_thread(self._spawn, instance, run)
        reap_when_done(proc)
        return self._handle(instance)

    async def status(self, handle: RuntimeHandle) -> InstanceStatus:
        instance = self._load(check_id(handle.id))
        if instance is None:
            return InstanceStatus(InstanceState.missing)
        if instance.pid is None:
            return InstanceStatus(InstanceState.created)
        state_dir = self._root / instance.name / "state"
        phase = read_phase(state_dir)
        if root_process(instance) is not None:
            running = phase is Phase.runtime
            return InstanceStatus(
                InstanceState.running if running else InstanceState.building, phase=phase
            )
        exit_code = read_exit_code(state_dir)
        error = None
        if instance.cgroups and cgroup_oom_killed(instance.cgroups, BUILD + "memory"):
            limit = instance.spec.get("build_memory_mb") or instance.spec.get("memory_mb")
            error = (
                f"out of memory: the build's limit is {limit} MiB; raise the project's "
                "build_memory_mb or DEVPUSH_BUILD_MEMORY_MB"
            )
        elif instance.cgroups and cgroup_oom_killed(instance.cgroups):
            error = "OOM killed"
        elif instance.stopped:  # by the runtime's stop (exited with it or killed)
            error = "stopped"
        elif exit_code is None:
            error = "the process disappeared"
        return InstanceStatus(InstanceState.exited, phase=phase, exit_code=exit_code, error=error)

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        instance_id = check_id(handle.id)
        log_dir = self._root / instance_id / "logs"
        files = [
            LogFile(log_dir / "stdout.log", "stdout"),
            LogFile(log_dir / "stderr.log", "stderr"),
        ]
        try:
            while True:
                records = [record for file in files for record in file.read()]
                for record in records:
                    yield record
                if records:
                    continue
                if not follow or not self._alive(instance_id):
                    # Final pass: what was written between the last read and the exit.
                    for file in files:
                        for record in file.read(final=True):
                            yield record
                    return
                await asyncio.sleep(POLL)
        finally:
            for file in files:
                file.close()

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        """SIGTERM to every process of the instance, SIGKILL to those left after `timeout`;
        returns as soon as they have all exited. Idempotent."""
        instance = self._load(check_id(handle.id))
        if instance is not None and instance.pid is not None:
            await asyncio.to_thread(self._stop, instance, timeout)

    async def remove(self, handle: RuntimeHandle) -> None:
        """Stops the instance and deletes its directory and cgroups. Idempotent."""
        instance_id = check_id(handle.id)
        try:
            instance = self._load(instance_id)
        except RuntimeFailure:
            instance = None  # unreadable instance.json: nothing to stop, delete what is there
        if instance is not None and instance.pid is not None:
            await asyncio.to_thread(self._stop, instance, 5.0)
        # A worker killed between spawning the instance and recording its pid leaves
        # processes no pid points at: find them by their working directory.
        await asyncio.to_thread(kill_strays, self._root / instance_id)
        await asyncio.to_thread(self._delete, instance_id, instance)
        self._specs.pop(instance_id, None)

    async def list(self) -> _Handles:
        return await asyncio.to_thread(self._list)

    async def forget_project(self, project_id: str) -> None:
        """Deletes the project's kept trees and package cache, and frees its uid."""
        await asyncio.to_thread(self._forget, check_id(project_id))

    async def volumes(self, project_id: str) -> _Volumes:
        return await asyncio.to_thread(volumes.usage, self._volumes_dir, check_id(project_id))

    async def delete_volumes(self, project_id: str) -> None:
        await asyncio.to_thread(volumes.delete, self._volumes_dir, check_id(project_id))

    async def volume_dir(self, project_id: str, environment_id: str, name: str) -> Path | None:
        path = volumes.host_dir(
            self._volumes_dir, check_id(project_id), check_id(environment_id), name
        )
        return path if path.is_dir() else None

    async def listening(self, handle: RuntimeHandle) -> _Ports:
        instance = self._load(check_id(handle.id))
        if instance is None:
            return []
        return await asyncio.to_thread(self._listening, instance)

    async def stats(self, handle: RuntimeHandle) -> InstanceStats | None:
        """From the instance's cgroups, or its process tree where it has none."""
        instance = self._load(check_id(handle.id))
        root = root_process(instance) if instance is not None else None
        if instance is None or root is None:
            return None
        procs = await asyncio.to_thread(instance_processes, root, instance.cgroups)
        return await asyncio.to_thread(instance_stats, instance.cgroups, procs)

    async def toolchains(self) -> _Toolchains:
        return await asyncio.to_thread(self._toolchains.offered)

    async def provide(self, language: str, spec: str) -> Toolchain | None:
        return await asyncio.to_thread(self._toolchains.provide, language, spec)

    async def host_address(self) -> str:
        return str(self._network.gateway) if self._network else "127.0.0.1"

    async def describe(self) -> dict[str, Any]:
        cgroups = await asyncio.to_thread(self._limits)
        sandbox = "unsandboxed"
        if self._bwrap:
            version = await asyncio.to_thread(run, [self._bwrap, "--version"])
            sandbox = f"{version.stdout.strip()} ({self._bwrap})"
        if cgroups is not None:
            limits, enforced = cgroups.label, sorted(cgroups.parents)
        else:
            limits = "rlimit"
            enforced = ["memory (RLIMIT_DATA, per process)"] if self._prlimit else []
        return {
            "backend": self.name,
            "root": str(self._root),
            "sandbox": sandbox,
            "app_user": self._uid_refusal or self._app_user(),
            "limits": limits,
            "limits_enforced": enforced,
            "port_range": list(self._port_range),
            "network": self._network_note,
        }

    async def close(self) -> None:
        # Apps outlive the runtime on purpose; only the unstarted specs (and their env) go.
        self._specs.clear()

    # -- create and start ----------------------------------------------------------------------

    def _populate(self, spec: RuntimeSpec, instance: Instance) -> None:
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock():
            uid = self._own_uid(check_id(spec.project_id))
        staging = self._root / f".new-{instance.name}-{secrets.token_hex(4)}"
        try:
            staging.mkdir(mode=0o700)
            # symlinks=True: a link in the repository is copied as a link, never followed
            # (following it as root would copy host files into the app).
            # (A running replica 0's app dir, for a replica, may hold sockets, e.g.
            # gunicorn's control socket, and files that go while it is read.)
            shutil.copytree(
                spec.source_dir,
                staging / "app",
                symlinks=True,
                ignore=special_files,
                copy_function=copy_present,
            )
            (staging / "state").mkdir(mode=0o700)  # its owner (below) is the sandbox user
            (staging / "logs").mkdir(mode=0o700)
            if uid is not None:
                chown_tree(staging / "app", uid)
                chown_tree(staging / "state", uid)
            instance.save(staging)
            os.rename(staging, self._root / instance.name)
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeFailure(f"cannot create instance {instance.name}: {exc}") from exc

    def _spawn(self, instance: Instance, spec: RuntimeSpec) -> subprocess.Popen[bytes]:
        self._check_sandbox()
        directory = self._root / instance.name
        for name in ("phase", "exit_code"):  # a start retried after a failure starts afresh
            with contextlib.suppress(FileNotFoundError):
                (directory / "state" / name).unlink()
        cgroups = self._limits()
        if instance.cgroups:  # a fresh cgroup (its OOM counter starts at 0)
            cgroup_remove(instance.cgroups)
        with self._lock():
            port, address = self._claim(instance.name)
            try:
                try:
                    cgroup_dirs = create_cgroups(cgroups, instance.name, spec)
                except OSError as exc:
                    raise RuntimeFailure(f"cannot set up the cgroup: {exc}") from exc
                proc = self._popen(directory, spec, port, cgroup_dirs)
            except RuntimeFailure:
                if self._network is not None:
                    self._network.detach(instance.name)
                raise
            instance.pid = proc.pid
            instance.create_time = create_time(proc.pid)
            instance.port = port
            instance.address = address
            instance.started_at = now().isoformat()
            instance.sandbox = "bubblewrap" if self._bwrap else "unsandboxed"
            instance.user = self._app_user(spec.project_id)
            instance.limits = cgroups.label if cgroups else "rlimit"
            instance.cgroups = cgroup_dirs
            instance.stopped = False
            instance.save(directory)
        return proc

    # -- limits --------------------------------------------------------------------------------

    def _limits(self) -> Cgroups | None:
        if not self._cgroups_detected:
            if self._cgroup_root is not None:
                self._cgroups = detect_cgroups(self._cgroup_root)
            self._cgroups_detected = True
        return self._cgroups

    # -- processes -----------------------------------------------------------------------------

    def _alive(self, instance_id: str) -> bool:
        instance = self._load(instance_id)
        return instance is not None and root_process(instance) is not None

    def _stop(self, instance: Instance, timeout: float) -> None:
        directory = self._root / instance.name
        stop_instance(instance, timeout, directory=directory, network=self._network)

    def _listening(self, instance: Instance) -> _Ports:
        procs = instance_processes(root_process(instance), instance.cgroups)
        if self._network is None or instance.address is None:
            return listening_ports(procs)
        return self._network.listening(instance.name, [proc.pid for proc in procs])
