"""Network isolation benchmark: what an instance's own network namespace costs a request.

Runs one small static site (devpush's production static server, a 2 kB index.html) on the
process runtime twice in the same run: on the host network at 127.0.0.1
(DEVPUSH_NETWORK_ISOLATION=off) and in its own namespace behind the devpush0 bridge, reached at
its veth address (=on). `wrk` drives each upstream directly (no Traefik) at --connections (8)
and at 1 (latency without queueing in the Python server), over keep-alive, in interleaved
rounds so that drift on a shared machine hits both alike. Each table shows the median of the
rounds: requests/s, p50 and p99, the app's CPU time per request, and isolated against direct
as a ratio and in added milliseconds; then the goal (at most 0.2 ms more at p50, no
throughput lost, at 8 connections). Needs root, bubblewrap, iproute2 and nftables; `wrk`
is installed with apt-get when it is missing.

    .venv/bin/python bench/isolation.py [--rounds 3] [--duration 5] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.control_plane import WRK_SCRIPT, Load, drive, ensure_wrk  # noqa: E402

from devpush.builds import SUPPORT_FILES  # noqa: E402
from devpush.runtime.base import RuntimeHandle, RuntimeSpec  # noqa: E402
from devpush.runtime.process import ProcessRuntime  # noqa: E402

GOAL_ADDED_P50_MS = 0.2
MODES = ("off", "on")
LABELS = {"off": "direct (host network, 127.0.0.1)", "on": "isolated (netns + veth)"}


async def wait_ready(handle: RuntimeHandle, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                if (await client.get(f"http://{handle.upstream}/")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the app at {handle.upstream} did not answer in {timeout}s")
            await asyncio.sleep(0.05)


async def start(mode: str, work: Path, site: Path) -> tuple[ProcessRuntime, RuntimeHandle]:
    runtime = ProcessRuntime(
        root=work / mode / "runtime",
        protected_paths=[work / mode],
        allow_unsandboxed=False,
        network_isolation="on" if mode == "on" else "off",
    )
    spec = RuntimeSpec(
        deployment_id=f"bench-{mode}",
        project_id="bench",
        source_dir=site,
        start_command="python3 /devpush/static_server.py public",
        env={"HOST": "127.0.0.1"},  # what flows.py sets; the isolated runtime overrides it
        support_files=dict(SUPPORT_FILES),
    )
    handle = await runtime.start(await runtime.create(spec))
    await wait_ready(handle)
    return runtime, handle


def row(name: str, loads: list[Load]) -> tuple[str, float, float, float, float, int]:
    med = statistics.median
    return (
        name,
        med(x.rps for x in loads),
        med(x.p50_ms for x in loads),
        med(x.p99_ms for x in loads),
        med(x.cpu_ms["app"] for x in loads),
        sum(x.errors for x in loads),
    )


def table(connections: int, loads: dict[str, list[Load]]) -> tuple[float, float]:
    """Prints one table; returns the p50 added by isolation (ms) and the req/s ratio."""
    header = f"{'upstream':<36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'app CPU ms/req':>15}"
    print(f"\n{connections} connection{'s' if connections > 1 else ''}")
    print(header + f" {'errors':>7}")
    print("-" * (len(header) + 8))
    rows = {mode: row(LABELS[mode], loads[mode]) for mode in MODES}
    for name, rps, p50, p99, cpu, errors in rows.values():
        print(f"{name:<36} {rps:>9.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>15.3f} {errors:>7}")
    direct, isolated = rows["off"], rows["on"]
    added_p50, added_p99 = isolated[2] - direct[2], isolated[3] - direct[3]
    ratio = isolated[1] / direct[1]
    print("-" * (len(header) + 8))
    print(
        f"{'isolated vs direct':<36} {ratio:>8.2f}x {added_p50:>+8.3f} {added_p99:>+8.3f}"
        f" {isolated[4] - direct[4]:>+15.3f}"
    )
    return added_p50, ratio


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: isolation needs it (bwrap drops the app to nobody)")
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="bench-isolation-"))
    site = work / "site"
    (site / "public").mkdir(parents=True)
    (site / "public" / "index.html").write_text("<!doctype html><p>" + "devpush " * 256)
    script = work / "wrk.lua"
    script.write_text(WRK_SCRIPT)

    started: dict[str, tuple[ProcessRuntime, RuntimeHandle]] = {}
    try:
        for mode in MODES:
            started[mode] = await start(mode, work, site)
        conns = [args.connections, 1]  # 1: latency without queueing in the Python server
        loads: dict[tuple[str, int], list[Load]] = {(m, c): [] for m in MODES for c in conns}
        for mode in MODES:  # warm-up: the first connections, page cache, ARP
            _, handle = started[mode]
            drive(wrk, script, f"http://{handle.upstream}/", seconds=1, connections=2)
        for _ in range(args.rounds):
            for connections in conns:
                for mode in MODES:
                    _, handle = started[mode]
                    loads[mode, connections].append(
                        drive(
                            wrk,
                            script,
                            f"http://{handle.upstream}/",
                            seconds=args.duration,
                            connections=connections,
                            trees={"app": int(handle.data["pid"])},
                        )
                    )
    finally:
        for runtime, handle in started.values():
            await runtime.remove(handle)

    print(
        f"\nstatic site, keep-alive, {args.rounds} rounds of {args.duration}s per row (median), "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}"
    )
    added: dict[int, tuple[float, float]] = {}
    for connections in conns:
        added[connections] = table(connections, {m: loads[m, connections] for m in MODES})
    added_p50, ratio = added[args.connections]
    verdict_p50 = "met" if added_p50 <= GOAL_ADDED_P50_MS else "MISSED"
    verdict_rps = "met" if ratio >= 0.95 else "MISSED"
    print(
        f"\ngoal at {args.connections} connections: <= {GOAL_ADDED_P50_MS} ms added at p50: "
        f"{verdict_p50} ({added_p50:+.3f} ms); no throughput loss (within 5% noise): "
        f"{verdict_rps} ({ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
