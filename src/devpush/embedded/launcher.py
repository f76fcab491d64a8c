"""`devpush up`: start every component as a child process, and stop every one of them again.

Children run in their own process groups with PR_SET_PDEATHSIG, so a supervisor that dies
takes its children along; Ctrl-C and SIGTERM stop them in reverse start order.

A port that another program holds stops `up` before it starts anything, with one line naming
the port and its setting (`devpush up` then exits with code 1): otherwise the platform would
talk to that program as if it were its own PostgreSQL, Redis or Traefik.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO

import httpx

from devpush.embedded import private, services
from devpush.embedded.control_file import done_path, read_control
from devpush.embedded.database import prepare_database
from devpush.embedded.ports import port_free, port_holder, port_open, wait_for
from devpush.embedded.services import ChildSpec
from devpush.errors import ConfigError
from devpush.runstate import (
    PlatformState,
    embedded_database_url,
    embedded_redis_url,
    read_state,
    state_path,
    write_state,
)
from devpush.settings import Settings

COMPONENTS = ("db", "redis", "proxy", "app", "worker", "monitor")
ECHOED = ("app", "worker", "monitor")
RESTARTS_PER_MINUTE = 5


def _set_pdeathsig() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setpgid(0, 0)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        components: tuple[str, ...] = COMPONENTS,
        out: IO[str] = sys.stdout,
    ) -> None:
        self.settings = settings
        self.components = components
        self.out = out
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._stopping = threading.Event()
        self._control = threading.Event()
        self.stopped: set[str] = set()
        self.restarts: dict[str, list[float]] = {}
        self.env: dict[str, str] = {}
        self.state = PlatformState(database_url="", redis_url="")
        self._admin_ready = False
        self._echo_lock = threading.Lock()

    # ---- starting ---------------------------------------------------------------------
    def spawn(self, spec: ChildSpec, env: dict[str, str]) -> subprocess.Popen[bytes]:
        assert spec.log is not None
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        echo = spec.name in ECHOED
        logfile = open(spec.log, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            spec.argv,
            env={**env, **spec.env},
            user=spec.user,
            stdout=subprocess.PIPE if echo else logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_set_pdeathsig,  # noqa: PLW1509 - no threads hold locks here
        )
        if echo:
            threading.Thread(
                target=self._echo, args=(spec.name, proc, logfile), daemon=True
            ).start()
        else:
            logfile.close()
        self.children[spec.name] = proc
        return proc

    def _echo(self, name: str, proc: subprocess.Popen[bytes], logfile: IO[bytes]) -> None:
        assert proc.stdout is not None
        with logfile:
            for raw in proc.stdout:
                logfile.write(raw)
                logfile.flush()
                with self._echo_lock:
                    self.out.write(f"{name:>8} | {raw.decode(errors='replace')}")
                    self.out.flush()

    def child_env(self, database_url: str, redis_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env["DEVPUSH_DATA_DIR"] = str(self.settings.data_path)
        env["DEVPUSH_DATABASE_URL"] = database_url
        env["DEVPUSH_REDIS_URL"] = redis_url
        env["PYTHONUNBUFFERED"] = "1"
        # glibc gives each thread (uvicorn's and asyncpg's helpers) its own malloc arena;
        # two are plenty for asyncio processes and keep idle memory down.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        return env

    def start(self) -> PlatformState:
        s = self.settings
        # Private data: a 0700 directory, written under umask 077; one made by an older
        # version (0755, 0644 files) is tightened before anything starts.
        private.set_private_umask()
        private.make_private_dir(s.data_path)
        self._refuse_second_supervisor()
        self._refuse_ports_in_use()
        private.tighten(s.data_path)
        database_url = s.database_url or embedded_database_url(s)
        redis_url = s.redis_url or embedded_redis_url(s)
        self.env = self.child_env(database_url, redis_url)
        self.state = PlatformState(
            database_url=database_url, redis_url=redis_url, supervisor_pid=os.getpid()
        )
        for name in COMPONENTS:
            if name in self.components:
                self.start_component(name)
        return self.state

    def start_component(self, name: str) -> None:
        s = self.settings
        if name == "db" and not s.database_url:
            self.say("starting PostgreSQL (embedded)")
            spec = services.prepare_postgres(s)
            proc = self.spawn(spec, self.env)
            wait_for(lambda: port_open(s.embedded_db_port), "PostgreSQL", proc, spec.log)
            prepare_database(s)
        elif name == "redis" and not s.redis_url:
            self.say("starting Redis (embedded)")
            spec = services.prepare_redis(s)
            proc = self.spawn(spec, self.env)
            wait_for(lambda: port_open(s.embedded_redis_port), "Redis", proc, spec.log)
        elif name == "proxy":
            self.say(f"starting Traefik on port {s.http_port}")
            spec = services.prepare_traefik(s)
            proc = self.spawn(spec, self.env)
            wait_for(lambda: _traefik_ready(s), "Traefik", proc, spec.log)
        elif name == "app":
            self.say("running migrations")
            subprocess.run(
                [sys.executable, "-m", "devpush", "migrate"], env=self.env, check=True, timeout=300
            )
            self._ensure_first_admin()
            self.say("starting app")
            proc = self.spawn(services.platform_child(name, s), self.env)
            wait_for(lambda: _app_ready(s), "the app", proc, None, timeout=90)
        elif name in ("worker", "monitor"):
            self.say(f"starting {name}")
            self.spawn(services.platform_child(name, s), self.env)
        self.stopped.discard(name)
        write_state(s, self._with_children(self.state))

    def stop_component(self, name: str, timeout: float = 15) -> None:
        proc = self.children.pop(name, None)
        self.stopped.add(name)
        if proc is None or proc.poll() is not None:
            return
        self.say(f"stopping {name}")
        _signal_group(proc, signal.SIGINT if name == "db" else signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(5)

    def _with_children(self, state: PlatformState) -> PlatformState:
        state.children = {name: proc.pid for name, proc in self.children.items()}
        s = self.settings
        state.ports = {
            "app": s.app_port,
            "http": s.http_port,
            "db": s.embedded_db_port,
            "redis": s.embedded_redis_port,
        }
        return state

    def _refuse_second_supervisor(self) -> None:
        old = read_state(self.settings)
        if old and old.supervisor_pid and old.supervisor_pid != os.getpid():
            try:
                os.kill(old.supervisor_pid, 0)
            except ProcessLookupError:
                return
            raise ConfigError(
                f"devpush is already running from {self.settings.data_path} "
                f"(pid {old.supervisor_pid}); stop it with `devpush stop` first"
            )

    def _ports(self) -> list[tuple[str, int, str]]:
        """(address, port, setting) of every listener this start will open."""
        s, wanted = self.settings, set(self.components)
        ports: list[tuple[str, int, str]] = []
        if "db" in wanted and not s.database_url:
            ports.append(("127.0.0.1", s.embedded_db_port, "DEVPUSH_EMBEDDED_DB_PORT"))
        if "redis" in wanted and not s.redis_url:
            ports.append(("127.0.0.1", s.embedded_redis_port, "DEVPUSH_EMBEDDED_REDIS_PORT"))
        if "proxy" in wanted:
            ports.append((s.http_host, s.http_port, "DEVPUSH_HTTP_PORT"))
            if s.https_port:
                ports.append((s.http_host, s.https_port, "DEVPUSH_HTTPS_PORT"))
            ports.append(("127.0.0.1", s.traefik_api_port, "DEVPUSH_TRAEFIK_API_PORT"))
        if "app" in wanted:
            ports.append((s.app_host, s.app_port, "DEVPUSH_APP_PORT"))
        return ports

    def _refuse_ports_in_use(self) -> None:
        """Runs after `_refuse_second_supervisor`: a platform already running from this data
        directory is reported as such, not as a port collision."""
        for host, port, setting in self._ports():
            if port_free(host, port):
                continue
            raise ConfigError(
                f"port {port} ({setting}) is in use by {port_holder(port)}; stop it or set "
                f"{setting} to a free port"
            )

    def _ensure_first_admin(self) -> None:
        """The first admin exists before the app answers /health: whoever waits for health
        (a script, `up --detach`) can create a token for it at once."""
        if self._admin_ready:
            return
        from devpush.operations import ensure_admin

        s = self.settings
        settings = s.model_copy(update={"database_url": self.state.database_url})
        asyncio.run(ensure_admin(settings, s.admin_email))
        self._admin_ready = True

    def say(self, message: str) -> None:
        with self._echo_lock:
            self.out.write(f"  devpush | {message}\n")
            self.out.flush()

    # ---- running and stopping -------------------------------------------------------
    def wait(self) -> int:
        """Block until a signal arrives, then stop everything; children that die meanwhile are
        restarted (see `_restart_crashed`).

        SIGUSR1 asks for a component-scoped action written by `devpush start|stop|restart`
        to run/control.json.
        """
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopping.set())
        signal.signal(signal.SIGUSR1, lambda *_: self._control.set())
        while not self._stopping.wait(0.3):
            if self._control.is_set():
                self._control.clear()
                self._run_control()
            for name, proc in list(self.children.items()):
                if proc.poll() is not None and not self._stopping.is_set():
                    self._restart_crashed(name, proc.returncode)
        self.stop()
        return 0

    def _restart_crashed(self, name: str, returncode: int | None) -> bool:
        """Restart a child that died on its own, unless it keeps dying (5 times a minute).

        A component that keeps dying is left stopped, and the others keep running: apps
        already deployed keep being served while the operator looks at it.
        """
        now = time.monotonic()
        recent = [t for t in self.restarts.get(name, []) if now - t < 60] + [now]
        self.restarts[name] = recent
        self.children.pop(name, None)
        if len(recent) > RESTARTS_PER_MINUTE:
            self._leave_stopped(name, f"it keeps exiting (code {returncode})")
            return False
        self.say(f"{name} exited with code {returncode}; restarting it")
        try:
            self.start_component(name)
        except (ConfigError, subprocess.SubprocessError) as exc:
            self._leave_stopped(name, f"it could not be restarted: {exc}")
            return False
        return True

    def _leave_stopped(self, name: str, why: str) -> None:
        self.stopped.add(name)
        self.restarts.pop(name, None)
        write_state(self.settings, self._with_children(self.state))
        self.say(
            f"{name} is left stopped: {why}. The other components keep running; see "
            f"{self.settings.data_path / 'logs' / (name + '.log')}, then run "
            f"`devpush start --components {name}`"
        )

    def _run_control(self) -> None:
        request = read_control(self.settings)
        if request is None:
            return
        action, names, request_id = request
        ordered = [n for n in COMPONENTS if n in names]
        if action in ("stop", "restart"):
            for name in reversed(ordered):
                self.stop_component(name)
        if action in ("start", "restart"):
            for name in ordered:
                if name not in self.children:
                    try:
                        self.start_component(name)
                    except (ConfigError, subprocess.SubprocessError) as exc:
                        self.say(f"could not start {name}: {exc}")
        write_state(self.settings, self._with_children(self.state))
        done_path(self.settings).write_text(request_id)

    def stop(self) -> None:
        # The monitor and the worker first: while the apps stop, the monitor would take each
        # exit for a crash and start it again (an app the platform no longer stops), and the
        # worker could start a new one.
        for name in ("monitor", "worker"):
            self.stop_component(name)
        self.say("stopping deployments run by the process runtime")
        stop_process_instances(self.settings)
        for name in reversed(list(self.children)):
            self.stop_component(name)
        state = read_state(self.settings)
        if state and state.supervisor_pid == os.getpid():
            state_path(self.settings).unlink(missing_ok=True)


def stop_process_instances(settings: Settings) -> None:
    """Apps run by the process runtime are ours too: stop them with the platform."""
    import asyncio

    from devpush.runtime.process import ProcessRuntime

    root = settings.data_path / "runtime" / "process"
    if not root.exists():
        return

    async def stop_all() -> None:
        # All at once: an app that ignores SIGTERM waits out the kill timeout, and one after
        # another a dozen of them held `up` for a minute.
        runtime = ProcessRuntime(root=root, protected_paths=[], allow_unsandboxed=True)
        handles = await runtime.list()
        await asyncio.gather(*(runtime.stop(handle, timeout=5.0) for handle in handles))

    asyncio.run(stop_all())


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _traefik_ready(settings: Settings) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{settings.traefik_api_port}/ping", timeout=1).is_success
    except httpx.HTTPError:
        return False


def _app_ready(settings: Settings) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{settings.app_port}/health", timeout=2).is_success
    except httpx.HTTPError:
        return False
