"""Versioned upgrade steps against a real PostgreSQL: once each, in order, recorded; a failure
stops there and is shown; a database created by this version records them as baseline."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select

from devpush.db import make_engine, make_sessionmaker, session_scope
from devpush.settings import Settings
from devpush.upgrades.models import UpgradeStep
from devpush.upgrades.service import UpgradeFailed, apply_pending, states


def _step(directory: Path, version: str, script: str | None, actions: list[str] | None = None):
    directory.mkdir(parents=True, exist_ok=True)
    actions = actions or (["script"] if script is not None else ["sync-routes"])
    (directory / f"{version}.json").write_text(
        json.dumps({"reason": f"step {version}", "actions": actions})
    )
    if script is not None:
        (directory / f"{version}.sh").write_text(script)


def _marker(tmp_path: Path, version: str) -> str:
    return f'echo "{version}" >> {tmp_path / "ran.txt"}\necho "step {version} done"\n'


def _ran(tmp_path: Path) -> list[str]:
    path = tmp_path / "ran.txt"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def steps_settings(settings: Settings, tmp_path: Path) -> Settings:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    return settings.model_copy(update={"upgrades_dir": tmp_path / "steps"})


async def _recorded(settings: Settings) -> dict[str, UpgradeStep]:
    engine = make_engine(str(settings.database_url), pool_size=1)
    try:
        async with session_scope(make_sessionmaker(engine)) as session:
            return {r.version: r for r in await session.scalars(select(UpgradeStep))}
    finally:
        await engine.dispose()


async def _apply(settings: Settings, lines: list[str] | None = None, fresh: bool = False):
    engine = make_engine(str(settings.database_url), pool_size=2)
    try:
        return await apply_pending(
            engine, settings, fresh=fresh, say=(lines if lines is not None else []).append
        )
    finally:
        await engine.dispose()


async def test_steps_run_once_each_in_version_order(steps_settings: Settings, tmp_path: Path):
    base = f"{uuid.uuid4().int % 1000 + 100}"
    steps = tmp_path / "steps"
    # 10 sorts after 9 as a version, not as text
    for minor in ("10", "9", "2"):
        _step(steps, f"{base}.{minor}.0", _marker(tmp_path, minor))
    lines: list[str] = []
    ran = await _apply(steps_settings, lines)
    assert ran == [f"{base}.2.0", f"{base}.9.0", f"{base}.10.0"]
    assert _ran(tmp_path) == ["2", "9", "10"]
    assert f"upgrade step {base}.2.0: step {base}.2.0" in lines
    assert "  step 9 done" in lines
    recorded = await _recorded(steps_settings)
    assert all(recorded[f"{base}.{m}.0"].status == "applied" for m in ("2", "9", "10"))
    # a second run does nothing
    assert await _apply(steps_settings) == []
    assert _ran(tmp_path) == ["2", "9", "10"]


async def test_a_failed_step_stops_there_is_recorded_and_runs_again_once_fixed(
    steps_settings: Settings, tmp_path: Path
):
    base = f"{uuid.uuid4().int % 1000 + 1100}"
    steps = tmp_path / "steps"
    _step(steps, f"{base}.1.0", _marker(tmp_path, "1"))
    _step(steps, f"{base}.2.0", 'echo "checking the volume"\necho "no space left" >&2\nexit 4\n')
    _step(steps, f"{base}.3.0", _marker(tmp_path, "3"))
    with pytest.raises(UpgradeFailed) as failed:
        await _apply(steps_settings)
    assert failed.value.message == (
        f"upgrade step {base}.2.0 failed: {base}.2.0.sh exited with 4: no space left"
    )
    assert _ran(tmp_path) == ["1"]  # 3 waits behind the failure
    recorded = await _recorded(steps_settings)
    assert recorded[f"{base}.1.0"].status == "applied"
    assert recorded[f"{base}.2.0"].status == "failed"
    assert "no space left" in recorded[f"{base}.2.0"].detail
    assert f"{base}.3.0" not in recorded

    engine = make_engine(str(steps_settings.database_url), pool_size=1)
    async with session_scope(make_sessionmaker(engine)) as session:
        shown = {s.version: s.status for s in await states(session, steps_settings)}
    await engine.dispose()
    assert shown[f"{base}.2.0"] == "failed"
    assert shown[f"{base}.3.0"] == "pending"

    _step(steps, f"{base}.2.0", _marker(tmp_path, "2"))
    assert await _apply(steps_settings) == [f"{base}.2.0", f"{base}.3.0"]
    assert _ran(tmp_path) == ["1", "2", "3"]
    assert (await _recorded(steps_settings))[f"{base}.2.0"].status == "applied"


async def test_a_script_that_hangs_is_stopped_at_the_timeout(
    steps_settings: Settings, tmp_path: Path
):
    version = f"{uuid.uuid4().int % 1000 + 2100}.0.0"
    _step(tmp_path / "steps", version, "sleep 30\n")
    quick = steps_settings.model_copy(update={"upgrade_step_timeout": 1.0})
    with pytest.raises(UpgradeFailed, match="ran longer than 1s"):
        await _apply(quick)
    assert (await _recorded(quick))[version].status == "failed"


async def test_two_migrating_processes_run_each_step_once(steps_settings: Settings, tmp_path: Path):
    base = f"{uuid.uuid4().int % 1000 + 3100}"
    for minor in range(3):
        script = f"sleep 0.3\n{_marker(tmp_path, str(minor))}"
        _step(tmp_path / "steps", f"{base}.{minor}.0", script)
    first, second = await asyncio.gather(_apply(steps_settings), _apply(steps_settings))
    assert sorted(first + second) == [f"{base}.{m}.0" for m in range(3)]
    assert _ran(tmp_path) == ["0", "1", "2"]


@pytest.mark.parametrize(
    ("name", "body", "error"),
    [
        ("latest.json", '{"reason": "x", "actions": ["script"]}', "must be a version"),
        ("1.0.0.json", '{"reason": "x", "actions": ["rm -rf /"]}', "is not valid"),
        ("1.0.0.json", '{"reason": "x"}', "is not valid"),
        ("1.0.0.json", "{not json", "is not valid"),
        ("1.0.0.json", '{"reason": "x", "actions": ["script"]}', "1.0.0.sh is missing"),
        ("1.0.0.json", '{"reason": "x", "actions": ["sync-routes"], "run": "sh"}', "not valid"),
    ],
)
async def test_a_malformed_step_file_stops_before_anything_runs(
    steps_settings: Settings, tmp_path: Path, name: str, body: str, error: str
):
    version = f"{uuid.uuid4().int % 1000 + 4100}.0.0"
    _step(tmp_path / "steps", version, _marker(tmp_path, "ok"))
    (tmp_path / "steps" / name).write_text(body)
    with pytest.raises(Exception, match=error):
        await _apply(steps_settings)
    assert _ran(tmp_path) == []
    assert version not in await _recorded(steps_settings)


async def test_sync_routes_rewrites_project_files_but_not_the_platform_file(
    steps_settings: Settings, tmp_path: Path
):
    version = f"{uuid.uuid4().int % 1000 + 5100}.0.0"
    _step(tmp_path / "steps", version, None, ["sync-routes"])
    dynamic = steps_settings.traefik_dynamic_dir
    dynamic.mkdir(parents=True, exist_ok=True)
    (dynamic / "project-gone-project.yml").write_text("http: {}\n")
    lines: list[str] = []
    assert await _apply(steps_settings, lines) == [version]
    assert not (dynamic / "project-gone-project.yml").exists()
    assert not list(dynamic.glob("*platform*"))
    assert any("routes rewritten" in line for line in lines)


def test_a_database_this_version_creates_records_the_shipped_steps_as_baseline(
    database_url: str, settings: Settings
):
    from devpush.upgrades.migrate import upgrade
    from devpush.upgrades.steps import SHIPPED

    server, _, _ = database_url.replace("postgresql+asyncpg://", "postgresql://").rpartition("/")
    name = f"devpush_fresh_{uuid.uuid4().hex[:8]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(f"{server}/postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = f"{server.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    try:
        lines: list[str] = []
        upgrade(url, say=lines.append)
        recorded = asyncio.run(_recorded(settings.model_copy(update={"database_url": url})))
        shipped = {p.name.removesuffix(".json") for p in SHIPPED.glob("*.json")}
        assert shipped and set(recorded) == shipped
        assert {r.status for r in recorded.values()} == {"baseline"}
        assert not [line for line in lines if line.startswith("upgrade step")]
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
