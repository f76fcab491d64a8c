"""Log benchmarks on a real `devpush up` (process runtime), printed as a table:

- live latency: an app prints a timestamped line every 20 ms; an SSE client of
  /api/v1/deployments/{id}/events measures when each arrives (median, p99, and the median
  against the 500 ms the original design polled Loki at);
- ingest throughput: apps print N lines as fast as they can; lines stored per second, for one
  app and for 20 apps at once (runtime -> monitor's shipper -> PostgreSQL + Redis);
- search latency: --lines (10 million) lines generated server-side (INSERT ... SELECT
  generate_series) into a dedicated database on the same PostgreSQL, then keyword searches
  through the log store (median, p90).

    .venv/bin/python bench/logs.py [--lines 1000000] [--samples 300] [--ingest-lines 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.apps import OK_SERVER, Api, commit, git  # noqa: E402
from tests.e2e.platform import (  # noqa: E402
    RunningPlatform,
    platform_env,
    start_platform,
    wait_health,
)

from devpush.logs.search import LogQuery  # noqa: E402
from devpush.logs.store import PostgresLogStore  # noqa: E402
from devpush.runstate import database_url  # noqa: E402
from devpush.settings import Settings  # noqa: E402

TICKER = (
    """
import sys, threading, time


def tick():
    i = 0
    while True:
        print(f"tick {i} {time.time():.6f}", flush=True)
        i += 1
        time.sleep(0.02)


threading.Thread(target=tick, daemon=True).start()
"""
    + OK_SERVER
)
BURST = (
    """
import os, sys
n = int(os.environ["LINES"])
out = sys.stdout
for i in range(n):
    rid = i * 2654435761 % 2**32
    out.write(f"burst {i:08d} GET /api/items/{i % 9973} 200 {i % 300}ms req={rid:08x}\\n")
out.flush()
"""
    + OK_SERVER
)


# ---- helpers ---------------------------------------------------------------------------------
def repo_with(tmp: Path, name: str, app: str) -> Path:
    repo = tmp / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text(app)
    return commit(repo, name)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def platform_dsn(running: RunningPlatform, database: str | None = None) -> str:
    settings = Settings(data_dir=running.data_dir)  # type: ignore[call-arg]
    url = database_url(settings).replace("postgresql+asyncpg://", "postgresql://")
    return url if database is None else url.rsplit("/", 1)[0] + f"/{database}"


# ---- live latency ------------------------------------------------------------------------------
def bench_live(api: Api, tmp: Path, samples: int) -> list[float]:
    project = api.project(repo_with(tmp, "ticker", TICKER), "ticker")
    deployment = api.deploy(project["id"])
    latencies: list[float] = []
    event: dict[str, str] = {}
    warmup = 20
    with api.http.stream(
        "GET",
        f"/api/v1/deployments/{deployment['id']}/events",
        timeout=httpx.Timeout(10, read=60),
    ) as response:
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(":")
                event[name] = value[1:] if value.startswith(" ") else value
                continue
            received = time.time()
            if event.get("event") == "log":
                message = json.loads(event["data"])["message"]
                if message.startswith("tick "):
                    _, index, printed = message.split()
                    if int(index) >= warmup:
                        latencies.append((received - float(printed)) * 1000)
                        if len(latencies) >= samples:
                            break
            event = {}
    return latencies


# ---- ingest --------------------------------------------------------------------------------------
async def shipped_stdout(dsn: str, ids: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT coalesce(sum(log_offset >> 32), 0) FROM deployments WHERE id = ANY($1)", ids
        )
        return int(value)
    finally:
        await conn.close()


async def first_line_ts(dsn: str, ids: list[str]) -> datetime:
    conn = await asyncpg.connect(dsn)
    try:
        value: datetime = await conn.fetchval(
            "SELECT min(ts) FROM log_lines WHERE deployment_id = ANY($1) AND phase = 'runtime'",
            ids,
        )
        return value
    finally:
        await conn.close()


def bench_ingest(api: Api, running: RunningPlatform, tmp: Path, apps: int, lines: int) -> float:
    repo = repo_with(tmp, f"burst{apps}", BURST)
    projects = [
        api.project(repo, f"burst-{apps}-{i}", env_vars={"LINES": str(lines)}) for i in range(apps)
    ]
    dsn = platform_dsn(running)
    ids = [api.deploy(p["id"])["id"] for p in projects]
    total = apps * lines
    deadline = time.monotonic() + 600
    while True:
        done = asyncio.run(shipped_stdout(dsn, ids))
        if done >= total:
            finished = datetime.now(UTC)
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"ingest stalled at {done}/{total} lines")
        time.sleep(0.02)
    started = asyncio.run(first_line_ts(dsn, ids))
    return total / (finished - started).total_seconds()


# ---- search -------------------------------------------------------------------------------
DAYS = 10
PER_DEPLOYMENT = 50_000
MESSAGE = """CASE
  WHEN b < 20 THEN 'INFO 10.0.' || (i % 250) || '.' || (i % 97) || ' "GET /api/items/'
    || (i % 9973) || ' HTTP/1.1" 200 ' || (i % 5000) || ' ' || (i % 300) || 'ms req='
    || substr(md5(i::text), 1, 12)
  WHEN b < 35 THEN 'DEBUG cache hit key=user:' || (i % 50021) || ' ttl=' || (i % 300)
  WHEN b < 45 THEN '{"level":"info","msg":"job processed","job_id":' || i
    || ',"queue":"default","duration_ms":' || (i % 1000) || '}'
  WHEN b < 47 THEN 'WARN upstream timeout after ' || (i % 30) || 's calling payments-' || (i % 7)
  WHEN b < 49 THEN 'WARN slow query (' || (i % 2000) || 'ms): SELECT * FROM orders_' || (i % 13)
    || ' WHERE id = $1'
  ELSE 'ERROR worker ' || (i % 31) || ' failed: connection reset by peer (attempt ' || (i % 5)
    || ')'
END"""
LEVEL = (
    "CASE WHEN b < 20 THEN 'info' WHEN b < 35 THEN 'debug' WHEN b < 45 THEN 'info' "
    "WHEN b < 49 THEN 'warn' ELSE 'error' END"
)
INSERT = f"""
INSERT INTO "{{table}}" (id, ts, project_id, deployment_id, environment_id, branch, seq, stream,
                         phase, level, message)
SELECT i, $1::timestamptz + ((i - $2) * (86400.0 / ($3 - $2 + 1))) * interval '1 second',
  'bench-project', 'bench-dep-' || (i / {PER_DEPLOYMENT}),
  'bench-env-' || ((i / {PER_DEPLOYMENT}) % 3),
  CASE (i / {PER_DEPLOYMENT}) % 3 WHEN 0 THEN 'main'
    WHEN 1 THEN 'release/1.' || ((i / {PER_DEPLOYMENT}) % 7)
    ELSE 'feature/f' || (i / {PER_DEPLOYMENT}) END,
  i % {PER_DEPLOYMENT} + 1, CASE WHEN b = 49 THEN 'stderr' ELSE 'stdout' END,
  CASE WHEN i % {PER_DEPLOYMENT} < 100 THEN 'build' ELSE 'runtime' END, {LEVEL}, {MESSAGE}
FROM (SELECT i, i % 50 AS b FROM generate_series($2::bigint, $3::bigint) i) s
"""


async def generate(dsn: str, total: int) -> float:
    """One standalone table per day, filled and indexed in parallel, then attached as the
    day's partition in place of the empty one (ATTACH adopts the matching indexes instead of
    building them again)."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'log_lines' "
        "AND indexname <> 'pk_log_lines'"
    )
    today = datetime.now(UTC).date()
    for n in range(DAYS):  # migrations pre-make the coming days' (empty) partitions
        d = today - timedelta(days=DAYS - 1 - n)
        await conn.execute(f'DROP TABLE IF EXISTS "log_lines_p{d:%Y%m%d}"')
    await conn.close()
    per_day = total // DAYS

    async def day(n: int) -> tuple[str, datetime, datetime]:
        d = today - timedelta(days=DAYS - 1 - n)
        table = f"log_lines_p{d:%Y%m%d}"
        start = datetime.combine(d, datetime.min.time(), tzinfo=UTC)
        first = 1 + n * per_day
        c = await asyncpg.connect(dsn)
        try:
            await c.execute("SET maintenance_work_mem = '512MB'; SET synchronous_commit = off")
            await c.execute(
                f'CREATE TABLE "{table}" (LIKE log_lines INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
            )
            await c.execute(INSERT.replace("{table}", table), start, first, first + per_day - 1)
            await c.execute(f'ALTER TABLE "{table}" ADD PRIMARY KEY (id, ts)')
            for k, row in enumerate(indexes):
                definition = row["indexdef"].split(" USING ", 1)[1]
                await c.execute(f'CREATE INDEX "{table}_{k}" ON "{table}" USING {definition}')
        finally:
            await c.close()
        return table, start, start + timedelta(days=1)

    made = await asyncio.gather(*(day(n) for n in range(DAYS)))
    conn = await asyncpg.connect(dsn)
    for table, start, end in made:
        await conn.execute(
            f'ALTER TABLE log_lines ATTACH PARTITION "{table}" '
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    await conn.execute(
        f"SELECT setval(pg_get_serial_sequence('log_lines', 'id'), {per_day * DAYS + 1})"
    )
    await conn.execute("ANALYZE log_lines")
    await conn.close()
    return time.monotonic() - started


async def prepare_search_db(running: RunningPlatform, lines: int) -> tuple[str, int, float]:
    name = "devpush_bench_logs"
    admin = await asyncpg.connect(platform_dsn(running, "postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = platform_dsn(running, name)
    url = dsn.replace("postgresql://", "postgresql+asyncpg://")
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", f"from devpush.upgrades.migrate import upgrade; upgrade({url!r})"],
        check=True,
        timeout=300,
    )
    seconds = await generate(dsn, lines)
    conn = await asyncpg.connect(dsn)
    stored = int(await conn.fetchval("SELECT count(*) FROM log_lines"))
    await conn.close()
    return url, stored, seconds


def request_id(k: int) -> str:
    """The req= value of one generated access-log line (it appears once)."""
    i = 1_000_000 + k * 37_991
    i = i - i % 50 + k % 20  # an access-log line (i % 50 < 20)
    return hashlib.md5(str(i).encode()).hexdigest()[:12]


async def bench_search(url: str, lines: int, runs: int) -> dict[str, list[float]]:
    from devpush.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    store = PostgresLogStore()
    since_day = datetime.now(UTC) - timedelta(days=1)
    kinds: dict[str, Callable[[int], LogQuery]] = {
        "rare keyword (one line, a request id)": lambda k: LogQuery(
            q=request_id(k % (lines // 40_000 or 1))
        ),
        "common keyword ('timeout', 2%)": lambda k: LogQuery(q="timeout"),
        "phrase ('connection reset', 2%)": lambda k: LogQuery(q="connection reset"),
        "path keyword ('/api/items/N', 0.004%)": lambda k: LogQuery(q=f"/api/items/{9000 + k}"),
        "keyword absent": lambda k: LogQuery(q=f"nosuchword{k}"),
        "keyword + level + since 1 day": lambda k: LogQuery(
            q="failed", levels=("error",), since=since_day
        ),
    }
    results: dict[str, list[float]] = {}
    for label, make in kinds.items():
        times = []
        for k in range(runs):
            started = time.perf_counter()
            async with sessions() as session:
                await store.query(session=session, project_id="bench-project", query=make(k))
                await session.rollback()
            times.append((time.perf_counter() - started) * 1000)
        results[label] = times
    await engine.dispose()
    return results


# ---- report -------------------------------------------------------------------------------
def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for n, row in enumerate(rows):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000_000, help="lines for the search")
    parser.add_argument("--samples", type=int, default=300, help="live latency samples")
    parser.add_argument("--ingest-lines", type=int, default=100_000, help="lines per app")
    parser.add_argument("--search-runs", type=int, default=30, help="runs per search kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="devpush-bench-logs-") as tmpdir:
        tmp = Path(tmpdir)
        env = platform_env(tmp / "data", DEVPUSH_RUNTIME="process", DEVPUSH_DEPLOY_TIMEOUT="60")
        running = start_platform(tmp / "data", env=env)
        try:
            wait_health(running.app_url)
            api = Api(running.app_url, running.token(), running.proxy_url)
            print("live latency ...", flush=True)
            live = bench_live(api, tmp, args.samples)
            print("ingest ...", flush=True)
            one = bench_ingest(api, running, tmp, 1, args.ingest_lines)
            twenty = bench_ingest(api, running, tmp, 20, args.ingest_lines)
            print(f"generating {args.lines:,} lines for search ...", flush=True)
            url, stored, generated = asyncio.run(prepare_search_db(running, args.lines))
            search = asyncio.run(bench_search(url, stored, args.search_runs))
        finally:
            running.stop()
    median = statistics.median(live)
    rows = [
        ("metric", "result", "goal"),
        ("live latency, median (app prints -> SSE client)", f"{median:.1f} ms", "<= 100 ms"),
        ("live latency, p99", f"{pct(live, 0.99):.1f} ms", ""),
        ("live median / 500 ms (Loki polled every 0.5 s)", f"{median / 500:.3f}x", ""),
        (f"ingest, 1 app ({args.ingest_lines:,} lines)", f"{one:,.0f} lines/s", ""),
        (
            f"ingest, 20 apps at once ({20 * args.ingest_lines:,} lines)",
            f"{twenty:,.0f} lines/s",
            "",
        ),
    ]
    pooled = [t for times in search.values() for t in times]
    rows.append(
        (
            f"search over {stored:,} lines, all keyword kinds: median / p90",
            f"{statistics.median(pooled):.1f} / {pct(pooled, 0.9):.1f} ms",
            "median <= 200 ms",
        )
    )
    for label, times in search.items():
        rows.append(
            (
                f"  {label}: median / p90",
                f"{statistics.median(times):.1f} / {pct(times, 0.9):.1f} ms",
                "",
            )
        )
    print()
    print(table(rows))
    print(
        f"\n{len(live)} live samples; search: {args.search_runs} runs per kind, through "
        f"PostgresLogStore.query on a dedicated database ({stored:,} lines over {DAYS} daily "
        f"partitions, generated in {generated:.0f} s); platform: devpush up, process runtime."
    )


if __name__ == "__main__":
    main()
