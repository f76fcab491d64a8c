"""`devpush databases ...` (the client CLI) against the app on the test platform: attaching,
listing, backing up, restoring and removing, and its errors: one line and a hint, the exit
code the README documents, no traceback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from devpush.cli import full_app
from devpush.client import databases as client_databases
from devpush.client.api import Api
from devpush.client.config import Credentials
from tests.factories.auth import Account
from tests.integration.test_projects_deployments_api import create_project


class Bridge(httpx.BaseTransport):
    """The CLI's blocking HTTP client, served by the ASGI app on the test's event loop."""

    def __init__(self, client: httpx.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client, self.loop = client, loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, content=request.read()
            )
            return await self.client.send(forwarded)

        answer = asyncio.run_coroutine_threadsafe(send(), self.loop).result(120)
        headers = [(k, v) for k, v in answer.headers.items() if k.lower() != "content-encoding"]
        return httpx.Response(answer.status_code, headers=headers, content=answer.content)


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("DEVPUSH_URL", raising=False)
    monkeypatch.delenv("DEVPUSH_TOKEN", raising=False)
    monkeypatch.delenv("DEVPUSH_PROJECT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture
async def signed_in(
    client: httpx.AsyncClient, alice: Account, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    bridge = Bridge(client, asyncio.get_running_loop())

    def bridged() -> Api:
        api = Api(Credentials(url="http://localhost", token=alice.token))
        api.http = httpx.Client(
            base_url="http://localhost", transport=bridge, headers=api.http.headers
        )
        return api

    monkeypatch.setattr(client_databases, "api", bridged)
    yield client


async def cli(runner: CliRunner, *args: str, answer: str | None = None) -> Result:
    return await asyncio.to_thread(runner.invoke, full_app(), ["databases", *args], answer)


def one_error(result: Result, code: int, words: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert words in line, result.stderr


async def test_not_signed_in_is_one_line_and_exit_3(runner: CliRunner) -> None:
    result = await cli(runner, "list", "--project", "shop")
    one_error(result, 3, "not logged in")
    assert "hint:" in result.stderr


async def test_attach_back_up_restore_and_remove(
    runner: CliRunner, signed_in: httpx.AsyncClient, alice: Account
) -> None:
    await create_project(signed_in, alice, name="shop")
    added = await cli(runner, "add", "--project", "shop", "--name", "main", "--retention", "3")
    assert added.exit_code == 0, added.output
    assert "Added main (postgres) as DATABASE_URL" in added.stdout
    listed = await cli(runner, "list", "--project", "shop", "--json")
    [database] = json.loads(listed.stdout)
    assert database["backup_retention"] == 3

    taken = await cli(runner, "backup", "main", "--project", "shop", "--json")
    assert taken.exit_code == 0, taken.output
    backup = json.loads(taken.stdout)
    assert backup["status"] == "succeeded"
    shown = await cli(runner, "backups", database["id"])  # by id, without a project
    assert shown.exit_code == 0 and backup["id"] in shown.stdout, shown.output
    restored = await cli(runner, "restore", "main", backup["id"], "--project", "shop", "--yes")
    assert restored.exit_code == 0, restored.output
    assert "Restored" in restored.stdout and "undo with" in restored.stdout

    missing = await cli(runner, "backups", "nosuch", "--project", "shop")
    one_error(missing, 4, "no database 'nosuch'")
    wrong = await cli(runner, "restore", "main", "x" * 32, "--project", "shop", "--yes")
    one_error(wrong, 4, "no such backup")
    unasked = await cli(runner, "remove", "main", "--project", "shop", answer="n\n")
    assert unasked.exit_code == 1 and "Aborted" in unasked.output
    removed = await cli(runner, "remove", "main", "--project", "shop", "--yes")
    assert removed.exit_code == 0, removed.output
    after = await cli(runner, "list", "--project", "shop", "--json")
    assert json.loads(after.stdout) == []
