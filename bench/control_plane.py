"""Control-plane load benchmark: the deployments list and /health under `wrk`, and idle memory.

Starts a real `devpush up` (process runtime, the API rate limit on), seeds one project with
--deployments (10,000) realistic deployment rows and their aliases in bulk, creates an API
token, then for 1, 2 and 4 app workers (DEVPUSH_WORKERS) drives with `wrk`:

- GET /api/v1/projects/{id}/deployments (first page, bearer token), straight to the app
  (the headline: it measures the control plane itself, not Traefik sharing the same cores);
- the same list through Traefik (Host: the dashboard's hostname), as production serves it;
- the list over a single connection (latency without queueing);
- GET /health, straight to the app.

Every request goes the way production's do: bearer-token auth, the idempotency middleware,
and the per-token rate limit, on, at --rate-limit requests a minute (DEVPUSH_API_RATE_LIMIT).
That is how an operator lets a busy API client (a CI fleet, a dashboard poller) through: the
limit is raised, not switched off. The default, 1,000,000 a minute, is far above what these
cores can serve, so no bench request is refused, and the limiter still counts each one in
Redis; its cost does not depend on the number. Before the runs the bench checks that 20 calls
raise the limiter's counters by 20, and prints it. A 429 would count as an error.

It prints requests/s, p50, p99 and errors next to the goals (>= 500 req/s and p99 <= 50 ms on
the list) as ratios, the CPU time the app, PostgreSQL and Traefik process trees spent per
request (steadier than req/s on a shared machine, and the capacity it implies), and the idle
RSS of the app, worker and monitor process trees together (1 app worker, after start and an
idle pause) against the 300 MB goal. `wrk` is installed with apt-get when it is missing.
Figures are from one run on whatever machine runs it; the load average is printed with them.

    .venv/bin/python bench/control_plane.py [--deployments 10000] [--workers 1,2,4]
        [--duration 10] [--connections 10] [--idle 20] [--rate-limit 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis
from cryptography.fernet import Fernet
from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.apps import Api, commit, git  # noqa: E402
from tests.e2e.platform import (  # noqa: E402
    RunningPlatform,
    platform_env,
    start_platform,
    wait_health,
)

from devpush.crypto import load_keys  # noqa: E402
from devpush.db import make_engine, make_sessionmaker, new_id  # noqa: E402
from devpush.deployments import service as deployments  # noqa: E402
from devpush.deployments.models import (  # noqa: E402
    Alias,
    AliasType,
    Conclusion,
    Deployment,
    Status,
)
from devpush.models import all_models  # noqa: E402
from devpush.projects import service as projects  # noqa: E402
from devpush.projects.models import Project  # noqa: E402
from devpush.runstate import read_state, redis_url  # noqa: E402
from devpush.settings import Settings  # noqa: E402

LIST_GOAL_RPS = 500.0
LIST_GOAL_P99_MS = 50.0
IDLE_GOAL_MB = 300.0

# wrk's Lua hooks: the bearer token and Host header come from the environment, and done()
# prints one JSON line with the latency percentiles and every kind of error.
WRK_SCRIPT = """
local token = os.getenv("BENCH_TOKEN")
local host = os.getenv("BENCH_HOST")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
if host and host ~= "" then wrk.headers["Host"] = host end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
    .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


# ---- wrk -----------------------------------------------------------------------------------
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is not installed: installing the Debian package `wrk` with apt-get ...", flush=True)
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        result = subprocess.run(
            prefix + argv, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        if result.returncode != 0:
            raise SystemExit(
                f"could not install wrk ({' '.join(argv)} exited {result.returncode}):\n"
                f"{result.stderr[-2000:]}\ninstall it yourself (apt-get install wrk) and rerun"
            )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("apt-get installed wrk but it is not on PATH; check the package")
    print(f"installed {found}", flush=True)
    return found


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    loadavg: float
    cpu_ms: dict[str, float]  # CPU time per request of each component's process tree


def drive(
    wrk: str,
    script: Path,
    url: str,
    *,
    seconds: int,
    connections: int,
    token: str = "",
    host: str = "",
    trees: dict[str, int] | None = None,
) -> Load:
    """One wrk run; `trees` names the process trees (component -> pid) whose CPU time is
    charged to the run."""
    trees = trees or {}
    env = {**os.environ, "BENCH_TOKEN": token, "BENCH_HOST": host}
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    loadavg = os.getloadavg()[0]
    before = {name: tree_cpu(pid) for name, pid in trees.items()}
    result = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    spent = {name: tree_cpu(pid) - before[name] for name, pid in trees.items()}
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK ")), None)
    if result.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data = json.loads(line[4:])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return Load(
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        errors=errors,
        requests=data["requests"],
        loadavg=loadavg,
        cpu_ms={k: v * 1000 / max(1, data["requests"]) for k, v in spent.items()},
    )


# ---- seeding -------------------------------------------------------------------------------
BRANCHES = (
    ["main"] * 14
    + [f"feature/{w}" for w in ("login", "billing", "search", "ui")]
    + [
        "fix/typo",
        "release/2.1",
    ]
)
TRIGGERS = ["github_push", "github_push", "git_push", "api", "cli", "ui", "redeploy"]
ERRORS = [
    "the build command exited with code 1: ModuleNotFoundError: No module named 'flask'",
    "the app did not answer on / within 60s (last probe: connection refused)",
    "the start command exited with code 137 (out of memory)",
]


def _conclusion(rng: random.Random) -> Conclusion:
    roll = rng.random()
    if roll < 0.80:
        return Conclusion.succeeded
    if roll < 0.90:
        return Conclusion.failed
    if roll < 0.97:
        return Conclusion.skipped
    return Conclusion.canceled


async def seed(settings: Settings, database_url: str, project_id: str, count: int) -> float:
    """`count` concluded deployments over the last 90 days, inserted in bulk, plus the aliases
    that finalize would have left: one per succeeded deployment, per branch, per environment."""
    started = time.monotonic()
    rng = random.Random(7)
    all_models()
    fernet = Fernet(load_keys(settings)[0].encode())
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    async with sessions() as session:
        project = await session.get(Project, project_id)
        assert project is not None
        config = deployments.snapshot_config(project, settings)
        environments = {
            branch: await projects.match_environment(
                session=session, project_id=project_id, branch=branch
            )
            for branch in set(BRANCHES)
        }
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        latest: dict[tuple[AliasType, str], tuple[str, str | None, str | None]] = {}
        aliases: list[dict[str, Any]] = []
        for i in range(count):
            created = now - timedelta(minutes=13 * (count - i)) + timedelta(seconds=rng.random())
            pr = rng.random() < 0.08
            branch = rng.choice(BRANCHES[14:]) if pr else rng.choice(BRANCHES)
            environment = None if pr else environments[branch]
            conclusion = _conclusion(rng)
            ident = new_id()
            env = {"DATABASE_URL": f"postgres://app:{ident}@db/app", "DEBUG": "0"}
            build, boot = rng.uniform(0.5, 40), rng.uniform(0.1, 3)
            rows.append(
                {
                    "id": ident,
                    "project_id": project_id,
                    "environment_id": environment.id if environment else None,
                    "branch": branch,
                    "commit_sha": f"{rng.getrandbits(160):040x}",
                    "commit_message": f"Change {i}: tidy the {rng.choice(['api', 'ui', 'db'])}",
                    "commit_author": rng.choice(["Ada <ada@example.com>", "Lin <lin@ex.org>"]),
                    "trigger": "github_pr" if pr else rng.choice(TRIGGERS),
                    "pr_number": rng.randint(1, 400) if pr else None,
                    "status": Status.completed,
                    "conclusion": conclusion,
                    "config": config,
                    "env_enc": fernet.encrypt(json.dumps(env).encode()).decode(),
                    "secret_keys": ["DATABASE_URL"],
                    "runtime": config["runtime"],
                    "runtime_handle": None,
                    "upstream": None,
                    "error": rng.choice(ERRORS) if conclusion is Conclusion.failed else None,
                    "created_at": created,
                    "prepare_started_at": created + timedelta(seconds=0.2),
                    "deploy_started_at": created + timedelta(seconds=build),
                    "ready_at": created + timedelta(seconds=build + boot)
                    if conclusion is Conclusion.succeeded
                    else None,
                    "concluded_at": created + timedelta(seconds=build + boot + 0.3),
                    "timings": {"queue": 0.01, "fetch": 0.2, "build": build, "boot": boot},
                    "log_seq": rng.randint(20, 4000),
                    "log_offset": 0,
                }
            )
            if conclusion is not Conclusion.succeeded:
                continue
            shell = Deployment(id=ident, branch=branch, pr_number=rows[-1]["pr_number"])
            for spec in deployments.alias_specs(project, shell, environment):
                if spec.type is AliasType.deployment:
                    aliases.append(_alias(project_id, spec.type, spec.value, None, None, ident))
                else:
                    latest[(spec.type, spec.value)] = (ident, spec.environment_id, spec.branch)
        for (kind, value), (target, env_id, alias_branch) in latest.items():
            aliases.append(_alias(project_id, kind, value, env_id, alias_branch, target))
        for start in range(0, len(rows), 1000):
            await session.execute(insert(Deployment), rows[start : start + 1000])
        for start in range(0, len(aliases), 1000):
            await session.execute(insert(Alias), aliases[start : start + 1000])
        await session.commit()
        stored = await session.scalar(
            select(func.count()).select_from(Deployment).where(Deployment.project_id == project_id)
        )
        assert stored == count, f"seeded {stored} deployments, expected {count}"
    await engine.dispose()
    return time.monotonic() - started


def _alias(
    project_id: str,
    kind: AliasType,
    value: str,
    environment_id: str | None,
    branch: str | None,
    deployment_id: str,
) -> dict[str, Any]:
    return {
        "id": new_id(),
        "project_id": project_id,
        "type": kind,
        "value": value,
        "environment_id": environment_id,
        "branch": branch,
        "deployment_id": deployment_id,
        "previous_deployment_id": None,
        "updated_at": datetime.now(UTC),
    }


# ---- memory --------------------------------------------------------------------------------
def tree_rss(pid: int) -> tuple[int, int]:
    """RSS and PSS (bytes) of a process and all of its descendants."""
    root = psutil.Process(pid)
    rss = pss = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            info = proc.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree, including children that exited and were reaped inside
    it (PostgreSQL backends of closed connections)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def idle_memory(running: RunningPlatform) -> dict[str, tuple[int, int]]:
    state = read_state(Settings(data_dir=running.data_dir))
    assert state is not None, "devpush up wrote no run/state.json"
    return {name: tree_rss(state.children[name]) for name in ("app", "worker", "monitor")}


# ---- platform --------------------------------------------------------------------------------
def boot(data: Path, base: dict[str, str], workers: int) -> RunningPlatform:
    env = {**base, "DEVPUSH_WORKERS": str(workers)}
    running = start_platform(data, env=env, timeout=180)
    wait_health(running.app_url, timeout=60)
    return running


def check_list(base_url: str, path: str, token: str, host: str = "") -> int:
    """One request before the load: it must answer 200 with a full first page."""
    headers = {"Authorization": f"Bearer {token}"}
    if host:
        headers["Host"] = host
    response = httpx.get(f"{base_url}{path}", headers=headers, timeout=30)
    if response.status_code != 200:
        raise SystemExit(f"GET {path} answered {response.status_code}: {response.text[:500]}")
    page = response.json()
    if len(page["items"]) != 20 or not page["next_cursor"]:
        raise SystemExit(f"GET {path}: expected a full page of 20 with a cursor: {page}")
    return len(response.content)


def limiter_counts(running: RunningPlatform, path: str, token: str, calls: int = 20) -> int:
    """How much `calls` list requests raise the API rate limiter's counters in Redis: proof
    that it runs for the bench's requests (it should be exactly `calls`). Retried when the
    one-minute window turns over in between."""
    client = redis.Redis.from_url(redis_url(Settings(data_dir=running.data_dir)))

    def counted(window: int) -> int:
        keys = list(client.scan_iter(match=f"devpush:rl:*:{window}", count=1000))
        return sum(int(v) for v in client.mget(keys) if v is not None) if keys else 0

    try:
        for _ in range(3):
            window = int(time.time() // 60)
            before = counted(window)
            for _ in range(calls):
                check_list(running.app_url, path, token)
            if int(time.time() // 60) == window:
                return counted(window) - before
        raise SystemExit("the rate limit window kept turning over; rerun")
    finally:
        client.close()


# ---- report ----------------------------------------------------------------------------------
def table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def load_row(target: str, workers: int, load: Load, goals: bool) -> tuple[str, ...]:
    return (
        target,
        str(workers),
        f"{load.rps:,.0f}",
        f"{load.p50_ms:.1f}",
        f"{load.p99_ms:.1f}",
        f"{load.errors}/{load.requests:,}",
        f"{load.rps / LIST_GOAL_RPS:.2f}x" if goals else "",
        f"{load.p99_ms / LIST_GOAL_P99_MS:.2f}x" if goals else "",
        f"{load.cpu_ms.get('app', 0):.1f}",
        f"{load.cpu_ms.get('db', 0):.1f}",
        f"{load.cpu_ms.get('proxy', 0):.1f}",
        f"{load.loadavg:.1f}",
    )


def measure(
    wrk: str,
    script: Path,
    running: RunningPlatform,
    path: str,
    token: str,
    workers: int,
    args: argparse.Namespace,
) -> list[tuple[str, ...]]:
    """Each target for one app worker count: a 3 s warm-up, then the measured run."""
    c = args.connections
    state = read_state(Settings(data_dir=running.data_dir))
    assert state is not None, "devpush up wrote no run/state.json"
    trees = {name: state.children[name] for name in ("app", "db", "proxy")}
    targets = [
        (f"list, direct to app, {c} conns", running.app_url + path, token, "", c, True),
        (
            f"list, through Traefik, {c} conns",
            running.proxy_url + path,
            token,
            "localhost",
            c,
            True,
        ),
        ("list, direct to app, 1 conn", running.app_url + path, token, "", 1, True),
        (f"/health, direct to app, {c} conns", running.app_url + "/health", "", "", c, False),
    ]
    rows = []
    for target, url, auth, host, connections, goals in targets:
        print(f"{workers} app worker(s): {target} ...", flush=True)
        for seconds in (3, args.duration):  # the first run only warms up
            load = drive(
                wrk,
                script,
                url,
                seconds=seconds,
                connections=connections,
                token=auth,
                host=host,
                trees=trees,
            )
        rows.append(load_row(target, workers, load, goals))
    return rows


def prepare(
    tmp: Path, data: Path, base: dict[str, str], args: argparse.Namespace
) -> tuple[RunningPlatform, str, str, dict[str, tuple[int, int]]]:
    """Boot with 1 app worker, seed the project, idle, and take the idle memory.
    Returns the running platform, the API token, the project id and the memory."""
    running = boot(data, base, 1)
    try:
        token = running.token()
        api = Api(running.app_url, token, running.proxy_url)
        repo = tmp / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        (repo / "app.py").write_text("print('never deployed here')\n")
        commit(repo, "0")
        project_id = str(api.project(repo, "bench")["id"])
        settings = Settings(data_dir=data)
        state = read_state(settings)
        assert state is not None, "devpush up wrote no run/state.json"
        print(f"seeding {args.deployments:,} deployments ...", flush=True)
        seconds = asyncio.run(seed(settings, state.database_url, project_id, args.deployments))
        print(f"seeded in {seconds:.1f}s; idling {args.idle:.0f}s for RSS ...", flush=True)
        time.sleep(args.idle)
        return running, token, project_id, idle_memory(running)
    except BaseException:
        running.stop()
        raise


def _capacity(results: list[tuple[str, ...]]) -> None:
    """CPU per request holds up under contention far better than req/s: what the list would
    sustain with the machine's cores to itself, from app + db + wrk-free CPU time."""
    cores = psutil.cpu_count() or 1
    for row in results:
        if row[0].startswith("list, direct to app") and "1 conn" not in row[0]:
            spent = float(row[8]) + float(row[9])
            if spent:
                print(
                    f"{row[1]} app worker(s): app + db spend {spent:.1f} ms CPU per list "
                    f"request -> at most ~{cores * 1000 / spent:,.0f} req/s on {cores} "
                    "otherwise idle cores (load generator excluded)"
                )


def report(
    results: list[tuple[str, ...]],
    memory: dict[str, tuple[int, int]],
    size: int,
    args: argparse.Namespace,
) -> None:
    header = (
        "target",
        "app workers",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "req/s / 500",
        "p99 / 50 ms",
        "app CPU ms/req",
        "db CPU ms/req",
        "Traefik CPU ms/req",
        "load avg",
    )
    print()
    print(table([header, *results]))
    total_rss = sum(rss for rss, _ in memory.values()) / 2**20
    total_pss = sum(pss for _, pss in memory.values()) / 2**20
    mem_rows = [("process tree (1 app worker, idle)", "RSS MB", "PSS MB")]
    for name, (rss, pss) in memory.items():
        mem_rows.append((name, f"{rss / 2**20:.0f}", f"{pss / 2**20:.0f}"))
    mem_rows.append(("app + worker + monitor", f"{total_rss:.0f}", f"{total_pss:.0f}"))
    print()
    print(table(mem_rows))
    _capacity(results)
    headline = [
        r for r in results if r[0].startswith("list, direct to app") and "1 conn" not in r[0]
    ]
    met = [
        r[1]
        for r in headline
        if float(r[2].replace(",", "")) >= LIST_GOAL_RPS and float(r[4]) <= LIST_GOAL_P99_MS
    ]
    print(
        f"\ngoal, list (headline rows): >= {LIST_GOAL_RPS:.0f} req/s and p99 <= "
        f"{LIST_GOAL_P99_MS:.0f} ms: "
        + (f"met with {', '.join(met)} app worker(s)" if met else "missed at every worker count")
        + f".\ngoal, idle RSS: {total_rss:.0f} MB / {IDLE_GOAL_MB:.0f} MB = "
        f"{total_rss / IDLE_GOAL_MB:.2f}x ({'met' if total_rss <= IDLE_GOAL_MB else 'missed'})."
    )
    print(
        f"list page: 20 of {args.deployments:,} deployments ({size:,} bytes). wrk: 1 thread, "
        f"{args.duration}s per row after a 3s warm-up, on the same {psutil.cpu_count()} CPUs as "
        "the platform and anything else running here (load avg: the 1-minute average before "
        "each row). Headline: straight to the app, the control plane's own capacity; through "
        "Traefik the proxy competes for the same cores. The 1-connection row is latency "
        "without queueing."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="app worker counts to measure")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=10, help="wrk connections")
    parser.add_argument("--idle", type=float, default=20, help="idle seconds before RSS")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=1_000_000,
        help="DEVPUSH_API_RATE_LIMIT, API calls a minute per token (0 turns the limiter off)",
    )
    args = parser.parse_args()
    wrk = ensure_wrk()
    print(f"load average before start: {os.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs")
    results: list[tuple[str, ...]] = []
    counted: dict[int, int] = {}  # app workers -> calls the rate limiter counted
    size = 0
    with tempfile.TemporaryDirectory(prefix="devpush-bench-cp-") as tmpdir:
        tmp = Path(tmpdir)
        script = tmp / "bench.lua"
        script.write_text(WRK_SCRIPT)
        data = tmp / "data"
        base = platform_env(
            data,
            DEVPUSH_RUNTIME="process",
            DEVPUSH_API_RATE_LIMIT=str(args.rate_limit),
            DEVPUSH_LOG_LEVEL="WARNING",
            DEVPUSH_RECONCILE_INTERVAL="15",
        )
        running, token, project_id, memory = prepare(tmp, data, base, args)
        path = f"/api/v1/projects/{project_id}/deployments"
        for n, workers in enumerate(int(w) for w in args.workers.split(",")):
            if n or workers != 1:
                running.stop()
                running = boot(data, base, workers)
            try:
                size = check_list(running.app_url, path, token)
                check_list(running.proxy_url, path, token, host="localhost")
                counted[workers] = limiter_counts(running, path, token)
                results += measure(wrk, script, running, path, token, workers, args)
            finally:
                running.stop()
    report(results, memory, size, args)
    print(
        f"rate limit: {args.rate_limit:,} API calls a minute per token"
        + (
            "; before each worker count's runs, 20 list calls raised the limiter's counters by "
            + ", ".join(f"{n} ({w} app worker(s))" for w, n in counted.items())
            + "."
            if args.rate_limit
            else " (off: DEVPUSH_API_RATE_LIMIT=0)."
        )
    )


if __name__ == "__main__":
    main()
