"""Every server-side `devpush` command, enumerated from the typer app so that a new one is
covered at once, answers a missing platform and a wrong data directory (its state points at a
database that refuses and at a closed Redis port) in at most three lines, with no traceback
and the exit code the README documents (issue #18, item 3): where it looked, then a hint."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import typer
from sqlalchemy.engine import make_url
from typer.core import TyperGroup

from devpush.cli import NO_PLATFORM, full_app

# Commands that are not run here, and why.
NOT_SERVER_SIDE = {
    "up": "starts the platform (tests/e2e/test_up.py)",
    "app": "runs the app until stopped",
    "socket-proxy": "serves the Engine API allowlist until stopped; needs no platform",
    "settings": "prints the configuration table; needs no platform",
    "plan": "reads a source tree; needs no platform",
    "keys generate": "prints a new key; needs no platform",
}
# Minimal valid arguments, and the exit code when it is not NO_PLATFORM.
ARGS: dict[str, list[str]] = {
    "worker": ["--check"],  # without --check it runs until stopped
    "monitor": ["--check"],
    "start": ["--components", "app"],  # without it, `start` starts a platform here
    "stop": ["--components", "app"],
    "user create": ["--email", "a@example.com"],
    "user link": ["a@example.com"],
    "token create": ["--email", "a@example.com"],
    "backup": ["--output", "{tmp}/backup.tar.gz"],
    "restore": ["{tmp}/backup.tar.gz"],
}
CODE = {
    "monitor": 1,  # unhealthy: no heartbeat under the data directory (it needs no database)
}


def server_side_commands() -> list[str]:
    def walk(group: TyperGroup, prefix: str) -> Iterator[str]:
        for name, command in group.commands.items():
            if getattr(command, "rich_help_panel", None) == "Client":
                continue  # the API client: tests/e2e/test_cli.py
            path = f"{prefix}{name}"
            if isinstance(command, TyperGroup):
                yield from walk(command, f"{path} ")
            elif path not in NOT_SERVER_SIDE:
                yield path

    root = typer.main.get_command(full_app())
    assert isinstance(root, TyperGroup)
    return sorted(walk(root, ""))


COMMANDS = server_side_commands()


def test_the_list_is_the_typer_app() -> None:
    assert {"migrate", "user create", "token create", "keys rotate", "backup"} <= set(COMMANDS)
    assert not set(ARGS) - set(COMMANDS), "ARGS names a command that is gone"


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


def wrong_database() -> str:
    """A PostgreSQL that answers but refuses: a role that does not exist (or, with no
    PostgreSQL there, a refused connection)."""
    base = make_url(os.environ.get("DEVPUSH_TEST_DATABASE_URL", "postgresql://127.0.0.1:5432/x"))
    wrong = base.set(
        drivername="postgresql+asyncpg",
        username="devpush_no_such_role",
        password="wrong",
        database="devpush_no_such_db",
    )
    return wrong.render_as_string(hide_password=False)


def data_dir(kind: str, root: Path, closed_port: int) -> Path:
    data = root / kind / "data"
    data.mkdir(parents=True, mode=0o700)
    if kind == "wrong":
        run = data / "run"
        run.mkdir(mode=0o700)
        state = {
            "database_url": wrong_database(),
            "redis_url": f"redis://:wrong@127.0.0.1:{closed_port}/0",
            "supervisor_pid": None,
            "children": {},
            "ports": {},
        }
        (run / "state.json").write_text(json.dumps(state))
    return data


def run(command: str, data: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env.update(DEVPUSH_DATA_DIR=str(data), HOME=str(home), XDG_CONFIG_HOME=str(home))
    args = [a.format(tmp=data.parent) for a in ARGS.get(command, [])]
    return subprocess.run(
        [sys.executable, "-m", "devpush", *command.split(), *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["empty", "wrong"])
def test_every_server_side_command_fails_in_one_line(
    kind: str, tmp_path: Path, closed_port: int
) -> None:
    data = data_dir(kind, tmp_path, closed_port)
    (data.parent / "backup.tar.gz").write_bytes(b"")
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(
            zip(COMMANDS, pool.map(lambda c: run(c, data, tmp_path), COMMANDS), strict=True)
        )
    problems = []
    for command, done in results.items():
        output = (done.stdout + done.stderr).strip()
        expected = CODE.get(command, NO_PLATFORM)
        if "Traceback" in output or len(output.splitlines()) > 3 or done.returncode != expected:
            problems.append(f"`devpush {command}` exited {done.returncode}:\n{output[-1500:]}")
        elif expected == NO_PLATFORM:
            assert str(data) in output or "cannot reach" in output, output  # where it looked
            lines = output.splitlines()
            hinted = lines[-1].startswith("hint: ") or "; " in lines[0]  # how to get one
            assert lines[0].startswith("error: ") and hinted, output
    assert not problems, "\n\n".join(problems)
    if kind == "wrong":
        assert "cannot reach the database at" in results["migrate"].stderr
        assert f"127.0.0.1:{closed_port}" in results["worker"].stderr
