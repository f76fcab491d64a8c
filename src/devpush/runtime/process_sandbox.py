"""The process runtime's sandbox: how an instance is launched (the driver's stages), the
bubblewrap argv that confines it, the environment it gets, and the uid it runs as."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from devpush.errors import RuntimeFailure
from devpush.runtime import uids, volumes
from devpush.runtime.base import CA_ENV, ENTRYPOINT, RuntimeSpec, entrypoint_env
from devpush.runtime.netns import Network
from devpush.runtime.process_limits import BUILD, Limits, MiB, cgroup_remove, has_build
from devpush.runtime.toolchains import Toolchains

NO_BWRAP_MESSAGE = (
    "bubblewrap (bwrap) is not installed, so the process runtime cannot sandbox apps; "
    "install the 'bubblewrap' package, or set DEVPUSH_ALLOW_UNSANDBOXED=1 to run apps unsandboxed"
)
_PATH = "/devpush/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What python3, node and sh need from /etc (plus /etc/python3*); the rest of /etc (platform
# config) stays hidden. Top-level entries only: bwrap would create a nested one's parents 0700.
_ETC_ENTRIES = (
    "alternatives ca-certificates gai.conf group host.conf hosts ld.so.cache ld.so.conf"
    " ld.so.conf.d localtime mime.types nsswitch.conf os-release passwd protocols resolv.conf"
    " services ssl"
).split()
_DRIVER = Path(__file__).with_name("driver.py")
# Where the CA bundle and caches appear inside the sandbox (runtime/base.py: CA_ENV).
_CA_PATH = "/devpush/ca.crt"
_CACHE_PATH = "/devpush/cache"
_OLD_CACHES = ("uv", "npm", "pnpm", "yarn", "corepack")  # cache_dir's entries before uids.py


class SandboxMixin:
    """ProcessRuntime's sandboxing half: the launch of an instance, bubblewrap's argv and the
    privilege drop to the project's uid. ProcessRuntime.__init__ sets the attributes below."""

    _bwrap: str | None
    _setpriv: str | None
    _prlimit: str | None
    _privileged: bool
    _allow_unsandboxed: bool
    _sandbox_checked: bool
    _protected: list[Path]
    _tools: dict[str, Path]
    _toolchains: Toolchains
    _ca_bundle: Path | None
    _cache_dir: Path | None
    _trees_dir: Path | None
    _volumes_dir: Path
    _network: Network | None
    _network_refusal: str | None
    _uids: uids.ProjectUids
    _uid_refusal: str | None

    def _popen(
        self, directory: Path, spec: RuntimeSpec, port: int, cgroup_dirs: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        stages: dict[str, Any] = {"build": None}
        if has_build(spec):
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
                cgroup_remove(cgroup_dirs)
            raise RuntimeFailure(f"cannot start instance {directory.name}: {exc}") from exc
        finally:
            os.close(stdout)
            os.close(stderr)

    def _stage(
        self, directory: Path, spec: RuntimeSpec, cgroup_dirs: dict[str, str], *, build: bool
    ) -> dict[str, Any]:
        """One stage for driver.py: the cgroup.procs files to join and the argv to run."""
        limits = Limits.of(spec, build=build)
        prefix = BUILD if build else ""
        own = {k.removeprefix(prefix) for k in cgroup_dirs if k.startswith(BUILD) == build}
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

    def _bwrap_argv(self, directory: Path, spec: RuntimeSpec, limits: Limits) -> list[str]:
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
        argv += self._volume_args(directory, spec)
        argv += ["--chdir", "/app", *self._drop_privileges(self._app_uid(spec.project_id))]
        return argv

    def _volume_args(self, directory: Path, spec: RuntimeSpec) -> list[str]:
        """Each volume's host directory bound read-write at its mount path, owned by the app:
        the environment's copy (runtime/volumes.py), or a preview's scratch directory inside
        the instance, which goes with it."""
        uid = self._app_uid(spec.project_id)
        owner = os.geteuid() if uid is None else uid
        argv: list[str] = []
        for volume in spec.volumes:
            if volume.environment_id is None:
                host = directory / "scratch" / volume.name
                host.mkdir(parents=True, exist_ok=True)
                os.chown(host, owner, owner)
            else:
                host = volumes.ensure(self._volumes_dir, spec.project_id, volume, owner, owner)
            for parent in reversed(Path(volume.mount_path).parents[:-1]):
                argv += ["--perms", "0755", "--dir", str(parent)]  # else bwrap makes 0700
            argv += ["--bind", str(host), volume.mount_path]
        return argv

    def _namespace_flags(self) -> list[str]:
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

    def _drop_privileges(self, uid: int | None) -> list[str]:
        if not self._privileged or uid is None:
            return []
        assert self._setpriv is not None
        ids = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        caps = ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        return [self._setpriv, *ids, *caps, "--"]

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
        result = run(argv)
        if result.returncode != 0:
            raise RuntimeFailure(
                f"bubblewrap cannot create a sandbox on this machine: {result.stderr.strip()}"
            )
        self._sandbox_checked = True

    def _app_user(self, project_id: str | None = None) -> str:
        if not (self._bwrap and self._privileged):
            return f"{os.geteuid()}:{os.getegid()} (the worker's: no per-project uids without root)"
        if project_id is None:
            return f"per project, from uids {self._uids.base}-{self._uids.last}"
        uid = self._app_uid(project_id)
        return f"{uid}:{uid}"

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


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
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
