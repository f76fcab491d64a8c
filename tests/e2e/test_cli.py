"""The client CLI end to end against a running platform, and devpush.toml in the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.apps import Api, commit, git, make_repo
from tests.e2e.platform import RunningPlatform, platform_env, start_platform, wait_health

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("cli") / "data"
    running = start_platform(data, env=platform_env(data, DEVPUSH_RUNTIME="process"))
    wait_health(running.app_url)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def cli_env(platform: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devpush", *args],
        env=env,
        text=True,
        capture_output=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def logged_in(platform: RunningPlatform, cli_env: dict[str, str]) -> dict[str, str]:
    bad = cli(cli_env, "login", "--url", platform.app_url, "--token", "dp_wrong_token")
    assert bad.returncode == 3 and "error:" in bad.stderr and "hint:" in bad.stderr
    result = cli(cli_env, "login", "--url", platform.app_url, "--token", platform.token())
    assert result.returncode == 0, result.stderr
    path = Path(cli_env["XDG_CONFIG_HOME"]) / "devpush" / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    return cli_env


def test_cli_workflow(platform: RunningPlatform, logged_in: dict[str, str], tmp_path: Path) -> None:
    env = logged_in
    who = cli(env, "whoami", "--json")
    assert json.loads(who.stdout)["user"]["email"] == "admin@localhost"
    repo = make_repo(tmp_path / "repo", body="v1")
    created = cli(
        env, "projects", "create", "web", "--repo", f"file://{repo}", "--start", "python3 app.py"
    )
    assert created.returncode == 0, created.stderr
    assert "web" in cli(env, "projects", "list").stdout

    deployed = cli(env, "deploy", "--project", "web", "--wait")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "Ready http://web.localhost" in deployed.stdout
    assert "Fetching main" in deployed.stdout  # the build log streamed through
    api = Api(platform.app_url, platform.token(), platform.proxy_url)
    assert api.body("http://web.localhost") == "v1"

    follow = subprocess.Popen(
        [sys.executable, "-m", "devpush", "logs", "--project", "web", "-f"],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        api.serve("http://web.localhost")
        deadline = time.monotonic() + 20
        seen = ""
        assert follow.stdout is not None
        while time.monotonic() < deadline and "listening on" not in seen:
            seen += follow.stdout.readline()
        assert "listening on" in seen
    finally:
        follow.kill()
        follow.wait()

    assert cli(env, "env", "set", "GREETING=, hello", "--project", "web").returncode == 0
    listed = json.loads(cli(env, "env", "list", "--project", "web", "--json").stdout)
    assert [v["key"] for v in listed] == ["GREETING"] and "hello" not in json.dumps(listed)
    first = json.loads(cli(env, "deployments", "list", "--project", "web", "--json").stdout)[0]
    redeployed = cli(env, "deployments", "redeploy", first["id"], "--wait", "--json")
    assert redeployed.returncode == 0, redeployed.stderr
    assert api.body("http://web.localhost") == "v1, hello"

    second = json.loads(redeployed.stdout)
    rolled = cli(env, "deployments", "rollback", second["id"], "--json")
    assert rolled.returncode == 0 and json.loads(rolled.stdout)["id"] == first["id"]
    assert api.body("http://web.localhost") == "v1"

    missing = cli(env, "deploy", "--project", "nope")
    assert missing.returncode == 4 and "no project 'nope'" in missing.stderr
    bad_since = cli(env, "logs", "--project", "web", "--since", "yesterday")
    assert bad_since.returncode == 2 and "not a duration" in bad_since.stderr


def test_failing_deploy_exits_non_zero_and_devpush_toml(
    platform: RunningPlatform, logged_in: dict[str, str], tmp_path: Path
) -> None:
    env = logged_in
    repo = make_repo(tmp_path / "repo", body="toml")
    (repo / "other.py").write_text(
        (repo / "app.py")
        .read_text()
        .replace('BODY = open("body.txt").read().strip()', 'BODY = "from other.py"')
    )
    (repo / "devpush.toml").write_text('[start]\ncommand = "python3 other.py"\n')
    commit(repo, "toml")
    assert (
        cli(
            env,
            "projects",
            "create",
            "tomlapp",
            "--repo",
            f"file://{repo}",
            "--start",
            "python3 app.py",
        ).returncode
        == 0
    )
    ok = cli(env, "deploy", "--project", "tomlapp", "--wait", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    result = json.loads(ok.stdout)
    assert result["config"]["start_command"] == "python3 other.py"
    api = Api(platform.app_url, platform.token(), platform.proxy_url)
    assert api.body(result["urls"]["deployment"]) == "from other.py"

    (repo / "devpush.toml").write_text('[start]\ncommand = "python3 other.py"\nport = "x"\n')
    commit(repo, "broken toml")
    broken = cli(env, "deploy", "--project", "tomlapp", "--wait")
    assert broken.returncode == 1
    assert "devpush.toml line 3: [start] port must be int" in broken.stderr

    (repo / "devpush.toml").write_text('[build]\ncommand = "echo compiling; exit 7"\n')
    commit(repo, "failing build")
    failed = cli(env, "deploy", "--project", "tomlapp", "--wait")
    assert failed.returncode == 1 and "Build failed: exit code 7" in failed.stderr
    assert "compiling" in failed.stdout

    # [watch]: a push that touches no watched path is skipped
    (repo / "devpush.toml").write_text('[watch]\npaths = ["src/*"]\n')
    (repo / "src").mkdir()
    (repo / "src" / "x.txt").write_text("1")
    commit(repo, "watch src")
    assert cli(env, "deploy", "--project", "tomlapp", "--wait").returncode == 0
    (repo / "README").write_text("docs only")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "docs")
    skipped = cli(env, "deploy", "--project", "tomlapp", "--wait", "--json")
    assert skipped.returncode == 1
    assert json.loads(skipped.stdout)["conclusion"] == "skipped"
