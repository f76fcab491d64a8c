"""Deploy pipeline benchmark: where the time goes between a push and a live URL.

Deploys a stdlib hello app N times on each runtime against a real `devpush up`, then prints
the median and p90 of each phase, and the platform overhead (push-to-live minus the app's own
boot time) next to the same overhead with the monitor polling every 2 s, as the original
design did. Timings are compared as ratios within one run, since machines are noisy.

    python bench/deploy.py [--runs 20] [--runtimes process,docker]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from tests.e2e.apps import Api, commit, git  # noqa: E402
from tests.e2e.conftest import PODMAN_SOCKET, _podman_ready  # noqa: E402
from tests.e2e.platform import platform_env, start_platform, wait_health  # noqa: E402

APP = """\
import os, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
print("BOOT", time.time(), flush=True)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")
    def log_message(self, *a):
        pass
server = ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H)
print("LISTENING", time.time(), flush=True)
server.serve_forever()
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def app_marks(database_url: str, deployment_id: str) -> dict[str, float]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT message FROM log_lines WHERE deployment_id = $1 AND phase = 'runtime'",
            deployment_id,
        )
    finally:
        await conn.close()
    marks = {}
    for row in rows:
        parts = row["message"].split()
        if len(parts) == 2 and parts[0] in ("BOOT", "LISTENING"):
            marks[parts[0]] = float(parts[1])
    return marks


def ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def run(runtime: str, runs: int, polling: float | None) -> list[dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{runtime}-"))
    extra = {"DEVPUSH_RUNTIME": runtime, "DEVPUSH_LOG_LEVEL": "WARNING"}
    if polling:
        extra.update({"DEVPUSH_MONITOR_MODE": "poll", "DEVPUSH_PROBE_MAX_INTERVAL": str(polling)})
    if runtime == "docker":
        _podman_ready()
        extra.update(
            {
                "DEVPUSH_DOCKER_HOST": PODMAN_SOCKET,
                "DEVPUSH_RUNNER_IMAGE": "localhost/devpush-runner-python:3.11",
            }
        )
    platform = start_platform(tmp / "data", env=platform_env(tmp / "data", **extra))
    results = []
    try:
        wait_health(platform.app_url)
        api = Api(platform.app_url, platform.token(), platform.proxy_url)
        repo = tmp / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "app.py").write_text(APP)
        commit(repo, "0")
        project = api.project(repo, "bench")
        from devpush.runstate import read_state
        from devpush.settings import Settings

        state = read_state(Settings(data_dir=tmp / "data"))  # type: ignore[call-arg]
        assert state is not None
        for i in range(runs):
            commit(repo, str(i + 1))
            pushed = time.time()
            deployment = api.deploy(project["id"])
            done = api.wait(deployment["id"])
            live = time.time()
            assert done["conclusion"] == "succeeded", done
            assert api.body(done["urls"]["environment"]) == "hello"
            marks: dict[str, float] = {}
            for _ in range(100):  # the shipper stores lines within milliseconds
                marks = asyncio.run(app_marks(state.database_url, done["id"]))
                if "LISTENING" in marks and "BOOT" in marks:
                    break
                time.sleep(0.05)
            t = done["timings"]
            boot = marks["LISTENING"] - marks["BOOT"]
            results.append(
                {
                    "queue pickup": t.get("queue", 0.0),
                    "fetch": t.get("fetch", 0.0),
                    "runtime start": t.get("runtime_start", 0.0),
                    "ready detected after app listens": ts(done["ready_at"]) - marks["LISTENING"],
                    "route live in Traefik": t.get("route", 0.0),
                    "push to live": live - pushed,
                    "app boot": boot,
                    "platform overhead": (live - pushed) - boot,
                }
            )
    finally:
        platform.stop()
    return results


def table(title: str, rows: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}")
    print(f"{'phase':<38}{'median':>10}{'p90':>10}")
    for name, (median, p90) in rows.items():
        print(f"{name:<38}{median * 1000:>8.0f}ms{p90 * 1000:>8.0f}ms")


def summarize(results: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    keys = results[0].keys()
    return {
        k: (statistics.median(r[k] for r in results), pct([r[k] for r in results], 0.9))
        for k in keys
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--runtimes", default="process,docker")
    args = parser.parse_args()
    goals = {"process": 1.0, "docker": 2.0}
    summary: list[tuple[str, float, float, float]] = []
    for runtime in args.runtimes.split(","):
        ours = summarize(run(runtime, args.runs, None))
        table(f"{runtime} runtime, {args.runs} deploys (backoff probing 50 ms -> 1 s)", ours)
        polled = summarize(run(runtime, args.runs, 2.0))
        table(f"{runtime} runtime, {args.runs} deploys (original design: 2 s polling)", polled)
        summary.append(
            (
                runtime,
                ours["platform overhead"][0],
                polled["platform overhead"][0],
                goals.get(runtime, 0.0),
            )
        )
    print(f"\n{'runtime':<10}{'overhead':>10}{'2s polling':>12}{'ratio':>8}{'goal':>14}")
    for runtime, ours_median, polled_median, goal in summary:
        ratio = polled_median / ours_median if ours_median else float("inf")
        verdict = "met" if ours_median <= goal and ratio >= 3 else "missed"
        print(
            f"{runtime:<10}{ours_median * 1000:>8.0f}ms{polled_median * 1000:>10.0f}ms"
            f"{ratio:>7.1f}x  <= {goal:.0f}s, >=3x: {verdict}"
        )


if __name__ == "__main__":
    main()
