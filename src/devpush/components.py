"""The platform's long-running components: the web app, the worker and the monitor.

Each sets the private umask (077) first: what they write under the data directory is theirs
alone, and what the process runtime's sandbox must read is opened with explicit modes.

`devpush app|worker|monitor` start here without loading the command-line interface (typer,
rich and click add some megabytes to every one of these processes for nothing)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

# httpx imports its optional command-line client (click, rich, pygments) whenever those are
# installed, as they are here for the CLI. No component uses it; a None entry makes that
# import fail, and httpx then skips it as it does when they are missing.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def run_app() -> None:
    """Run the web app (API, pages, webhooks, SSE)."""
    import uvicorn

    from devpush.appserver import serve
    from devpush.embedded.private import set_private_umask
    from devpush.settings import get_settings

    set_private_umask()
    settings = get_settings()
    config = uvicorn.Config(
        "devpush.app:create_app",
        factory=True,
        host=settings.app_host,
        port=settings.app_port,
        workers=settings.workers,
        # By name, not "auto": a missing uvloop or httptools fails the start instead of
        # quietly falling back to the slower asyncio loop and h11 (pyproject.toml requires both).
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="warning",
        access_log=False,
    )
    serve(config)  # several workers: each on a socket of its own (appserver.py)


def run_worker() -> None:
    """Run the arq worker that executes deployment and cleanup jobs."""
    from devpush.embedded.private import set_private_umask
    from devpush.settings import get_settings
    from devpush.workers.jobs import ResilientWorker, worker_settings

    set_private_umask()
    ResilientWorker(**worker_settings(get_settings())).run()


def run_monitor() -> None:
    """Run the monitor: readiness probes, exits, timeouts, log shipping, reconciliation."""
    from devpush.bootstrap import build_platform
    from devpush.embedded.private import set_private_umask
    from devpush.logsetup import configure_logging
    from devpush.settings import get_settings
    from devpush.workers.monitor import run_monitor as monitor_loop

    set_private_umask()
    settings = get_settings()
    configure_logging(settings)

    async def main() -> None:
        platform = await build_platform(settings)
        try:
            await monitor_loop(platform)  # it refreshes its heartbeat (workers/liveness.py)
        finally:
            await platform.close()

    asyncio.run(main())


COMPONENTS: dict[str, Callable[[], None]] = {
    "app": run_app,
    "worker": run_worker,
    "monitor": run_monitor,
}
