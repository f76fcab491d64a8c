"""The shipper against real PostgreSQL and Redis: a real PostgreSQL outage loses no line,
past MAX_BUFFER lines are dropped and counted, a restarted (or racing) shipper stores each
line once, secrets are masked, odd lines are kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select

from devpush import events
from devpush import runstate as state
from devpush.bootstrap import build_platform
from devpush.db import session_scope, utcnow
from devpush.deployments import service as deployments
from devpush.deployments import shipper as shipper_module
from devpush.deployments.models import Deployment
from devpush.deployments.shipper import MASK, Shipper
from devpush.embedded import services
from devpush.logs.models import LogLine
from devpush.logs.store import MAX_LINE, Offsets
from devpush.platform import Platform
from devpush.projects import env
from devpush.projects import service as projects
from devpush.projects.schemas import ProjectCreate
from devpush.runtime.base import LogRecord, Phase, RuntimeHandle
from devpush.settings import Settings
from devpush.upgrades.migrate import upgrade
from tests.conftest import free_port
from tests.factories.auth import make_account
from tests.integration.logs.helpers import SECRET, MakeDeployment


class ScriptedRuntime:
    """Stands in for a runtime's `logs()`: yields the given records, pausing `pace` seconds
    between them, then ends as an exited instance's output does."""

    name = "scripted"

    def __init__(self, records: list[tuple[str, str]], pace: float = 0.0) -> None:
        self.records, self.pace = records, pace

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        for stream, message in self.records:
            yield LogRecord(ts=utcnow(), stream=stream, phase=Phase.runtime, message=message)
            await asyncio.sleep(self.pace)


class EagerRuntime(ScriptedRuntime):
    """Like the process runtime with output waiting: yields lines without ever awaiting."""

    async def logs(self, handle: RuntimeHandle, *, follow: bool) -> AsyncIterator[LogRecord]:
        for stream, message in self.records:
            yield LogRecord(ts=utcnow(), stream=stream, phase=Phase.runtime, message=message)


def handle_for(deployment_id: str) -> RuntimeHandle:
    return RuntimeHandle(backend="scripted", id=deployment_id, deployment_id=deployment_id)


async def stored_messages(p: Platform, deployment_id: str) -> list[str]:
    async with session_scope(p.sessions) as session:
        rows = await session.execute(
            select(LogLine.seq, LogLine.message)
            .where(LogLine.deployment_id == deployment_id)
            .order_by(LogLine.seq)
        )
        pairs = list(rows)
    assert [seq for seq, _ in pairs] == list(range(1, len(pairs) + 1))
    return [message for _, message in pairs]


async def load(p: Platform, deployment_id: str) -> Deployment:
    async with session_scope(p.sessions) as session:
        row = await session.get(Deployment, deployment_id)
        assert row is not None
        return row


# ---- a PostgreSQL of our own, to stop and start ---------------------------------------------
@dataclass
class StoppablePostgres:
    argv: list[str]
    user: str | None
    port: int
    log: Path
    password: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        auth = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.dsn.replace("postgresql://", "postgresql+asyncpg://") + "/devpush"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, user=self.user, stdout=out, stderr=out)

    def stop(self) -> None:
        """Fast shutdown: every connection is cut, as in a crash or a restart."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)

    async def ready(self) -> None:
        for _ in range(300):
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                conn = await asyncpg.connect(f"{self.dsn}/postgres")
                await conn.close()
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("PostgreSQL did not come back")


@pytest.fixture(scope="module")
def stoppable_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoppablePostgres]:
    data = tmp_path_factory.mktemp("stoppable-pg")
    port = free_port()
    settings = Settings(data_dir=data, embedded_db_port=port)  # type: ignore[call-arg]
    spec = services.prepare_postgres(settings)
    # the embedded PostgreSQL has a generated password where the launcher makes one
    password = getattr(state, "embedded_password", lambda *_: "")(settings, "db")
    pg = StoppablePostgres(spec.argv, spec.user, port, data / "postgres.log", password)
    pg.start()

    async def create() -> None:
        await pg.ready()
        conn = await asyncpg.connect(f"{pg.dsn}/postgres")
        await conn.execute("CREATE DATABASE devpush")
        await conn.close()

    try:
        asyncio.run(create())
        upgrade(pg.url)
        yield pg
    finally:  # stopped even when setting it up failed: no server outlives the tests
        if pg.proc is not None and pg.proc.poll() is None:
            pg.stop()


@pytest.fixture
async def outage_platform(
    stoppable_pg: StoppablePostgres, redis_url: str, tmp_path: Path
) -> AsyncIterator[Platform]:
    if stoppable_pg.proc is None or stoppable_pg.proc.poll() is not None:
        stoppable_pg.start()
        await stoppable_pg.ready()
    p = await build_platform(
        Settings(  # type: ignore[call-arg]
            data_dir=tmp_path / "data",
            database_url=stoppable_pg.url,
            redis_url=redis_url,
            runtime="process",
        )
    )
    try:
        yield p
    finally:
        await p.close()


async def new_deployment(p: Platform, secrets: dict[str, str] | None = None) -> Deployment:
    account = await make_account(p, f"{uuid.uuid4().hex[:10]}@example.com")
    async with session_scope(p.sessions) as session:
        project = await projects.create_project(
            session=session,
            team_id=account.team_id,
            body=ProjectCreate(name=f"app-{uuid.uuid4().hex[:8]}"),
        )
        if secrets:
            await env.set_env_vars(
                session=session, project_id=project.id, values=secrets, secret=True
            )
        deployment, _ = await deployments.create(
            session=session, settings=p.settings, project=project, branch="main", trigger="api"
        )
        return deployment


# ---- the tests ----------------------------------------------------------------------------
async def test_postgres_down_for_five_seconds_loses_no_line(
    outage_platform: Platform, stoppable_pg: StoppablePostgres
) -> None:
    p = outage_platform
    deployment = await new_deployment(p)
    total = 1500  # ~10 s of output, one line every 6-7 ms
    runtime = ScriptedRuntime([("stdout", f"tick {i}") for i in range(total)], pace=0.006)
    shipper = Shipper(p, deployment, runtime, handle_for(deployment.id))
    task = asyncio.create_task(shipper.run())
    await asyncio.sleep(2)
    await asyncio.to_thread(stoppable_pg.stop)
    stopped_at = asyncio.get_running_loop().time()
    await asyncio.sleep(5)
    assert not task.done()
    assert shipper.buffered > 0  # lines waited in memory meanwhile
    await asyncio.to_thread(stoppable_pg.start)
    await stoppable_pg.ready()
    await asyncio.wait_for(task, 60)
    assert asyncio.get_running_loop().time() - stopped_at >= 5
    assert await stored_messages(p, deployment.id) == [f"tick {i}" for i in range(total)]
    assert Offsets.unpack((await load(p, deployment.id)).log_offset) == Offsets(stdout=total)
    assert shipper.dropped == 0


async def test_past_max_buffer_the_oldest_lines_are_dropped_and_counted(
    outage_platform: Platform, stoppable_pg: StoppablePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shipper_module, "MAX_BUFFER", 100)
    monkeypatch.setattr(shipper_module, "BATCH", 40)
    p = outage_platform
    deployment = await new_deployment(p)
    await asyncio.to_thread(stoppable_pg.stop)
    runtime = ScriptedRuntime([("stdout", f"line {i}") for i in range(250)], pace=0.001)
    shipper = Shipper(p, deployment, runtime, handle_for(deployment.id))
    task = asyncio.create_task(shipper.run())
    await asyncio.sleep(1.5)
    await asyncio.to_thread(stoppable_pg.start)
    await stoppable_pg.ready()
    await asyncio.wait_for(task, 60)
    messages = await stored_messages(p, deployment.id)
    kept, note = messages[:-1], messages[-1]
    assert shipper.dropped >= 250 - 100
    assert len(kept) + shipper.dropped == 250
    assert kept == [f"line {i}" for i in range(shipper.dropped, 250)]  # the newest, in order
    assert note.startswith(f"devpush: {shipper.dropped} log lines were dropped")
    # dropped lines count as shipped: a restarted shipper does not resend them
    assert Offsets.unpack((await load(p, deployment.id)).log_offset) == Offsets(stdout=250)


async def test_a_healthy_but_slower_store_slows_reading_and_drops_nothing(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app printing faster than the store takes lines must not lose any: reading pauses
    (the runtime keeps the output) long before the buffer would drop lines."""
    monkeypatch.setattr(shipper_module, "MAX_BUFFER", 3_000)
    monkeypatch.setattr(shipper_module, "HIGH_WATER", 1_000)
    deployment = await new_deployment(platform)
    records = [("stdout", f"fast {i}") for i in range(20_000)]
    shipper = Shipper(platform, deployment, EagerRuntime(records), handle_for(deployment.id))
    await shipper.run()
    assert shipper.dropped == 0
    assert await stored_messages(platform, deployment.id) == [m for _, m in records]


async def test_a_restarted_shipper_resumes_per_stream(platform: Platform) -> None:
    """A runtime read again from the start may interleave stdout and stderr differently."""
    deployment = await new_deployment(platform)
    first = [(s, f"{s} {i}") for i in range(50) for s in ("stdout", "stderr")]
    runtime = ScriptedRuntime(first)
    await Shipper(platform, deployment, runtime, handle_for(deployment.id)).run()
    again = [("stdout", f"stdout {i}") for i in range(70)]
    again += [("stderr", f"stderr {i}") for i in range(70)]
    reloaded = await load(platform, deployment.id)
    await Shipper(platform, reloaded, ScriptedRuntime(again), handle_for(deployment.id)).run()
    messages = await stored_messages(platform, deployment.id)
    assert len(messages) == len(set(messages)) == 140
    assert messages[:100] == [m for _, m in first]
    assert messages[100:] == [f"stdout {i}" for i in range(50, 70)] + [
        f"stderr {i}" for i in range(50, 70)
    ]


async def test_a_replicas_lines_are_tagged_and_a_restarted_shipper_resumes(
    platform: Platform,
) -> None:
    """Replica 2's lines carry its number (replica 0's own offsets are untouched), and a shipper
    started again for it resumes from the offsets kept in Redis."""
    deployment = await new_deployment(platform)
    handle = RuntimeHandle("scripted", f"{deployment.id}-r2", deployment.id, data={"replica": 2})
    first = [("stdout", f"r2 line {i}") for i in range(30)]
    await Shipper(platform, deployment, ScriptedRuntime(first), handle).run()
    again = first + [("stdout", f"r2 line {i}") for i in range(30, 40)]
    reloaded = await load(platform, deployment.id)
    await Shipper(platform, reloaded, ScriptedRuntime(again), handle).run()
    assert await stored_messages(platform, deployment.id) == [f"r2 line {i}" for i in range(40)]
    async with session_scope(platform.sessions) as session:
        tags = set(await session.scalars(select(LogLine.replica)))
    assert tags == {2}
    assert (await load(platform, deployment.id)).log_offset == 0  # replica 0's, untouched
    zero = [("stdout", "r0 line")]
    await Shipper(platform, reloaded, ScriptedRuntime(zero), handle_for(deployment.id)).run()
    async with session_scope(platform.sessions) as session:
        rows = (await session.execute(select(LogLine.message, LogLine.replica))).all()
    assert ("r0 line", 0) in [tuple(r) for r in rows]


async def test_two_shippers_racing_store_each_line_once(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shipper_module, "BATCH", 25)
    deployment = await new_deployment(platform)
    records = [("stdout", f"line {i}") for i in range(800)]
    a = Shipper(platform, deployment, ScriptedRuntime(records, 0.0005), handle_for(deployment.id))
    b = Shipper(platform, deployment, ScriptedRuntime(records, 0.0007), handle_for(deployment.id))
    await asyncio.gather(a.run(), b.run())
    assert await stored_messages(platform, deployment.id) == [f"line {i}" for i in range(800)]


async def test_secrets_are_masked_in_stored_and_streamed_lines_and_odd_lines_are_kept(
    platform: Platform, make_deployment: MakeDeployment
) -> None:
    deployment = await load(platform, await make_deployment())
    assert deployment.secret_keys == ["API_KEY"]
    long_line = "x" * (MAX_LINE + 500)
    undecodable = b"bad \xff\xfe bytes \xc3(".decode("utf-8", "surrogateescape")
    records = [
        ("stdout", f"connecting with key={SECRET} to api"),
        ("stderr", f"{SECRET}{SECRET}"),
        ("stdout", long_line),
        ("stdout", undecodable),
        ("stdout", "nul\x00byte"),
        ("stdout", "  "),
    ]
    await Shipper(platform, deployment, ScriptedRuntime(records), handle_for(deployment.id)).run()
    stored = await stored_messages(platform, deployment.id)
    assert stored[0] == f"connecting with key={MASK} to api"
    assert stored[1] == MASK + MASK
    assert stored[2] == "x" * MAX_LINE + " … [line cut: 500 more characters]"
    assert stored[3].startswith("bad ") and stored[3].endswith(" bytes \ufffd(")
    assert "\ufffd" in stored[3]
    assert stored[4] == "nul\ufffdbyte"
    assert stored[5] == "  "
    published = await platform.redis.xrange(events.deployment_stream(deployment.id))
    assert {fields[b"type"] for _, fields in published} == {b"logs"}  # lines in batches
    streamed = [line["message"] for _, f in published for line in json.loads(f[b"data"])]
    assert streamed == stored
    assert not any(SECRET in m for m in stored + streamed)
