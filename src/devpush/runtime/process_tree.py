"""The OS processes of a process-runtime instance: finding, signalling and reaping them, and
the ports they listen on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil

from devpush.errors import RuntimeFailure
from devpush.runtime.netns import Network
from devpush.runtime.process_files import Instance
from devpush.runtime.process_limits import cgroup_kill, cgroup_members


def root_process(instance: Instance) -> psutil.Process | None:
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


def stop_instance(
    instance: Instance, timeout: float, *, directory: Path, network: Network | None
) -> None:
    root = root_process(instance)
    if root is not None:
        instance.stopped = True
        instance.save(directory)
        if instance.sandbox == "unsandboxed":  # also what left the tree but kept the group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(root.pid, signal.SIGTERM)
    # The tree is looked at again and again: a process born after the first SIGTERM (the
    # entrypoint moving on to the next phase) gets its own SIGTERM too.
    seen: set[psutil.Process] = set()
    signalled: set[psutil.Process] = set()
    deadline = time.monotonic() + timeout
    while True:
        seen.update(instance_processes(root, instance.cgroups))
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
        cgroup_kill(instance.cgroups)
    survivors = _wait_gone(alive, 5.0)
    if network is not None:
        network.detach(instance.name)
    if survivors:
        pids = sorted(proc.pid for proc in survivors)
        raise RuntimeFailure(f"processes {pids} of {instance.deployment_id} survived SIGKILL")


def reap_when_done(proc: subprocess.Popen[bytes]) -> None:
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


def instance_processes(
    root: psutil.Process | None, cgroups: dict[str, str]
) -> list[psutil.Process]:
    procs: dict[int, psutil.Process] = {}
    if root is not None:
        procs[root.pid] = root
        with contextlib.suppress(psutil.Error):
            procs.update((child.pid, child) for child in root.children(recursive=True))
    for pid in cgroup_members(cgroups):
        if pid not in procs:
            with contextlib.suppress(psutil.Error):
                procs[pid] = psutil.Process(pid)
    return list(procs.values())


def kill_strays(directory: Path) -> None:
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


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening_ports(procs: list[psutil.Process]) -> list[int]:
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
