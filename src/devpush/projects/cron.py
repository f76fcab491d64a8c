"""A project's cron jobs: what may be declared (a name, a five-field cron schedule in UTC, a
shell command and a timeout in seconds), in the project's settings or in devpush.toml
`[[cron]]`, and when a schedule fires next.

Jobs run in each environment's live deployment (never in previews); the scheduler, the runs
and their history live in the `cron/` package."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from croniter import croniter

MAX_JOBS = 20
MAX_COMMAND = 4096
DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 86_400
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
# croniter's shorthands that name a five-field schedule (not @reboot, which has no time).
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            "a job name is 1 to 40 lowercase letters, digits, '-' and '_', starting with a "
            "letter or digit"
        )
    return name


def check_schedule(schedule: object) -> str:
    """Five fields (minute hour day-of-month month day-of-week, UTC) or @hourly, @daily..."""
    if not isinstance(schedule, str) or not schedule.strip():
        raise ValueError('a schedule is a cron expression such as "0 3 * * *" (UTC)')
    value = " ".join(schedule.split())
    fields = value.split(" ")
    if value.startswith("@"):
        if value not in _ALIASES:
            raise ValueError(f"{value[:40]!r} is not a schedule; use one of {', '.join(_ALIASES)}")
    elif len(fields) != 5 or not croniter.is_valid(value):
        raise ValueError(
            f"{value[:80]!r} is not a cron expression: it needs five fields, minute hour "
            'day-of-month month day-of-week, e.g. "0 3 * * *" (03:00 UTC every day)'
        )
    return value


def check_command(command: object) -> str:
    if not isinstance(command, str) or not command.strip():
        raise ValueError("a job needs a command, e.g. python manage.py clearsessions")
    if len(command) > MAX_COMMAND:
        raise ValueError(f"a job's command is at most {MAX_COMMAND} characters")
    if "\x00" in command or any(ord(c) < 32 and c not in "\t" for c in command):
        raise ValueError("a job's command must not contain NUL, newlines or control characters")
    return command


def check_timeout(timeout: object) -> int:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TIMEOUT:
        raise ValueError(f"a job's timeout is a whole number of seconds from 1 to {MAX_TIMEOUT}")
    return timeout


def check_set(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs of one project together: at most MAX_JOBS, names unique."""
    if len(jobs) > MAX_JOBS:
        raise ValueError(f"at most {MAX_JOBS} cron jobs per project")
    names = [j["name"] for j in jobs]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two cron jobs are named {name!r}; give each its own name")
    return jobs


def declared(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The jobs a deployment's recorded config declares (each a name, schedule, command and
    timeout); an entry that no longer passes the rules is left out rather than run."""
    jobs = []
    for entry in config.get("cron") or []:
        if not isinstance(entry, dict):
            continue
        try:
            jobs.append(
                {
                    "name": check_name(entry.get("name")),
                    "schedule": check_schedule(entry.get("schedule")),
                    "command": check_command(entry.get("command")),
                    "timeout": check_timeout(entry.get("timeout")),
                }
            )
        except ValueError:
            continue
    return jobs


def next_slot(schedule: str, after: datetime) -> datetime:
    """The first time strictly after `after` (aware, UTC) at which the schedule fires."""
    result: datetime = croniter(schedule, after).get_next(datetime)
    return result


def last_slot(schedule: str, at: datetime) -> datetime:
    """The latest time at or before `at` at which the schedule fires (minute precision)."""
    moment = at.replace(second=0, microsecond=0)
    if croniter.match(schedule, moment):
        return moment
    result: datetime = croniter(schedule, moment).get_prev(datetime)
    return result
