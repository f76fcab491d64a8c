"""The `process` runtime: each deployment runs as a local process tree, sandboxed by bubblewrap.

An instance lives in `root/<deployment_id>/`: `app/` (the copied source, the app's working
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
import fcntl
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil

from devpush.errors import RuntimeFailure
from devpush.runtime import netns, uids
from devpush.runtime.base import (
    CA_ENV,
    ENTRYPOINT,
    PHASE_MARKER,
    InstanceState,
    InstanceStatus,
    LogRecord,
    Phase,
    RuntimeHandle,
    RuntimeSpec,
    Toolchain,
    entrypoint_env,
)
from devpush.runtime.toolchains import Toolchains

NO_BWRAP_MESSAGE = (
    "bubblewrap (bwrap) is not installed, so the process runtime cannot sandbox apps; "
    "install the 'bubblewrap' package, or set DEVPUSH_ALLOW_UNSANDBOXED=1 to run apps unsandboxed"
)
MiB = 1024 * 1024
MAX_LINE = 64 * 1024  # longer log lines are cut
_READ_CHUNK = 1024 * 1024
_POLL = 0.025  # idle poll of log files and process state; live logs target < 100 ms
_PATH = "/devpush/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What python3, node and sh need from /etc (plus /etc/python3*); the rest of /etc (platform
# config) stays hidden. Top-level entries only: bwrap would create a nested one's parents 0700.
_ETC_ENTRIES = (
    "alternatives ca-certificates gai.conf group host.conf hosts ld.so.cache ld.so.conf"
    " ld.so.conf.d localtime mime.types nsswitch.conf os-release passwd protocols resolv.conf"
    " services ssl"
).split()
# Runs as root before anything else in the instance: moves this very process into the cgroups
# named before "--" (so every child starts inside them), then execs the rest of the arguments.
# A constant script; the paths arrive as arguments.
_JOIN_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
_CONTROLLERS = ("memory", "cpu", "pids")
_BUILD = "build:"  # key prefix of the build stage's cgroups in instance.cgroups
_DRIVER = Path(__file__).with_name("driver.py")
# Where the CA bundle and caches appear inside the sandbox (runtime/base.py: CA_ENV).
_CA_PATH = "/devpush/ca.crt"
_CACHE_PATH = "/devpush/cache"
_OLD_CACHES = ("uv", "npm", "pnpm", "yarn", "corepack")  # cache_dir's entries before uids.py
_PHASES = {phase.value for phase in Phase}
_STALE_STAGING = 3600.0  # seconds after which a `.new-*` directory is a crashed create()
_CPU_PERIOD_US = 100_000
# Aliases, because inside ProcessRuntime the name `list` is the protocol's method.
_Argv = list[str]
_Handles = list[RuntimeHandle]
_Toolchains = list[Toolchain]
_Ports = list[int]


# ---------------------------------------------------------------------------------------------
# instance.json


@dataclass
class _Instance:
    """What `instance.json` records: enough for any worker, after any restart, to find the app."""

    deployment_id: str
    project_id: str
    labels: dict[str, str]
    created_at: str
    spec: dict[str, Any]  # a summary: limits and env var names, never env values
    sandbox: str | None = None  # "bubblewrap" or "unsandboxed", from start() on
    user: str | None = None
    pid: int | None = None  # the root of the instance's process tree
    create_time: float | None = None  # with pid, identifies the process (pids are reused)
    port: int | None = None
    address: str | None = None  # the instance's own address (isolated network), else None
    started_at: str | None = None
    limits: str | None = None  # "cgroup v2", "cgroup v1" or "rlimit"
    cgroups: dict[str, str] = field(default_factory=dict)  # controller -> cgroup directory
    stopped: bool = False  # stop() was asked for

    @classmethod
    def new(cls, spec: RuntimeSpec) -> _Instance:
        summary = {
            "image": spec.image,
            "port": spec.port,
            "cpus": spec.cpus,
            "memory_mb": spec.memory_mb,
            "build_memory_mb": spec.build_memory_mb,
            "pids_limit": spec.pids_limit,
            "env_keys": sorted(spec.env),
        }
        return cls(
            deployment_id=spec.deployment_id,
            project_id=spec.project_id,
            labels=dict(spec.labels),
            created_at=_now().isoformat(),
            spec=summary,
        )

    @classmethod
    def load(cls, directory: Path) -> _Instance | None:
        path = directory / "instance.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise RuntimeFailure(f"{path} is unreadable: {exc}") from exc

    def save(self, directory: Path) -> None:
        tmp = directory / f".instance.json.{secrets.token_hex(4)}"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, directory / "instance.json")


# ---------------------------------------------------------------------------------------------
# cgroups


@dataclass(frozen=True)
class _Limits:
    memory_mb: int | None
    cpus: float | None
    pids_limit: int | None

    @classmethod
    def of(cls, spec: RuntimeSpec, *, build: bool) -> _Limits:
        if build:
            memory = spec.build_memory_mb or spec.memory_mb
            return cls(memory, spec.build_cpus or spec.cpus, spec.pids_limit)
        return cls(spec.memory_mb, spec.cpus, spec.pids_limit)


@dataclass(frozen=True)
class _Cgroups:
    """Where instance cgroups go on this machine, and which controllers they get."""

    version: int
    parents: dict[str, Path]  # controller -> directory that holds the instance cgroups

    @property
    def label(self) -> str:
        return f"cgroup v{self.version}"

    def create(self, instance_id: str, limits: _Limits) -> dict[str, str]:
        # v1 cgroups go next to the worker's own (inside whatever limits the host gave it);
        # v2 forbids controllers in a group that holds processes, hence one devpush/ parent.
        name = instance_id if self.version == 2 else f"devpush-{instance_id}"
        dirs = {ctrl: parent / name for ctrl, parent in self.parents.items()}
        for directory in set(dirs.values()):
            directory.mkdir(parents=True, exist_ok=True)
            if _read(directory / "cgroup.procs").split():  # never share: stop() kills it all
                raise RuntimeFailure(f"cgroup {directory} is in use by another instance")
        if self.version == 2:
            _limit_v2(dirs, limits)
        else:
            _limit_v1(dirs, limits)
        return {ctrl: str(directory) for ctrl, directory in dirs.items()}


def _limit_v2(dirs: dict[str, Path], spec: _Limits) -> None:
    if spec.memory_mb and "memory" in dirs:
        _write(dirs["memory"] / "memory.max", str(spec.memory_mb * MiB))
        if (dirs["memory"] / "memory.swap.max").exists():
            _write(dirs["memory"] / "memory.swap.max", "0")
    if spec.cpus and "cpu" in dirs:
        _write(dirs["cpu"] / "cpu.max", f"{_cpu_quota(spec.cpus)} {_CPU_PERIOD_US}")
    if spec.pids_limit and "pids" in dirs:
        _write(dirs["pids"] / "pids.max", str(spec.pids_limit))


def _limit_v1(dirs: dict[str, Path], spec: _Limits) -> None:
    if spec.memory_mb and "memory" in dirs:
        _write(dirs["memory"] / "memory.limit_in_bytes", str(spec.memory_mb * MiB))
        if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():  # no swapping past it
            _write(dirs["memory"] / "memory.memsw.limit_in_bytes", str(spec.memory_mb * MiB))
    if spec.cpus and "cpu" in dirs:
        _write(dirs["cpu"] / "cpu.cfs_period_us", str(_CPU_PERIOD_US))
        _write(dirs["cpu"] / "cpu.cfs_quota_us", str(_cpu_quota(spec.cpus)))
    if spec.pids_limit and "pids" in dirs:
        _write(dirs["pids"] / "pids.max", str(spec.pids_limit))


def _cpu_quota(cpus: float) -> int:
    return max(1000, int(cpus * _CPU_PERIOD_US))


def _detect_cgroups(fs_root: Path) -> _Cgroups | None:
    """The cgroups we can create here with at least the memory controller, or None."""
    if (fs_root / "cgroup.controllers").is_file():
        return _detect_v2(fs_root)
    return _detect_v1(fs_root)


def _detect_v2(fs_root: Path) -> _Cgroups | None:
    parent = fs_root / "devpush"
    available = _read(fs_root / "cgroup.controllers").split()
    wanted = [ctrl for ctrl in _CONTROLLERS if ctrl in available]
    try:
        parent.mkdir(exist_ok=True)
        for group in (fs_root, parent):
            enabled = _read(group / "cgroup.subtree_control").split()
            for ctrl in wanted:
                if ctrl not in enabled:
                    # The kernel may refuse one (e.g. a delegated tree); the re-read below decides.
                    with contextlib.suppress(OSError):
                        _write(group / "cgroup.subtree_control", f"+{ctrl}")
        enabled = _read(parent / "cgroup.subtree_control").split()
    except OSError:
        return None
    if "memory" not in enabled:
        return None
    return _Cgroups(2, {ctrl: parent for ctrl in wanted if ctrl in enabled})


def _detect_v1(fs_root: Path) -> _Cgroups | None:
    own: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for ctrl in controllers.split(","):
            own[ctrl] = path
    parents: dict[str, Path] = {}
    for ctrl in _CONTROLLERS:
        parent = fs_root / ctrl / own.get(ctrl, "/").lstrip("/")
        if ctrl in own and (parent / "cgroup.procs").is_file() and os.access(parent, os.W_OK):
            parents[ctrl] = parent
    return _Cgroups(1, parents) if "memory" in parents else None


def _cgroup_members(dirs: dict[str, str]) -> set[int]:
    pids: set[int] = set()
    for directory in set(dirs.values()):
        with contextlib.suppress(FileNotFoundError):
            pids.update(int(pid) for pid in _read(Path(directory) / "cgroup.procs").split())
    return pids


def _cgroup_kill(dirs: dict[str, str]) -> None:
    for directory in set(dirs.values()):
        kill = Path(directory) / "cgroup.kill"  # v2, Linux 5.14+: kills the whole group at once
        if kill.exists():
            _write(kill, "1")
    for _ in range(100):
        pids = _cgroup_members(dirs)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    raise RuntimeFailure(f"processes {sorted(_cgroup_members(dirs))} survived SIGKILL")


def _cgroup_oom_killed(dirs: dict[str, str], controller: str = "memory") -> bool:
    if controller not in dirs:
        return False
    for name in ("memory.events", "memory.oom_control"):  # v2, v1
        with contextlib.suppress(FileNotFoundError):
            for line in _read(Path(dirs[controller]) / name).splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
    return False


def _cgroup_remove(dirs: dict[str, str]) -> None:
    for directory in set(dirs.values()):
        for attempt in range(100):  # the kernel may still be tearing down the last processes
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if attempt == 99:
                    raise RuntimeFailure(f"cannot remove cgroup {directory}: {exc}") from exc
                time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# logs


class _LogFile:
    """Reads one log file incrementally into records: phase markers applied, long lines cut."""

    def __init__(self, path: Path, stream: str) -> None:
        self.path = path
        self.stream = stream
        self.phase = Phase.build  # lines before any marker belong to the build
        self._file: Any = None
        self._partial = b""
        self._cutting = False  # the rest of an over-long line is being dropped

    def read(self, *, final: bool = False) -> list[LogRecord]:
        """New complete lines; with final=True the whole rest of the file, last line included."""
        records: list[LogRecord] = []
        while True:
            chunk = self._read_chunk()
            self._split(chunk, records)
            if not chunk or (records and not final):
                break
        if final and self._partial and not self._cutting:
            self._emit(self._partial, records)
        if final:
            self._partial, self._cutting = b"", False
        return records

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def _read_chunk(self) -> bytes:
        if self._file is None:
            try:
                self._file = open(self.path, "rb", buffering=0)  # open until close()
            except FileNotFoundError:
                return b""
        return self._file.read(_READ_CHUNK) or b""

    def _split(self, chunk: bytes, records: list[LogRecord]) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if self._cutting:  # the tail of a line already cut
                self._cutting = False
                continue
            self._emit(line, records)
        if len(self._partial) > MAX_LINE:
            if not self._cutting:
                self._emit(self._partial, records)
            self._partial, self._cutting = b"", True

    def _emit(self, line: bytes, records: list[LogRecord]) -> None:
        message = line[:MAX_LINE].decode("utf-8", errors="replace")
        if message.startswith(PHASE_MARKER):
            value = message[len(PHASE_MARKER) :].strip()
            if value in _PHASES:
                self.phase = Phase(value)
                return
        records.append(LogRecord(ts=_now(), stream=self.stream, phase=self.phase, message=message))


# ---------------------------------------------------------------------------------------------
# the runtime


class ProcessRuntime:
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
        toolchains_dir: Path | None = None,
        python_prefixes: Sequence[Path] = (),
        python_downloads: bool = False,
        ca_bundle: Path | None = None,
        tools: dict[str, Path] | None = None,
        network_isolation: Literal["auto", "on", "off"] = "auto",
        instance_subnet: str = "10.213.0.0/16",
        ip: str = "ip",
        nft: str = "nft",
        uid_range: tuple[int, int] = (200_000, 100_000),
    ) -> None:
        """`bwrap` is looked up on PATH (None: act as if it were not installed);
        `cgroup_root=None` turns cgroups off (setrlimit is used instead). `cache_dir` holds each
        project's package cache (its own at /devpush/cache inside), `trees_dir` each
        project's kept install trees (its own at /devpush/trees), `toolchains_dir` the Node and
        Python versions fetched for apps that ask for one the host lacks (runtime/toolchains.py;
        `python_prefixes` and `python_downloads` are its other sources), `ca_bundle` the CA
        certificates builds trust for outbound HTTPS, and `tools` host files placed
        read-only under /devpush (e.g. {"bin/uv": ...}). `network_isolation`: "on" needs root,
        `ip` and `nft` (else instances are refused), "auto" isolates when they are there.
        `uid_range` (first, count): the projects' own uids when the worker is root."""
        self._root = Path(root).absolute()
        self._cache_dir = Path(cache_dir).absolute() if cache_dir else None
        self._trees_dir = Path(trees_dir).absolute() if trees_dir else None
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
        self._cgroups: _Cgroups | None = None
        self._cgroups_detected = False
        self._sandbox_checked = False
        self._specs: dict[str, RuntimeSpec] = {}  # created, not yet started; env lives only here
        self._network, self._network_note, self._network_refusal = netns.choose(
            network_isolation, subnet=instance_subnet, root=self._root, ip=ip, nft=nft
        )
        self._uids = uids.ProjectUids(self._root / ".uids.json", *uid_range)
        own_uids = self._bwrap is not None and self._privileged
        self._uid_refusal = uids.refusal(*uid_range) if own_uids else None

    # -- protocol ------------------------------------------------------------------------------

    async def create(self, spec: RuntimeSpec) -> RuntimeHandle:
        """Copies the source into a new instance. A leftover instance with the same deployment
        id (a retried job) is stopped and replaced."""
        instance_id = _check_id(spec.deployment_id)
        self._require_sandbox()
        if not spec.source_dir.is_dir():
            raise RuntimeFailure(f"source directory {spec.source_dir} does not exist")
        if (self._root / instance_id).exists():
            await self.remove(self._bare_handle(instance_id))
        instance = _Instance.new(spec)
        await asyncio.to_thread(self._populate, spec, instance)
        self._specs[instance_id] = spec
        return self._handle(instance)

    async def start(self, handle: RuntimeHandle) -> RuntimeHandle:
        instance_id = _check_id(handle.id)
        self._require_sandbox()
        instance = self._load(instance_id)
        if instance is None:
            raise RuntimeFailure(f"instance {instance_id} does not exist; create it first")
        if self._process(instance) is not None:
            return self._handle(instance)  # already running: starting twice is harmless
        spec = self._specs.get(instance_id)
        if spec is None:
            raise RuntimeFailure(
                f"instance {instance_id} has no pending spec (the env is never stored, and is"
                " dropped once started); create it again"
            )
        proc = await asyncio.to_thread(self._spawn, instance, spec)
        _reap_when_done(proc)
        del self._specs[instance_id]  # the env (secrets) is not kept longer than needed
        return self._handle(instance)

    async def restart(self, handle: RuntimeHandle, spec: RuntimeSpec) -> RuntimeHandle:
        """Runs the app of an exited instance again, without its build. Until now its port and
        address stayed claimed in instance.json (the caller pulled its route first); what is
        left of it (processes, namespace) goes, then it claims a fresh port and address."""
        instance_id = _check_id(handle.id)
        self._require_sandbox()
        instance = self._load(instance_id)
        if instance is None:
            raise RuntimeFailure(f"instance {instance_id} does not exist; create it first")
        if self._process(instance) is not None:
            return self._handle(instance)
        if instance.pid is not None:
            await asyncio.to_thread(self._stop, instance, 1.0)
        run = replace(spec, install_command=None, build_command=None, pre_deploy_command=None)
        proc = await asyncio.to_thread(self._spawn, instance, run)
        _reap_when_done(proc)
        return self._handle(instance)

    async def status(self, handle: RuntimeHandle) -> InstanceStatus:
        instance = self._load(_check_id(handle.id))
        if instance is None:
            return InstanceStatus(InstanceState.missing)
        if instance.pid is None:
            return InstanceStatus(InstanceState.created)
        state_dir = self._root / instance.deployment_id / "state"
        phase = _read_phase(state_dir)
        if self._process(instance) is not None:
            running = phase is Phase.runtime
            return InstanceStatus(
                InstanceState.running if running else InstanceState.building, phase=phase
            )
        exit_code = _read_exit_code(state_dir)
        error = None
        if instance.cgroups and _cgroup_oom_killed(instance.cgroups, _BUILD + "memory"):
            limit = instance.spec.get("build_memory_mb") or instance.spec.get("memory_mb")
            error = (
                f"out of memory: the build's limit is {limit} MiB; raise the project's "
                "build_memory_mb or DEVPUSH_BUILD_MEMORY_MB"
            )
        elif instance.cgroups and _cgroup_oom_killed(instance.cgroups):
            error = "OOM killed"
        elif exit_code is None:
            error = "stopped" if instance.stopped else "the process disappeared"
        return InstanceStatus(InstanceState.exited, phase=phase, exit_code=exit_code, error=error)

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        instance_id = _check_id(handle.id)
        log_dir = self._root / instance_id / "logs"
        files = [
            _LogFile(log_dir / "stdout.log", "stdout"),
            _LogFile(log_dir / "stderr.log", "stderr"),
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
                await asyncio.sleep(_POLL)
        finally:
            for file in files:
                file.close()

    async def stop(self, handle: RuntimeHandle, *, timeout: float = 5.0) -> None:
        """SIGTERM to every process of the instance, SIGKILL after `timeout`. Idempotent."""
        instance = self._load(_check_id(handle.id))
        if instance is not None and instance.pid is not None:
            await asyncio.to_thread(self._stop, instance, timeout)

    async def remove(self, handle: RuntimeHandle) -> None:
        """Stops the instance and deletes its directory and cgroups. Idempotent."""
        instance_id = _check_id(handle.id)
        try:
            instance = self._load(instance_id)
        except RuntimeFailure:
            instance = None  # unreadable instance.json: nothing to stop, delete what is there
        if instance is not None and instance.pid is not None:
            await asyncio.to_thread(self._stop, instance, 5.0)
        # A worker killed between spawning the instance and recording its pid leaves
        # processes no pid points at: find them by their working directory.
        await asyncio.to_thread(_kill_strays, self._root / instance_id)
        await asyncio.to_thread(self._delete, instance_id, instance)
        self._specs.pop(instance_id, None)

    async def list(self) -> _Handles:
        return await asyncio.to_thread(self._list)

    async def forget_project(self, project_id: str) -> None:
        """Deletes the project's kept trees and package cache, and frees its uid."""
        await asyncio.to_thread(self._forget, _check_id(project_id))

    async def listening(self, handle: RuntimeHandle) -> _Ports:
        instance = self._load(_check_id(handle.id))
        if instance is None:
            return []
        return await asyncio.to_thread(self._listening, instance)

    async def toolchains(self) -> _Toolchains:
        return await asyncio.to_thread(self._toolchains.offered)

    async def provide(self, language: str, spec: str) -> Toolchain | None:
        return await asyncio.to_thread(self._toolchains.provide, language, spec)

    async def describe(self) -> dict[str, Any]:
        cgroups = await asyncio.to_thread(self._limits)
        sandbox = "unsandboxed"
        if self._bwrap:
            version = await asyncio.to_thread(_run, [self._bwrap, "--version"])
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

    def _populate(self, spec: RuntimeSpec, instance: _Instance) -> None:
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock():
            uid = self._own_uid(_check_id(spec.project_id))
        staging = self._root / f".new-{instance.deployment_id}-{secrets.token_hex(4)}"
        try:
            staging.mkdir(mode=0o700)
            # symlinks=True: a link in the repository is copied as a link, never followed
            # (following it as root would copy host files into the app).
            shutil.copytree(spec.source_dir, staging / "app", symlinks=True)
            (staging / "state").mkdir(mode=0o700)  # its owner (below) is the sandbox user
            (staging / "logs").mkdir(mode=0o700)
            if uid is not None:
                _chown_tree(staging / "app", uid)
                _chown_tree(staging / "state", uid)
            instance.save(staging)
            os.rename(staging, self._root / instance.deployment_id)
        except (OSError, shutil.Error) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeFailure(f"cannot create instance {instance.deployment_id}: {exc}") from exc

    def _spawn(self, instance: _Instance, spec: RuntimeSpec) -> subprocess.Popen[bytes]:
        self._check_sandbox()
        directory = self._root / instance.deployment_id
        for name in ("phase", "exit_code"):  # a start retried after a failure starts afresh
            with contextlib.suppress(FileNotFoundError):
                (directory / "state" / name).unlink()
        cgroups = self._limits()
        if instance.cgroups:  # a fresh cgroup (its OOM counter starts at 0)
            _cgroup_remove(instance.cgroups)
        with self._lock():
            port, address = self._claim(instance.deployment_id)
            try:
                try:
                    cgroup_dirs = self._create_cgroups(cgroups, instance.deployment_id, spec)
                except OSError as exc:
                    raise RuntimeFailure(f"cannot set up the cgroup: {exc}") from exc
                proc = self._popen(directory, spec, port, cgroup_dirs)
            except RuntimeFailure:
                if self._network is not None:
                    self._network.detach(instance.deployment_id)
                raise
            instance.pid = proc.pid
            instance.create_time = _create_time(proc.pid)
            instance.port = port
            instance.address = address
            instance.started_at = _now().isoformat()
            instance.sandbox = "bubblewrap" if self._bwrap else "unsandboxed"
            instance.user = self._app_user(spec.project_id)
            instance.limits = cgroups.label if cgroups else "rlimit"
            instance.cgroups = cgroup_dirs
            instance.stopped = False
            instance.save(directory)
        return proc

    def _create_cgroups(
        self, cgroups: _Cgroups | None, instance_id: str, spec: RuntimeSpec
    ) -> dict[str, str]:
        """The app's cgroups, plus the build stage's own (keys prefixed `build:`) when the
        spec has a build phase."""
        if cgroups is None:
            return {}
        dirs = cgroups.create(instance_id, _Limits.of(spec, build=False))
        if _has_build(spec):
            build = cgroups.create(f"{instance_id}-build", _Limits.of(spec, build=True))
            dirs |= {_BUILD + ctrl: path for ctrl, path in build.items()}
        return dirs

    def _popen(
        self, directory: Path, spec: RuntimeSpec, port: int, cgroup_dirs: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        stages: dict[str, Any] = {"build": None}
        if _has_build(spec):
            stages["build"] = self._stage(directory, spec, cgroup_dirs, build=True)
        stages["run"] = self._stage(directory, spec, cgroup_dirs, build=False)
        stages_file = directory / "stages.json"
        stages_file.write_text(json.dumps(stages))
        stages_file.chmod(0o600)
        argv = [sys.executable, "-I", str(_DRIVER), str(directory)]
        app_dir, state_dir = "/app", "/devpush/state"
        if not self._bwrap:
            app_dir, state_dir = str(directory / "app"), str(directory / "state")
        isolated = self._network is not None
        env = _app_env(spec, port=port, app_dir=app_dir, state_dir=state_dir, isolated=isolated)
        if self._ca_bundle is not None:
            ca = _CA_PATH if self._bwrap else str(self._ca_bundle)
            env.update({name: ca for name in CA_ENV})
        if self._cache_dir is not None and not self._bwrap:  # the caches' real path
            real = str(self._cache_dir / spec.project_id)
            env = {
                k: real + v[len(_CACHE_PATH) :] if v.startswith(_CACHE_PATH) else v
                for k, v in env.items()
            }
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        stdout = os.open(directory / "logs" / "stdout.log", flags, 0o600)
        stderr = os.open(directory / "logs" / "stderr.log", flags, 0o600)
        try:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=directory / "app",
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,  # its own session: the app outlives the worker
            )
        except (OSError, ValueError) as exc:
            if cgroup_dirs:
                _cgroup_remove(cgroup_dirs)
            raise RuntimeFailure(f"cannot start instance {directory.name}: {exc}") from exc
        finally:
            os.close(stdout)
            os.close(stderr)

    def _stage(
        self, directory: Path, spec: RuntimeSpec, cgroup_dirs: dict[str, str], *, build: bool
    ) -> dict[str, Any]:
        """One stage for driver.py: the cgroup.procs files to join and the argv to run."""
        limits = _Limits.of(spec, build=build)
        prefix = _BUILD if build else ""
        own = {k.removeprefix(prefix) for k in cgroup_dirs if k.startswith(_BUILD) == build}
        procs = sorted({str(Path(cgroup_dirs[prefix + c]) / "cgroup.procs") for c in own})
        argv = self._network.enter(directory.name) if self._network is not None else []
        if not cgroup_dirs and limits.memory_mb and self._prlimit:
            argv += [self._prlimit, f"--data={limits.memory_mb * MiB}", "--"]
        mode = "build" if build else "run"
        if self._bwrap:
            argv += self._bwrap_argv(directory, spec, limits)
            argv += ["/bin/sh", "/devpush/entrypoint.sh", mode]
        else:
            argv += ["/bin/sh", str(ENTRYPOINT), mode]
        return {"cgroups": procs, "argv": argv}

    def _bwrap_argv(self, directory: Path, spec: RuntimeSpec, limits: _Limits) -> _Argv:
        """bubblewrap up to (not including) the command it runs."""
        assert self._bwrap is not None
        argv = [self._bwrap, *self._namespace_flags()]
        visible: list[Path] = []
        for name in _SYSTEM_DIRS:
            path = Path(name)
            if path.is_symlink():  # merged /usr: /bin -> usr/bin
                argv += ["--symlink", os.readlink(path), name]
            elif path.is_dir():
                argv += ["--ro-bind", name, name]
                visible.append(path.resolve())
        argv += ["--perms", "0755", "--dir", "/etc"]
        for entry in [*_ETC_ENTRIES, *sorted(p.name for p in Path("/etc").glob("python3*"))]:
            argv += ["--ro-bind-try", f"/etc/{entry}", f"/etc/{entry}"]
            visible.append(Path("/etc", entry).resolve())
        if self._network is not None and self._network.resolv_conf != Path("/etc/resolv.conf"):
            argv += ["--ro-bind", str(self._network.resolv_conf), "/etc/resolv.conf"]
        argv += ["--proc", "/proc", "--dev", "/dev"]
        if limits.memory_mb:  # /tmp is memory: cap it too (cgroups charge it, rlimits do not)
            argv += ["--size", str(limits.memory_mb * MiB)]
        argv += ["--perms", "01777", "--tmpfs", "/tmp"]
        argv += _mask_protected(self._protected, visible)
        argv += ["--bind", str(directory / "app"), "/app"]
        argv += ["--perms", "0755", "--dir", "/devpush"]
        argv += ["--bind", str(directory / "state"), "/devpush/state"]
        argv += ["--ro-bind", str(ENTRYPOINT), "/devpush/entrypoint.sh"]
        files = {**self._tools, **spec.support_files}
        for parent in sorted({str(Path(name).parent) for name in files} - {"."}):
            argv += ["--perms", "0755", "--dir", f"/devpush/{parent}"]  # else bwrap makes 0700
        for name, path in files.items():
            argv += ["--ro-bind", str(path), f"/devpush/{name}"]
        if self._ca_bundle is not None:
            argv += ["--ro-bind", str(self._ca_bundle), _CA_PATH]
        if self._cache_dir is not None:
            argv += ["--bind", str(self._cache_dir / spec.project_id), _CACHE_PATH]
        if self._trees_dir is not None:
            argv += ["--bind", str(self._trees_dir / spec.project_id), "/devpush/trees"]
        argv += self._toolchains.sandbox_args()
        argv += ["--chdir", "/app", *self._drop_privileges(self._app_uid(spec.project_id))]
        return argv

    def _namespace_flags(self) -> _Argv:
        # --as-pid-1: the entrypoint is the namespace's init, so nothing in the sandbox can
        # outlive it. No --die-with-parent: the app must outlive the worker that started it.
        flags = ["--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts"]
        flags += ["--hostname", "devpush", "--unshare-cgroup-try", "--new-session"]
        if self._privileged:  # just enough for setpriv to drop to the app's uid, then nothing
            flags += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
            flags += ["--cap-add", "CAP_SETPCAP"]
        else:
            flags += ["--unshare-user", "--disable-userns"]
        return flags

    def _drop_privileges(self, uid: int | None) -> _Argv:
        if not self._privileged or uid is None:
            return []
        assert self._setpriv is not None
        ids = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        caps = ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        return [self._setpriv, *ids, *caps, "--"]

    def _claim(self, instance_id: str) -> tuple[int, str | None]:
        """A port, and when isolated an address with its namespace, that no other instance
        holds (under the lock)."""
        others: list[_Instance] = []
        for entry in self._root.iterdir():
            if entry.name != instance_id and _ID.fullmatch(entry.name):
                with contextlib.suppress(RuntimeFailure):
                    others += filter(None, [_Instance.load(entry)])
        port = self._free_port({other.port for other in others if other.port})
        if self._network is None:
            return port, None
        self._network.ensure_once()
        addresses = {other.address for other in others if other.address}
        return port, self._network.attach(instance_id, addresses)

    def _free_port(self, taken: set[int]) -> int:
        """A port not promised to another instance, and free on 127.0.0.1 unless isolated
        (each namespace has all ports to itself)."""
        low, high = self._port_range
        # A random start spreads ports out, so a just-freed port is rarely handed out again
        # while a stale proxy route may still point at it.
        count = high - low + 1
        first = random.randrange(count)
        for offset in range(count):
            port = low + (first + offset) % count
            if port not in taken and (self._network is not None or _port_is_free(port)):
                return port
        raise RuntimeFailure(f"no free port left in {low}-{high} on 127.0.0.1")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serializes port choices across workers sharing this root."""
        with open(self._root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- sandbox and limits --------------------------------------------------------------------

    def _require_sandbox(self) -> None:
        if self._network_refusal is not None:
            raise RuntimeFailure(self._network_refusal)
        if self._uid_refusal is not None:
            raise RuntimeFailure(self._uid_refusal)
        if self._bwrap is None and not self._allow_unsandboxed:
            raise RuntimeFailure(NO_BWRAP_MESSAGE)
        if self._bwrap and self._privileged and self._setpriv is None:
            raise RuntimeFailure(
                "setpriv (package 'util-linux') is needed to run apps as an unprivileged user"
            )

    def _check_sandbox(self) -> None:
        """Once: can bubblewrap really build the sandbox here (namespaces, privilege drop)?"""
        if self._bwrap is None or self._sandbox_checked:
            return
        argv = [self._bwrap, *self._namespace_flags(), "--ro-bind", "/", "/"]
        argv += ["--proc", "/proc", "--dev", "/dev", *self._drop_privileges(self._uids.base)]
        argv += ["true"]
        result = _run(argv)
        if result.returncode != 0:
            raise RuntimeFailure(
                f"bubblewrap cannot create a sandbox on this machine: {result.stderr.strip()}"
            )
        self._sandbox_checked = True

    def _limits(self) -> _Cgroups | None:
        if not self._cgroups_detected:
            if self._cgroup_root is not None:
                self._cgroups = _detect_cgroups(self._cgroup_root)
            self._cgroups_detected = True
        return self._cgroups

    def _app_user(self, project_id: str | None = None) -> str:
        if not (self._bwrap and self._privileged):
            return f"{os.geteuid()}:{os.getegid()} (the worker's: no per-project uids without root)"
        if project_id is None:
            return f"per project, from uids {self._uids.base}-{self._uids.last}"
        uid = self._app_uid(project_id)
        return f"{uid}:{uid}"

    # -- per-project uids ----------------------------------------------------------------------

    def _own_uid(self, project_id: str) -> int | None:
        """Under the lock: the project's uid (None: the worker's own, no per-project uids),
        and its package cache and kept trees, made its own. A directory another uid owns (an
        older version's, when every app ran as nobody) is only a cache: it is made afresh."""
        uid = self._uids.assign(project_id) if self._bwrap and self._privileged else None
        for parent in filter(None, (self._cache_dir, self._trees_dir)):
            parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            if uid is not None and parent.stat().st_uid != os.geteuid():
                for name in _OLD_CACHES:  # an older version's, which every project shared
                    shutil.rmtree(parent / name, ignore_errors=True)
                os.chown(parent, os.geteuid(), os.getegid())  # else its owner swaps projects'
            own = parent / project_id
            if uid is not None and own.is_dir() and own.stat().st_uid != uid:
                shutil.rmtree(own)
            if not own.is_dir():
                own.mkdir(mode=0o700)
                if uid is not None:
                    os.chown(own, uid, uid)
        return uid

    def _app_uid(self, project_id: str) -> int | None:
        if not (self._bwrap and self._privileged):
            return None
        uid = self._uids.get(project_id)
        if uid is None:
            raise RuntimeFailure(f"project {project_id} has no uid (forgotten?); create it again")
        return uid

    def _forget(self, project_id: str) -> None:
        for parent in filter(None, (self._cache_dir, self._trees_dir)):
            shutil.rmtree(parent / project_id, ignore_errors=True)
        if not self._root.is_dir():
            return
        with self._lock():  # the uid stays the project's while an instance of it is left
            for entry in self._root.iterdir():
                if entry.is_dir() and _ID.fullmatch(entry.name):
                    with contextlib.suppress(RuntimeFailure):
                        instance = _Instance.load(entry)
                        if instance is not None and instance.project_id == project_id:
                            return
            self._uids.release(project_id)

    # -- processes -----------------------------------------------------------------------------

    def _process(self, instance: _Instance) -> psutil.Process | None:
        """The instance's root process if it still runs (same pid and start time, no zombie)."""
        if instance.pid is None or instance.create_time is None:
            return None
        try:
            proc = psutil.Process(instance.pid)
            if abs(proc.create_time() - instance.create_time) > 0.01:
                return None  # the pid was reused
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None

    def _alive(self, instance_id: str) -> bool:
        instance = self._load(instance_id)
        return instance is not None and self._process(instance) is not None

    def _stop(self, instance: _Instance, timeout: float) -> None:
        root = self._process(instance)
        if root is not None:
            instance.stopped = True
            instance.save(self._root / instance.deployment_id)
            if instance.sandbox == "unsandboxed":  # also what left the tree but kept the group
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(root.pid, signal.SIGTERM)
        # The tree is looked at again and again: a process born after the first SIGTERM (the
        # entrypoint moving on to the next phase) gets its own SIGTERM too.
        seen: set[psutil.Process] = set()
        signalled: set[psutil.Process] = set()
        deadline = time.monotonic() + timeout
        while True:
            seen.update(_instance_processes(root, instance.cgroups))
            alive = [proc for proc in seen if _is_alive(proc)]
            if not alive or time.monotonic() >= deadline:
                break
            for proc in alive:
                # bwrap's outer process leaves by itself once the sandbox's init (the
                # entrypoint) has gone; unsandboxed, the root process is the entrypoint.
                if proc not in signalled and (proc != root or instance.sandbox == "unsandboxed"):
                    _signal(proc, signal.SIGTERM)
                    signalled.add(proc)
            time.sleep(0.02)
        for proc in alive:
            _signal(proc, signal.SIGKILL)
        if instance.cgroups:
            _cgroup_kill(instance.cgroups)
        survivors = _wait_gone(alive, 5.0)
        if self._network is not None:
            self._network.detach(instance.deployment_id)
        if survivors:
            pids = sorted(proc.pid for proc in survivors)
            raise RuntimeFailure(f"processes {pids} of {instance.deployment_id} survived SIGKILL")

    # -- files ---------------------------------------------------------------------------------

    def _load(self, instance_id: str) -> _Instance | None:
        return _Instance.load(self._root / instance_id)

    def _delete(self, instance_id: str, instance: _Instance | None) -> None:
        directory = self._root / instance_id
        if directory.exists():
            # Renamed first so that a crash mid-delete leaves no half instance behind.
            trash = self._root / f".trash-{instance_id}-{secrets.token_hex(4)}"
            os.rename(directory, trash)
            shutil.rmtree(trash)
        if instance is not None and instance.cgroups:
            _cgroup_remove(instance.cgroups)
        if self._network is not None:
            self._network.detach(instance_id)

    def _list(self) -> _Handles:
        handles = []
        for entry in sorted(self._root.iterdir()) if self._root.is_dir() else []:
            if _is_leftover(entry):
                shutil.rmtree(entry, ignore_errors=True)
            if not entry.is_dir() or not _ID.fullmatch(entry.name):
                continue
            try:
                instance = _Instance.load(entry)
            except RuntimeFailure:
                instance = None
            handles.append(self._handle(instance) if instance else self._bare_handle(entry.name))
        if self._network is not None:  # re-applied: a firewall reload may have flushed it
            self._network.ensure()
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._lock():  # a namespace is made under it, for an existing directory
                self._network.sweep({entry.name for entry in self._root.iterdir()})
        return handles

    def _listening(self, instance: _Instance) -> _Ports:
        procs = _instance_processes(self._process(instance), instance.cgroups)
        if self._network is None or instance.address is None:
            return _listening(procs)
        return self._network.listening(instance.deployment_id, [proc.pid for proc in procs])

    def _handle(self, instance: _Instance) -> RuntimeHandle:
        host = instance.address or "127.0.0.1"
        upstream = f"{host}:{instance.port}" if instance.port and instance.pid else None
        directory = self._root / instance.deployment_id
        return RuntimeHandle(
            backend=self.name,
            id=instance.deployment_id,
            deployment_id=instance.deployment_id,
            upstream=upstream,
            data={"dir": str(directory), "pid": instance.pid, "port": instance.port},
        )

    def _bare_handle(self, instance_id: str) -> RuntimeHandle:
        return RuntimeHandle(backend=self.name, id=instance_id, deployment_id=instance_id)


# ---------------------------------------------------------------------------------------------
# helpers


def _app_env(
    spec: RuntimeSpec, *, port: int, app_dir: str, state_dir: str, isolated: bool
) -> dict[str, str]:
    """The app's whole environment: never the worker's own (it holds the platform's secrets).
    Isolated, the app is reached at its own address, so it listens on every interface."""
    env = {"PATH": _PATH, "HOME": app_dir, "LANG": "C.UTF-8"}
    env |= entrypoint_env(spec, spec.env)
    env.update(PORT=str(port), DEVPUSH_APP_DIR=app_dir, DEVPUSH_STATE_DIR=state_dir)
    if isolated:
        env["HOST"] = "0.0.0.0"
    return env


def _mask_protected(protected: list[Path], visible: list[Path]) -> list[str]:
    """bwrap arguments hiding each protected path that lies inside a visible host directory."""
    argv: list[str] = []
    for path in protected:
        real = path.resolve()
        if not any(real.is_relative_to(root) for root in visible) or not real.exists():
            continue
        if real.is_dir():
            argv += ["--tmpfs", str(real)]
        else:
            argv += ["--ro-bind", "/dev/null", str(real)]
    return argv


def _reap_when_done(proc: subprocess.Popen[bytes]) -> None:
    """Reaps the child when it exits, without a thread per app (apps run for months)."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:  # no pidfd (Linux < 5.3, seccomp): a thread does the waiting
        threading.Thread(target=proc.wait, daemon=True).start()
        return

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        proc.poll()

    loop.add_reader(pidfd, reap)


def _instance_processes(
    root: psutil.Process | None, cgroups: dict[str, str]
) -> list[psutil.Process]:
    procs: dict[int, psutil.Process] = {}
    if root is not None:
        procs[root.pid] = root
        with contextlib.suppress(psutil.Error):
            procs.update((child.pid, child) for child in root.children(recursive=True))
    for pid in _cgroup_members(cgroups):
        if pid not in procs:
            with contextlib.suppress(psutil.Error):
                procs[pid] = psutil.Process(pid)
    return list(procs.values())


def _kill_strays(directory: Path) -> None:
    """SIGKILL every process working inside `directory`, with its descendants."""
    inside = str(directory.resolve()) + os.sep
    strays: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cwd"]):
        if ((proc.info.get("cwd") or "") + os.sep).startswith(inside):
            strays[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                strays.update((child.pid, child) for child in proc.children(recursive=True))
    for proc in strays.values():
        _signal(proc, signal.SIGKILL)
    _wait_gone(list(strays.values()), 5.0)


def _signal(proc: psutil.Process, signum: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):  # psutil refuses reused pids itself
        proc.send_signal(signum)


def _is_alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        alive = [proc for proc in procs if _is_alive(proc)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _read_state_file(path: Path) -> str | None:
    """Reads a file the app can write to: no symlink, no FIFO, no more than a few bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 64).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)


def _read_phase(state_dir: Path) -> Phase | None:
    value = _read_state_file(state_dir / "phase")
    return Phase(value) if value in _PHASES else None


def _read_exit_code(state_dir: Path) -> int | None:
    value = _read_state_file(state_dir / "exit_code")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _is_leftover(entry: Path) -> bool:
    """Left by a crash: a `.trash-*` directory (mid-delete) or an old `.new-*` (mid-create)."""
    if entry.name.startswith(".trash-"):
        return True
    if entry.name.startswith(".new-"):
        with contextlib.suppress(FileNotFoundError):
            return time.time() - entry.stat().st_mtime > _STALE_STAGING
    return False


def _chown_tree(top: Path, uid: int) -> None:
    """Hand `top` to the sandbox's user as its only reader (group and other bits go: a tree
    extracted from git keeps 0644 whatever the umask)."""
    _own_privately(str(top), uid)
    for directory, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            _own_privately(os.path.join(directory, name), uid)


def _own_privately(path: str, uid: int) -> None:
    os.lchown(path, uid, uid)
    mode = os.lstat(path).st_mode
    if not stat.S_ISLNK(mode) and mode & 0o077:
        os.chmod(path, stat.S_IMODE(mode) & 0o700)


def _check_id(instance_id: str) -> str:
    if not _ID.fullmatch(instance_id):
        raise RuntimeFailure(f"{instance_id!r} is not a valid instance id")
    return instance_id


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            env={"PATH": _PATH},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeFailure(f"{argv[0]} failed: {exc}") from exc


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _now() -> datetime:
    return datetime.now(UTC)


def _has_build(spec: RuntimeSpec) -> bool:
    return bool(spec.install_command or spec.build_command or spec.pre_deploy_command)


def _listening(procs: list[psutil.Process]) -> list[int]:
    """The TCP ports the instance's processes listen on (on the host network)."""
    pids = {proc.pid for proc in procs}
    try:
        connections = psutil.net_connections("tcp")
    except (psutil.Error, OSError):
        return []
    ports = {
        c.laddr.port
        for c in connections
        if c.pid in pids and c.status == "LISTEN" and isinstance(c.laddr, tuple) and c.laddr
    }
    return sorted(ports)
