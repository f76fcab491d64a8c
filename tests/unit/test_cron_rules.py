"""Cron jobs (issue #20): what may be declared, in devpush.toml (errors naming the line), in
the API's shapes and in the dashboard's form, and when a schedule fires."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from devpush.cron.runner import prefix, status_of
from devpush.errors import Invalid
from devpush.projects import cron, repo_config
from devpush.projects.schemas import ProjectUpdate
from devpush.runtime.base import ExecResult
from devpush.web.cron_pages import declaration_lines, parse_lines


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "now", "last", "following"),
    [
        ("* * * * *", "2026-01-01T00:03:30", "2026-01-01T00:03:00", "2026-01-01T00:04:00"),
        ("*/5 * * * *", "2026-01-01T00:03:30", "2026-01-01T00:00:00", "2026-01-01T00:05:00"),
        ("0 3 * * *", "2026-01-01T03:00:00", "2026-01-01T03:00:00", "2026-01-02T03:00:00"),
        ("0 3 * * *", "2026-01-01T02:59:59", "2025-12-31T03:00:00", "2026-01-01T03:00:00"),
        ("@hourly", "2026-01-01T01:30:00", "2026-01-01T01:00:00", "2026-01-01T02:00:00"),
        ("30 4 1 * *", "2026-02-10T00:00:00", "2026-02-01T04:30:00", "2026-03-01T04:30:00"),
    ],
)
def test_slots(schedule: str, now: str, last: str, following: str) -> None:
    assert cron.last_slot(schedule, at(now)) == at(last)
    assert cron.next_slot(schedule, at(now)) == at(following)


@pytest.mark.parametrize(
    "schedule",
    ["", "   ", "61 * * * *", "* * * *", "* * * * * *", "@reboot", "@sometimes", "0 25 * * *",
     "every day", 5, None],
)  # fmt: skip
def test_bad_schedules_are_refused(schedule: Any) -> None:
    with pytest.raises(ValueError):
        cron.check_schedule(schedule)


def test_schedules_are_normalized() -> None:
    assert cron.check_schedule("  0   3 * *  * ") == "0 3 * * *"
    assert cron.check_schedule("@daily") == "@daily"


@pytest.mark.parametrize("command", ["", "  ", "echo\x00hi", "echo\nrm -rf /", "x" * 5000, 3])
def test_bad_commands_are_refused(command: Any) -> None:
    with pytest.raises(ValueError):
        cron.check_command(command)


@pytest.mark.parametrize("timeout", [0, -1, 86_401, 1.5, "60", True])
def test_bad_timeouts_are_refused(timeout: Any) -> None:
    with pytest.raises(ValueError):
        cron.check_timeout(timeout)


def test_timeout_defaults() -> None:
    assert cron.check_timeout(None) == cron.DEFAULT_TIMEOUT


TOML = """[start]
port = 8000

[[cron]]
name = "nightly"
schedule = "0 3 * * *"
command = "python manage.py clearsessions"
timeout = 60

[[cron]]
name = "often"
schedule = "* * * * *"
command = "echo hi"
"""


def test_devpush_toml_declares_jobs() -> None:
    config = repo_config.parse(TOML)
    assert config.overrides["cron"] == [
        {"name": "nightly", "schedule": "0 3 * * *",
         "command": "python manage.py clearsessions", "timeout": 60},
        {"name": "often", "schedule": "* * * * *", "command": "echo hi", "timeout": 600},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "line", "words"),
    [
        ('schedule = "* * * * *"', 'schedule = "61 * * * *"', 12, "[[cron]] schedule"),
        ('schedule = "* * * * *"', 'schedule = "* * * * * *"', 12, "five fields"),
        ('name = "often"', 'name = "nightly"', 11, "two cron jobs are named 'nightly'"),
        ('command = "echo hi"', 'command = ""', 13, "[[cron]] command"),
        ('command = "echo hi"', 'command = "echo\\u0000hi"', 13, "NUL"),
        ("timeout = 60", "timeout = 0", 8, "[[cron]] timeout"),
        ("timeout = 60", 'timeout = "60"', 8, "[[cron]] timeout"),
        ("timeout = 60", "every = 60", 8, "unknown key 'every'"),
        ('command = "echo hi"', "", 10, "[[cron]] command"),
    ],
)
def test_bad_jobs_in_devpush_toml_name_the_line(old: str, new: str, line: int, words: str) -> None:
    assert old in TOML
    with pytest.raises(Invalid) as raised:
        repo_config.parse(TOML.replace(old, new))
    assert f"devpush.toml line {line}:" in raised.value.message
    assert words in raised.value.message


def test_cron_must_be_tables() -> None:
    with pytest.raises(Invalid, match=r"\[\[cron\]\] tables"):
        repo_config.parse('cron = "0 3 * * *"\n')


JOB = {"name": "nightly", "schedule": "0 3 * * *", "command": "true"}


@pytest.mark.parametrize(
    ("jobs", "words"),
    [
        ([JOB, JOB], "two cron jobs are named 'nightly'"),
        ([{**JOB, "schedule": "0 3 * *"}], "not a cron expression"),
        ([{**JOB, "command": "a\x00b"}], "NUL"),
        ([{**JOB, "timeout": 0}], "timeout"),
        ([{**JOB, "name": "Nightly Job"}], "job name"),
        ([{**JOB, "extra": 1}], "Extra inputs"),
        ([{k: v for k, v in JOB.items() if k != "command"}], "Field required"),
    ],
)
def test_bad_jobs_in_the_api_shape_are_refused(jobs: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        ProjectUpdate.model_validate({"cron": jobs})
    assert words in str(raised.value)


def test_the_dashboard_form_round_trips() -> None:
    text = "nightly | 0 3 * * * | 600 | python manage.py clearsessions | tee /tmp/x"
    jobs = parse_lines(text + "\n\n")
    assert jobs == [
        {"name": "nightly", "schedule": "0 3 * * *", "timeout": 600,
         "command": "python manage.py clearsessions | tee /tmp/x"},
    ]  # fmt: skip
    assert declaration_lines({"cron": jobs}) == text
    with pytest.raises(Invalid, match="line 2"):
        parse_lines("a | * * * * * | 5 | true\nb | * * * * *")


def test_declared_leaves_out_what_no_longer_passes() -> None:
    config = {"cron": [JOB, {**JOB, "name": "bad", "schedule": "nope"}, "junk"]}
    assert [j["name"] for j in cron.declared(config)] == ["nightly"]


def test_run_outcomes() -> None:
    assert status_of(ExecResult(0)) == "succeeded"
    assert status_of(ExecResult(3)) == "failed"
    assert status_of(ExecResult(None, error="the app is not running")) == "failed"
    assert status_of(ExecResult(None, timed_out=True)) == "timed_out"
    assert prefix("nightly", "0123456789abcdef") == "[nightly #01234567] "


def test_a_failed_run_is_told_as_such() -> None:
    from devpush.notifications.delivery import summary
    from devpush.outbox.names import PUBLIC_EVENTS

    assert "cron.failed" in PUBLIC_EVENTS  # channels may choose it
    body = {
        "event": "cron.failed",
        "team": {"name": "Acme"},
        "project": {"name": "shop"},
        "deployment": {"job": "nightly", "status": "timed_out", "error": "timed out: killed"},
        "url": "http://shop.example",
    }
    subject, text = summary(body)
    assert subject == "shop: cron job nightly timed out"
    assert text == "shop: cron job nightly timed out\ntimed out: killed\nhttp://shop.example"
    body["deployment"] = {"job": "nightly", "status": "failed", "error": "exited with code 3"}
    assert summary(body)[0] == "shop: cron job nightly failed"
