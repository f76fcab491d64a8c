"""The monitor's healthcheck checks the monitor's own heartbeat, not that some PID 1 exists
(issue #18, item 9): a stale heartbeat fails `devpush monitor --check`, a fresh one passes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from devpush import cli
from devpush.settings import Settings
from devpush.workers import liveness

BASE = Path(__file__).resolve().parents[2] / "compose" / "base.yml"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    chosen = Settings(data_dir=tmp_path / "data", secret_key="test")  # type: ignore[call-arg]
    monkeypatch.setattr(cli, "get_settings", lambda: chosen)
    return chosen


def check() -> int:
    return CliRunner().invoke(cli.app, ["monitor", "--check"]).exit_code


def test_no_heartbeat_fails(settings: Settings) -> None:
    assert check() == 1


def test_a_stale_heartbeat_fails_and_a_fresh_one_passes(settings: Settings) -> None:
    path = liveness.heartbeat_path(settings)
    liveness.beat(path)
    assert check() == 0
    old = time.time() - liveness.STALE_AFTER - 5
    os.utime(path, (old, old))
    assert check() == 1
    liveness.beat(path)
    assert check() == 0


def test_compose_checks_the_monitor_with_its_heartbeat() -> None:
    monitor = yaml.safe_load(BASE.read_text())["services"]["monitor"]
    assert monitor["healthcheck"]["test"] == ["CMD", "devpush", "monitor", "--check"]
