"""Serving the web app with uvicorn: one process, or several that share the work evenly.

Uvicorn's own workers share one listening socket, and whichever worker wakes first accepts
every connection waiting: a burst of connections (a load balancer's keep-alive pool, a
client's ten) can all land on one worker while the others idle. Measured with
bench/control_plane.py on 2 cores and 2 workers: 410 list requests a second when one worker
held all ten connections, 550-610 when they were split.

So each worker listens on a socket of its own, bound to the same address with SO_REUSEPORT,
and the kernel spreads new connections across them. Uvicorn's supervisor still starts,
watches and restarts the workers; a restarted worker binds its socket anew. The parent keeps
the address bound (never listening, so it is handed no connection) from the start to the
end: a port another program holds fails the start at once, and none can take it while a
worker restarts.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class PerWorkerSocket:
    """Stands in the supervisor's socket list for the address: pickled into each worker it
    arrives there as a socket of that worker's own (`bind`), which uvicorn listens on."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def __reduce__(self) -> tuple[Any, tuple[str, int]]:
        return bind, (self.host, self.port)


def serve(config: uvicorn.Config) -> None:
    """Run `config` (an app given as an import string) in `config.workers` processes."""
    if config.workers <= 1:
        server = uvicorn.Server(config)
        server.run()
        if not server.started:  # as uvicorn.run: the launcher tells a failed start by it
            sys.exit(STARTUP_FAILURE)
        return
    try:
        held = bind(config.host, config.port)
    except OSError as exc:
        print(f"error: cannot bind {config.host}:{config.port}: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    try:
        listener: Any = PerWorkerSocket(config.host, config.port)
        Multiprocess(config, sockets=[listener]).run()
    finally:
        held.close()
