"""`devpush worker --check` reads its own colour's health key (issue #18, item 6): during an
update a live blue worker must not make a dead green one look healthy, nor the reverse."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from redis import Redis
from typer.testing import CliRunner

from devpush import cli
from devpush.settings import Settings
from devpush.workers.jobs import health_check_key, worker_settings

BASE = Path(__file__).resolve().parents[2] / "compose" / "base.yml"


def test_compose_gives_each_worker_colour_its_own_key() -> None:
    services = yaml.safe_load(BASE.read_text())["services"]
    for colour in ("blue", "green"):
        environment = services[f"worker-{colour}"]["environment"]
        assert environment["DEVPUSH_WORKER_COLOUR"] == colour
        assert environment["DEVPUSH_REDIS_URL"]  # still the shared environment


def test_each_colour_checks_its_own_health_key(
    settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    blue = settings.model_copy(update={"worker_colour": "blue"})
    green = settings.model_copy(update={"worker_colour": "green"})
    assert worker_settings(blue)["health_check_key"] == health_check_key(blue)
    assert len({health_check_key(s) for s in (settings, blue, green)}) == 3
    keys = [health_check_key(s) for s in (settings, blue, green)]
    redis = Redis.from_url(redis_url)
    redis.delete(*keys)
    # a live blue worker, as arq writes it (the check runs its own event loop: a sync test)
    redis.psetex(health_check_key(blue), 60_000, f"{time.time()} j_complete=0")

    def check(chosen: Settings) -> int:
        monkeypatch.setattr(cli, "get_settings", lambda: chosen)
        return CliRunner().invoke(cli.app, ["worker", "--check"]).exit_code

    assert check(blue) == 0
    assert check(green) == 1
    assert check(settings) == 1
    redis.delete(*keys)
    redis.close()
