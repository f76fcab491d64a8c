"""The production stack under podman-compose, with images built locally: the compose files
validate, `devpush start` brings the whole stack up and Traefik serves `/health`, an app
pushed to the platform's git remote through Traefik is served through Traefik, components
stop and start one by one, `devpush update` swaps the app blue-green while a request loop
sees no error, and a failing migration leaves the old version running and serving."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from cryptography.fernet import Fernet

from devpush.compose.service import ComposeStack
from devpush.settings import Settings
from tests.conftest import free_port
from tests.e2e.apps import APP

pytestmark = pytest.mark.ops

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = ROOT / "compose"
SERVICES = {
    "app-blue",
    "app-green",
    "worker-blue",
    "worker-green",
    "monitor",
    "postgres",
    "redis",
    "traefik",
    "socket-proxy",
}
COMPONENTS = ("app", "worker", "monitor", "postgres", "redis", "traefik", "socket-proxy")


@dataclass
class Stack:
    dir: Path
    http_port: int
    project: str
    runner_network: str
    env: dict[str, str]
    token: str = ""
    team: str = ""
    deployed: dict[str, str] = field(default_factory=dict)  # host -> expected body
    images: list[str] = field(default_factory=list)  # built by the tests, removed at the end
    work: Path | None = None  # the pushed repository

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "devpush"), *args],
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_clean_env(),
        )

    def driver(self) -> ComposeStack:
        return ComposeStack(Settings(_env_file=self.dir / ".env"))  # type: ignore[call-arg]

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.driver().compose.argv(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            env=_clean_env(),
        )

    def set_env(self, key: str, value: str) -> None:
        self.env[key] = value
        _write_env(self.dir / ".env", self.env)

    def get(self, host: str, path: str = "/") -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers={"Host": host}, timeout=60)


def _clean_env() -> dict[str, str]:
    """The environment for commands: the test's own DEVPUSH_* variables (conftest sets some)
    would override the stack's .env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    return {**env, "PATH": f"{BIN}:{os.environ['PATH']}", "COLUMNS": "200"}


def _write_env(path: Path, env: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))


def _files(override: str, ssl: str) -> list[str]:
    return [
        "-f",
        str(COMPOSE / "base.yml"),
        "-f",
        str(COMPOSE / override),
        "-f",
        str(COMPOSE / ssl),
    ]


@pytest.mark.parametrize("ssl", ["ssl-default.yml", "ssl-cloudflare.yml", "ssl-route53.yml"])
@pytest.mark.parametrize("override", ["override.yml", "override.dev.yml"])
def test_compose_files_validate(override: str, ssl: str) -> None:
    env = {**os.environ, "DEVPUSH_DEPLOY_DOMAIN": "apps.example.com"}
    result = subprocess.run(
        [str(BIN / "podman-compose"), *_files(override, ssl), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert set(config["services"]) == SERVICES
    for name, service in config["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert config["networks"]["internal"]["internal"] is True
    assert config["networks"]["runner"]["name"] == "devpush_runner"
    traefik = config["services"]["traefik"]["environment"]
    resolver = "TRAEFIK_CERTIFICATESRESOLVERS_LETSENCRYPT_ACME_"
    if ssl == "ssl-default.yml":
        assert traefik[resolver + "HTTPCHALLENGE_ENTRYPOINT"] == "web"
    else:
        assert traefik[resolver + "DNSCHALLENGE_PROVIDER"] in ("cloudflare", "route53")
        sans = traefik["TRAEFIK_ENTRYPOINTS_WEBSECURE_HTTP_TLS_DOMAINS_0_SANS"]
        assert sans == "*.apps.example.com"
    ports = [str(p) for p in config["services"]["traefik"].get("ports", [])]
    if override == "override.yml":
        assert any("443" in p for p in ports)
        assert config["services"]["app-blue"]["environment"]["DEVPUSH_CERT_RESOLVER"]
    else:
        assert any(p.startswith("127.0.0.1:") and p.endswith(":80") for p in ports), ports


@pytest.fixture(scope="module")
def stack(
    compose_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    folder = tmp_path_factory.mktemp("h1-compose")
    http_port = free_port()
    env = {
        "DEVPUSH_MODE": "compose",
        "DEVPUSH_COMPOSE_DIR": str(COMPOSE),
        "DEVPUSH_COMPOSE_DEV": "true",
        "DEVPUSH_COMPOSE_PROJECT": f"h1c{tag}",
        "DEVPUSH_COMPOSE_ENV_FILE": str(folder / ".env"),
        "DEVPUSH_APP_HOSTNAME": "localhost",
        "DEVPUSH_DEPLOY_DOMAIN": "localhost",
        "DEVPUSH_HTTP_PORT": str(http_port),
        "DEVPUSH_TRAEFIK_API_PORT": str(free_port()),
        "DEVPUSH_SECRET_KEY": uuid.uuid4().hex,
        "DEVPUSH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DEVPUSH_POSTGRES_PASSWORD": uuid.uuid4().hex,
        "DEVPUSH_REDIS_PASSWORD": uuid.uuid4().hex,
        "DEVPUSH_HOST_DATA_DIR": str(folder / "data"),
        "DEVPUSH_DOCKER_SOCKET": "/run/devpush-podman/podman.sock",
        "DEVPUSH_RUNNER_NETWORK": f"h1c{tag}_runner",
        "DEVPUSH_RUNNER_IMAGE": "localhost/devpush-runner-python:3.11",
        "DEVPUSH_VERIFY_DOMAINS": "false",
        **compose_images,
    }
    _write_env(folder / ".env", env)
    running = Stack(folder, http_port, f"h1c{tag}", f"h1c{tag}_runner", env)
    try:
        started = running.cli("start")
        assert started.returncode == 0, started.stdout + started.stderr
        yield running
    finally:
        _teardown(running)


def _teardown(stack: Stack) -> None:
    """Everything the stack made: deployments on its runner network, its containers,
    networks and volumes, and the runner network itself."""
    listed = subprocess.run(
        ["podman", "ps", "-aq", "--filter", f"network={stack.runner_network}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    for container in listed.stdout.split():
        subprocess.run(
            ["podman", "rm", "-f", "-t", "5", container], capture_output=True, timeout=120
        )
    stack.compose("down", "-v", "-t", "10")
    subprocess.run(
        ["podman", "network", "rm", stack.runner_network], capture_output=True, timeout=120
    )
    for image in stack.images:
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, timeout=120)


def _wait_ok(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.5)


def test_the_stack_serves_health_through_traefik(stack: Stack) -> None:
    response = stack.get("localhost", "/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    status = stack.cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    for component in COMPONENTS:
        line = next(li for li in status.stdout.splitlines() if f" {component} " in li)
        assert "running" in line and "healthy" in line and "unhealthy" not in line, line


def _admin_token(stack: Stack) -> str:
    """The first admin, as the README says: the host CLI runs `user`/`token` in the app."""
    created = stack.cli("user", "create", "--email", "ops@localhost", "--admin")
    assert created.returncode == 0, created.stderr
    token = stack.cli("token", "create", "--email", "ops@localhost")
    assert token.returncode == 0, token.stderr
    return token.stdout.strip().splitlines()[-1]


def test_the_admin_page_lists_runner_images_through_the_socket_proxy(stack: Stack) -> None:
    """Under compose the app reaches the engine only through the socket proxy, which must
    allow the image list (GET /images/json) for the admin page's "Runner images"."""
    created = stack.cli("user", "create", "--email", "images@localhost", "--admin")
    assert created.returncode == 0, created.stderr
    linked = stack.cli("user", "link", "images@localhost")
    assert linked.returncode == 0, linked.stderr
    path = httpx.URL("".join(linked.stdout.split())).path
    with httpx.Client(base_url=stack.url, headers={"Host": "localhost"}, timeout=60) as web:
        signed_in = web.get(path)
        assert signed_in.status_code in (302, 303), signed_in.text[:500]
        # the cookie is `Secure` under the https default: sent by hand over this plain hop
        session = signed_in.cookies.get("devpush_session")
        assert session
        page = web.get("/admin", headers={"Cookie": f"devpush_session={session}"})
    assert page.status_code == 200, page.text[:500]
    section = page.text[page.text.index('id="images"') :]
    assert "devpush-runner-python" in section, section[:1500]
    assert 'class="alert error"' not in section[: section.index("</section>")]


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": os.environ["PATH"], "HOME": str(repo), "GIT_TERMINAL_PROMPT": "0"},
    )


def test_an_app_pushed_through_traefik_is_served_through_traefik(
    stack: Stack, tmp_path: Path
) -> None:
    stack.token = _admin_token(stack)
    api = httpx.Client(
        base_url=stack.url,
        headers={"Host": "localhost", "Authorization": f"Bearer {stack.token}"},
        timeout=30,
    )
    stack.team = api.get("/api/v1/teams").json()[0]["slug"]
    project = api.post(
        f"/api/v1/teams/{stack.team}/projects",
        json={"name": "served", "start_command": "python3 app.py", "health_path": "/"},
    )
    assert project.status_code == 201, project.text
    work = tmp_path / "work"
    work.mkdir()
    _git(work, "init", "-q", "-b", "main")
    (work / "app.py").write_text(APP)
    (work / "body.txt").write_text("served by compose\n")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "first")
    remote = f"http://me:{stack.token}@localhost:{stack.http_port}/git/{stack.team}/served.git"
    pushed = _git(work, "push", remote, "main")
    assert pushed.returncode == 0, pushed.stderr
    assert "remote: Deployment succeeded: http://served.localhost" in pushed.stderr, pushed.stderr
    _wait_ok(lambda: stack.get("served.localhost").status_code == 200, "the app serving")
    assert stack.get("served.localhost").text == "served by compose"
    stack.deployed["served.localhost"] = "served by compose"
    stack.work = work


def test_components_stop_and_start_one_by_one(stack: Stack) -> None:
    stopped = stack.cli("stop", "--components", "worker")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    status = stack.cli("status", "-c", "worker,app")
    assert status.returncode == 1  # one asked for is down
    assert "stopped" in next(li for li in status.stdout.splitlines() if " worker " in li)
    assert "healthy" in next(li for li in status.stdout.splitlines() if " app " in li)
    assert stack.get("localhost", "/health").status_code == 200
    started = stack.cli("start", "--components", "worker")
    assert started.returncode == 0, started.stdout + started.stderr
    assert stack.cli("status", "-c", "worker").returncode == 0


def test_bad_component_names_and_options_are_refused(stack: Stack) -> None:
    bad = stack.cli("status", "--components", "app,database")
    assert bad.returncode == 1
    assert "unknown components: database" in bad.stderr
    both = stack.cli("update", "--all", "--components", "app")
    assert both.returncode == 1 and "either --components or --all" in both.stderr


def _derived_image(
    stack: Stack, tmp_path: Path, name: str, broken: bool, step: bool = False
) -> str:
    """An image built from the stack's devpush image: a new version, optionally one whose
    migration fails, or one that brings an upgrade step (UPGRADE_STEP)."""
    context = tmp_path / name
    context.mkdir()
    lines = [f"FROM {stack.env['DEVPUSH_IMAGE']}", f"LABEL devpush.test-version={name}"]
    for wanted, script in ((broken, BROKEN_MIGRATION), (step, UPGRADE_STEP)):
        if wanted:
            (context / "change.py").write_text(script)
            lines += [
                "USER 0",
                "COPY change.py /tmp/change.py",
                "RUN python3 /tmp/change.py",
                "USER 10001:10001",
            ]
    (context / "Containerfile").write_text("\n".join(lines) + "\n")
    image = f"localhost/h1-devpush:{name}-{uuid.uuid4().hex[:6]}"
    built = subprocess.run(
        ["podman", "build", "--pull=never", "-q", "--format", "docker", "-t", image, str(context)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    stack.images.append(image)
    return image


# Writes, into the image, an upgrade step of a later version that leaves a mark in /data.
UPGRADE_STEP = """
import json
from pathlib import Path
import devpush
versions = Path(devpush.__file__).parent / "upgrades" / "versions"
(versions / "99.0.0.json").write_text(json.dumps(
    {"reason": "h1 test: a step of the next version", "actions": ["script", "sync-routes"]}
))
(versions / "99.0.0.sh").write_text('echo "99.0.0" >> "$DEVPUSH_DATA_DIR/h1-upgrade-ran.txt"\\n')
"""

# Writes, into the image, a migration after the current head that fails.
BROKEN_MIGRATION = '''
from pathlib import Path
from alembic.script import ScriptDirectory
import devpush
migrations = Path(devpush.__file__).parent / "migrations"
head = ScriptDirectory(str(migrations)).get_current_head()
(migrations / "versions" / "9999_h1_broken.py").write_text(f"""
revision = "h1broken"
down_revision = "{head}"
def upgrade():
    raise RuntimeError("h1 test: this migration always fails")
def downgrade():
    pass
""")
'''


class RequestLoop:
    """GETs the dashboard and every deployed app through Traefik until stopped."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.targets = [
            ("localhost", "/health", None),
            *((h, "/", b) for h, b in stack.deployed.items()),
        ]
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                for host, path, body in self.targets:
                    sent = time.monotonic()
                    try:
                        r = client.get(f"{self.stack.url}{path}", headers={"Host": host})
                        if r.status_code != 200 or (body is not None and r.text != body):
                            took = time.monotonic() - sent
                            self.errors.append(
                                f"{host}{path}: {r.status_code} after {took:.1f}s at "
                                f"{time.strftime('%H:%M:%S')} {r.text[:100]}"
                            )
                        else:
                            self.ok += 1
                    except httpx.HTTPError as exc:
                        self.errors.append(f"{host}{path}: {type(exc).__name__} {exc}")
                time.sleep(0.02)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _app_image(stack: Stack, component: str = "app") -> tuple[str, str]:
    """The service running `component` (its active colour) and that container's image."""
    driver = stack.driver()
    service = driver.service(component)
    (container,) = [c for c in driver.compose.containers(service) if c.running]
    image = subprocess.run(
        ["podman", "inspect", "--format", "{{.ImageName}}", container.id],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return service, image


def test_update_swaps_the_app_with_no_failed_request(stack: Stack, tmp_path: Path) -> None:
    assert stack.deployed, "needs the deployed app of the push test"
    before, _ = _app_image(stack)
    image = _derived_image(stack, tmp_path, "next", broken=False)
    stack.set_env("DEVPUSH_IMAGE", image)
    with RequestLoop(stack) as loop:
        time.sleep(2)
        updated = stack.cli("update")
        time.sleep(2)
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert loop.errors == [], loop.errors[:10]
    assert loop.ok > 0
    after, running = _app_image(stack)
    assert after != before and running == image
    assert f"switching the dashboard route to {after}" in updated.stderr
    assert stack.driver().compose.containers(before) == []  # the old colour is gone
    assert stack.get("localhost", "/health").json()["status"] == "ok"


def test_update_all_swaps_the_worker_too_and_deploys_still_work(
    stack: Stack, tmp_path: Path
) -> None:
    assert stack.work is not None, "needs the repository of the push test"
    worker_before, _ = _app_image(stack, "worker")
    monitor_before = [c.id for c in stack.driver().compose.containers("monitor")]
    image = _derived_image(stack, tmp_path, "next2", broken=False, step=True)
    stack.set_env("DEVPUSH_IMAGE", image)
    with RequestLoop(stack) as loop:
        updated = stack.cli("update", "--full")  # --all, the runner images and the steps
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert loop.errors == [], loop.errors[:10]
    assert re.search(r"image \S*devpush-runner-python:3.11: (up to date|built in)", updated.stderr)
    ran = stack.dir / "data" / "h1-upgrade-ran.txt"
    assert ran.read_text().split() == ["99.0.0"]  # once, in the migration container
    listed = stack.cli("upgrades")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert re.search(r"99\.0\.0\W+applied", listed.stdout), listed.stdout
    status = stack.cli("status")
    assert re.search(r"99\.0\.0\W+applied", status.stdout), status.stdout + status.stderr
    worker_after, worker_image = _app_image(stack, "worker")
    assert worker_after != worker_before and worker_image == image
    assert [c.id for c in stack.driver().compose.containers("monitor")] != monitor_before
    # The new worker, monitor and socket proxy deploy a new commit.
    (stack.work / "body.txt").write_text("after the update\n")
    _git(stack.work, "commit", "-qam", "second")
    remote = f"http://me:{stack.token}@localhost:{stack.http_port}/git/{stack.team}/served.git"
    pushed = _git(stack.work, "push", remote, "main")
    assert pushed.returncode == 0, pushed.stderr
    assert "remote: Deployment succeeded" in pushed.stderr, pushed.stderr
    _wait_ok(lambda: stack.get("served.localhost").text == "after the update", "the new body")
    stack.deployed["served.localhost"] = "after the update"


def test_a_failing_migration_leaves_the_old_version_serving(stack: Stack, tmp_path: Path) -> None:
    before, image_before = _app_image(stack)
    good = stack.env["DEVPUSH_IMAGE"]
    stack.set_env("DEVPUSH_IMAGE", _derived_image(stack, tmp_path, "broken", broken=True))
    try:
        with RequestLoop(stack) as loop:
            updated = stack.cli("update")
    finally:
        stack.set_env("DEVPUSH_IMAGE", good)
    assert updated.returncode == 1
    assert "database migrations failed" in updated.stderr
    assert "this migration always fails" in updated.stderr
    assert "update aborted before switching anything" in updated.stderr
    assert loop.errors == [], loop.errors[:10]
    assert _app_image(stack) == (before, image_before)  # nothing switched
    assert stack.get("localhost", "/health").status_code == 200
    for host, body in stack.deployed.items():
        assert stack.get(host).text == body


def test_backup_and_restore_run_inside_the_app_container(stack: Stack, tmp_path: Path) -> None:
    backed_up = stack.cli("backup")
    assert backed_up.returncode == 0, backed_up.stdout + backed_up.stderr
    archives = list((stack.dir / "data" / "backups").glob("*.tar.gz"))
    assert len(archives) == 1, archives  # written by the container, visible on the host
    assert f"on this host: {archives[0]}" in " ".join(backed_up.stdout.split())
    outside = tmp_path / "elsewhere.tar.gz"
    outside.write_bytes(archives[0].read_bytes())
    refused = stack.cli("restore", str(outside))
    assert refused.returncode == 1
    assert "outside the data dir" in refused.stderr
    assert stack.get("localhost", "/health").status_code == 200


def test_start_refuses_an_incomplete_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        f"DEVPUSH_MODE=compose\nDEVPUSH_COMPOSE_DIR={COMPOSE}\nDEVPUSH_COMPOSE_PROJECT=h1empty\n"
        f"DEVPUSH_HOST_DATA_DIR={tmp_path / 'data'}\n"
    )
    result = subprocess.run(
        [str(BIN / "devpush"), "start"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert result.returncode == 1
    assert "missing in .env: DEVPUSH_APP_HOSTNAME" in result.stderr
    assert "DEVPUSH_POSTGRES_PASSWORD" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing was prepared or started
    ps = subprocess.run(
        ["podman", "ps", "-aq", "--filter", "label=com.docker.compose.project=h1empty"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ps.stdout.strip() == ""


def test_update_outside_compose_mode_updates_the_embedded_platform_so_needs_it_running(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [str(BIN / "devpush"), "update", "--all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert result.returncode == 1
    assert "--components and --all are for compose mode" in result.stderr
    result = subprocess.run(
        [str(BIN / "devpush"), "update"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert result.returncode == 3  # no platform runs from this data dir (tests/e2e/test_update)
    assert "devpush is not running from" in result.stderr
