"""Port checks for `devpush up`: whether a port answers, whether a listener could bind it, who
holds it, and waiting until a starting child is ready."""

from __future__ import annotations

import errno
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from devpush.errors import ConfigError


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def port_free(host: str, port: int) -> bool:
    """Whether a listener can bind `host:port` now (SO_REUSEADDR, as servers set it, so a
    closed connection still in TIME_WAIT does not count as in use)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def port_holder(port: int) -> str:
    """The program listening on `port`, as far as this user may see it."""
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid:
                    return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except psutil.Error:
        pass
    return "another program"


def wait_for(
    check: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[bytes],
    log: Path | None,
    timeout: float = 60,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise ConfigError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        time.sleep(0.1)
    raise ConfigError(f"{what} did not become ready within {timeout:.0f}s")
