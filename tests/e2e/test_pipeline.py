"""The deploy pipeline end to end, on both runtimes: a commit becomes a live URL through
Traefik; redeploys switch with no error; rollback, promote, cancel; failures; hostile input."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from devpush.runstate import read_state
from devpush.settings import Settings
from tests.e2e.apps import Api, commit, git, make_repo
from tests.e2e.platform import RunningPlatform

pytestmark = pytest.mark.e2e


class RequestLoop:
    """Requests a URL through Traefik continuously, counting failures."""

    def __init__(self, api: Api, url: str) -> None:
        self.api, self.url = api, url
        self.bodies: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = self.api.serve(self.url)
                if response.status_code == 200:
                    self.bodies.append(response.text)
                else:
                    self.errors.append(f"HTTP {response.status_code}")
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
            time.sleep(0.01)

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_deploy_redeploy_and_rollback(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", body="A")
    project = api.project(
        repo, "shop", environments=[{"name": "staging", "branch_pattern": "release/*"}]
    )
    first = api.wait(api.deploy(project["id"])["id"])
    assert first["conclusion"] == "succeeded", first
    urls = first["urls"]
    assert set(urls) == {"deployment", "branch", "environment", "environment_id"}
    for url in urls.values():
        assert api.body(url) == "A"

    commit(repo, "B")
    with RequestLoop(api, urls["environment"]) as loop:
        second = api.wait(api.deploy(project["id"])["id"])
        time.sleep(0.3)
    assert second["conclusion"] == "succeeded", second
    assert loop.errors == [], loop.errors[:5]
    assert "A" in loop.bodies and loop.bodies[-1] == "B"
    for kind in ("branch", "environment", "environment_id"):
        assert api.body(second["urls"][kind]) == "B"
    assert api.body(first["urls"]["deployment"]) == "A"  # the previous one stays warm

    api.post(
        f"/api/v1/projects/{project['id']}/domains", {"hostname": "shop.example.com"}, expect=201
    )
    api.post(
        f"/api/v1/projects/{project['id']}/domains",
        {"hostname": "www.shop.example.com", "kind": "redirect", "redirect_to": "shop.example.com"},
        expect=201,
    )
    assert api.body("http://shop.example.com") == "B"
    redirect = api.serve("http://www.shop.example.com/path?q=1")
    assert redirect.status_code == 301
    assert redirect.headers["location"] == "http://shop.example.com/path?q=1"

    started = time.monotonic()
    rolled = api.post(f"/api/v1/deployments/{second['id']}/rollback", expect=200)
    assert rolled["id"] == first["id"]
    assert api.body(urls["environment"]) == "A"
    assert time.monotonic() - started < 1.0
    assert api.body("http://shop.example.com") == "A"  # the custom domain follows
    listing = api.get(f"/api/v1/projects/{project['id']}/deployments")
    assert [d["id"] for d in listing["items"]] == [second["id"], first["id"]]

    # Two more deployments: D serves, C stays warm as the previous one everywhere, and A and B
    # (neither current nor previous on any alias) are cleaned up: their own URLs stop serving.
    for body in ("C", "D"):
        commit(repo, body)
        latest = api.wait(api.deploy(project["id"])["id"])
        assert latest["conclusion"] == "succeeded", latest
    assert api.body(urls["environment"]) == "D"
    deadline = time.monotonic() + 30
    for cold in (first, second):
        while (served := api.serve(cold["urls"]["deployment"])).status_code != 404:
            assert time.monotonic() < deadline, f"{cold['id']} still served: {served.text!r}"
            time.sleep(0.5)
    listing = api.get(f"/api/v1/projects/{project['id']}/deployments")
    warm = listing["items"][1]
    assert api.body(warm["urls"]["deployment"]) == "C"
    refused = api.post(f"/api/v1/deployments/{second['id']}/rollback", expect=409)
    assert "not running any more" in refused["error"]["message"]


def test_promote_preview_branch_and_custom_env(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", body="prod")
    project = api.project(
        repo, "promo", environments=[{"name": "staging", "branch_pattern": "release/*"}]
    )
    assert api.wait(api.deploy(project["id"])["id"])["conclusion"] == "succeeded"
    git(repo, "checkout", "-q", "-b", "release/1.0")
    commit(repo, "staging build")
    staged = api.wait(api.deploy(project["id"], branch="release/1.0")["id"])
    assert staged["conclusion"] == "succeeded", staged
    assert staged["urls"]["environment"].startswith("http://promo-env-staging.")
    assert api.body(staged["urls"]["environment"]) == "staging build"
    git(repo, "checkout", "-q", "-b", "feature/x")
    commit(repo, "preview")
    preview = api.wait(api.deploy(project["id"], branch="feature/x")["id"])
    assert preview["conclusion"] == "succeeded"
    assert "environment" not in preview["urls"]
    assert api.body(preview["urls"]["branch"]) == "preview"
    production_url = next(
        e["url"]
        for e in api.get(f"/api/v1/projects/{project['id']}")["environments"]
        if e["is_production"]
    )
    assert api.body(production_url) == "prod"
    api.post(f"/api/v1/deployments/{preview['id']}/promote", expect=200)
    assert api.body(production_url) == "preview"


def test_build_failure_keeps_old_deployment_serving(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", body="good")
    project = api.project(repo, "buildfail")
    good = api.wait(api.deploy(project["id"])["id"])
    assert good["conclusion"] == "succeeded"
    api.http.patch(
        f"/api/v1/projects/{project['id']}", json={"build_command": "echo compiling; exit 2"}
    ).raise_for_status()
    commit(repo, "bad")
    bad = api.wait(api.deploy(project["id"])["id"])
    assert bad["conclusion"] == "failed"
    assert "Build failed: exit code 2" in bad["error"]
    assert api.body(good["urls"]["environment"]) == "good"


@pytest.mark.parametrize(
    ("name", "env", "expected"),
    [
        ("exits", {"EXIT_AT_START": "1"}, "exited during start-up: exit code 4"),
        ("unhealthy", {"FAIL_HEALTH": "1"}, "did not answer 2xx/3xx on /health"),
    ],
)
def test_app_failures_conclude_failed(
    api: Api, tmp_path: Path, name: str, env: dict[str, str], expected: str
) -> None:
    repo = make_repo(tmp_path / "repo")
    project = api.project(repo, name, env_vars=env, health_path="/health")
    result = api.wait(api.deploy(project["id"])["id"])
    assert result["conclusion"] == "failed", result
    assert expected in result["error"]


def test_slow_start_still_succeeds(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", body="slow")
    project = api.project(repo, "slow", env_vars={"START_DELAY": "3"})
    result = api.wait(api.deploy(project["id"])["id"])
    assert result["conclusion"] == "succeeded", result
    assert api.body(result["urls"]["deployment"]) == "slow"


def test_cancel_during_build(api: Api, deploy_platform: RunningPlatform, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    project = api.project(repo, "cancel", build_command="echo building; sleep 60")
    deployment = api.deploy(project["id"])
    api.wait_status(deployment["id"], "deploy")
    time.sleep(0.5)
    canceled = api.post(f"/api/v1/deployments/{deployment['id']}/cancel", expect=200)
    assert canceled["conclusion"] == "canceled"
    result = api.wait(deployment["id"])
    assert result["conclusion"] == "canceled"
    again = api.http.post(f"/api/v1/deployments/{deployment['id']}/cancel")
    assert again.status_code == 409
    assert_no_instance(deploy_platform, deployment["id"])


def test_superseded_push_is_skipped(api: Api, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", body="one")
    project = api.project(repo, "super", build_command="sleep 2")
    first = api.deploy(project["id"])
    commit(repo, "two")
    second = api.deploy(project["id"])
    assert api.wait(first["id"])["conclusion"] == "skipped"
    result = api.wait(second["id"])
    assert result["conclusion"] == "succeeded"
    assert api.body(result["urls"]["environment"]) == "two"


def test_hostile_branch_name(api: Api, tmp_path: Path) -> None:
    marker = Path("/tmp/pwned")
    marker.unlink(missing_ok=True)
    # git refuses spaces in branch names, so ${IFS} stands in for the space a shell would need
    branch = "feat/$(touch${IFS}/tmp/pwned)"
    repo = make_repo(tmp_path / "repo", body="hostile")
    git(repo, "checkout", "-q", "-b", branch)
    project = api.project(repo, "hostile")
    result = api.wait(api.deploy(project["id"], branch=branch)["id"])
    assert result["conclusion"] == "succeeded", result
    branch_url = result["urls"]["branch"]
    assert branch_url.startswith("http://hostile-branch-feat-touch-ifs-tmp-pwned.")
    assert api.body(branch_url) == "hostile"
    assert not marker.exists()
    for bad_branch in ("main\n; rm -rf /", "feat/$(touch /tmp/pwned)", "-x", "a..b", "x" * 300):
        bad = api.http.post(
            f"/api/v1/projects/{project['id']}/deployments", json={"branch": bad_branch}
        )
        assert bad.status_code == 422, bad_branch
        assert bad.json()["error"]["message"]


def test_worker_killed_mid_deploy_is_concluded(
    api: Api, deploy_platform: RunningPlatform, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo", body="survivor")
    project = api.project(repo, "crash", build_command="sleep 1")
    deployment = api.deploy(project["id"])
    state = read_state(Settings(data_dir=deploy_platform.data_dir))  # type: ignore[call-arg]
    assert state is not None
    os.kill(state.children["worker"], signal.SIGKILL)
    result = api.wait(deployment["id"], timeout=120)
    assert result["conclusion"] in ("succeeded", "failed"), result
    if result["conclusion"] == "failed":
        assert "worker" in result["error"]
        assert_no_instance(deploy_platform, deployment["id"])
    else:
        assert api.body(result["urls"]["deployment"]) == "survivor"
    # the supervisor restarted the worker: the next deployment goes through
    commit(repo, "after")
    assert api.wait(api.deploy(project["id"])["id"])["conclusion"] == "succeeded"


def test_unknown_host_gets_not_found_page(api: Api) -> None:
    response = api.serve("http://ghost-id-0000000.localhost")
    assert response.status_code == 404
    assert "Deployment not found" in response.text


def assert_no_instance(platform: RunningPlatform, deployment_id: str, timeout: float = 30) -> None:
    """No process or container of the deployment remains."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leftovers = []
        if platform.env.get("DEVPUSH_RUNTIME") == "docker":
            out = subprocess.run(
                [
                    "podman",
                    "ps",
                    "-a",
                    "--filter",
                    f"label=devpush.deployment={deployment_id}",
                    "--format",
                    "{{.ID}}",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            leftovers = out.split()
        else:
            instance = platform.data_dir / "runtime" / "process" / deployment_id
            leftovers = [
                p.pid
                for p in psutil.process_iter(["cwd"])
                if (p.info.get("cwd") or "").startswith(str(instance))
            ]
            if instance.exists():
                leftovers.append(str(instance))
        if not leftovers:
            return
        time.sleep(0.3)
    raise AssertionError(f"instance of {deployment_id} left behind: {leftovers}")


PROBE_APP = """\
import json, os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
    return None


def probe(host, port, payload):
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(payload)
            data = sock.recv(200)
    except OSError as exc:
        return "unreachable: " + type(exc).__name__
    if data[:1] == b"R":  # PostgreSQL authentication request: 0 = no password needed
        return "pg auth code %d" % int.from_bytes(data[5:9], "big")
    return data.decode(errors="replace")


params = b"user\\0postgres\\0database\\0devpush\\0\\0"
STARTUP = (len(params) + 8).to_bytes(4, "big") + (196608).to_bytes(4, "big") + params


GET = b"GET /api/http/routers HTTP/1.0\\r\\n\\r\\n"
RESULTS = {}
for host in filter(None, ["127.0.0.1", gateway()]):
    RESULTS[host + " redis"] = probe(host, int(os.environ["REDIS_PORT"]), b"PING\\r\\n")
    RESULTS[host + " db"] = probe(host, int(os.environ["DB_PORT"]), STARTUP)
    RESULTS[host + " traefik api"] = probe(host, int(os.environ["TRAEFIK_PORT"]), GET)
    RESULTS[host + " platform"] = probe(host, int(os.environ["APP_PORT"]), GET)


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(RESULTS).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), H).serve_forever()
"""


def test_apps_cannot_reach_the_platforms_services(
    api: Api, deploy_platform: RunningPlatform, tmp_path: Path
) -> None:
    """PostgreSQL, Redis, Traefik's API and the platform's own port, on loopback and on the
    gateway an app sees: unreachable from an app on either runtime (the process runtime puts
    each instance in its own network namespace), but for PostgreSQL at the gateway, where
    managed databases live and which refuses the platform's roles."""
    repo = make_repo(tmp_path / "repo")
    (repo / "probe.py").write_text(PROBE_APP)
    commit(repo, "probe")
    ports = {
        "DB_PORT": deploy_platform.env["DEVPUSH_EMBEDDED_DB_PORT"],
        "REDIS_PORT": deploy_platform.env["DEVPUSH_EMBEDDED_REDIS_PORT"],
        "TRAEFIK_PORT": deploy_platform.env["DEVPUSH_TRAEFIK_API_PORT"],
        "APP_PORT": deploy_platform.env["DEVPUSH_APP_PORT"],
    }
    project = api.project(repo, "probe", start_command="python3 probe.py", env_vars=ports)
    result = api.wait(api.deploy(project["id"])["id"])
    assert result["conclusion"] == "succeeded", result
    results = api.serve(result["urls"]["deployment"]).json()
    assert len(results) == 8, results  # loopback and the gateway, four services each
    # PostgreSQL holds the managed databases too, so its port answers at the gateway; its
    # pg_hba.conf turns the superuser (and the platform's role) away before any password
    [gateway_db] = [k for k in results if k.endswith(" db") and not k.startswith("127.")]
    assert "pg_hba.conf rejects connection" in results.pop(gateway_db), results
    assert all(v.startswith("unreachable") for v in results.values()), results


def test_traefiks_api_answers_the_platform_only(deploy_platform: RunningPlatform) -> None:
    """Even from where it can be reached, Traefik's API wants the platform's credentials."""
    from devpush.signing import TRAEFIK_API_USER, traefik_api_password

    api = f"http://127.0.0.1:{deploy_platform.env['DEVPUSH_TRAEFIK_API_PORT']}"
    assert httpx.get(f"{api}/ping", timeout=5).status_code == 200
    assert httpx.get(f"{api}/api/http/routers", timeout=5).status_code == 401
    wrong = httpx.get(f"{api}/api/http/routers", auth=(TRAEFIK_API_USER, "guess"), timeout=5)
    assert wrong.status_code == 401
    key = (deploy_platform.data_dir / "secrets" / "secret_key").read_text().strip()
    auth = (TRAEFIK_API_USER, traefik_api_password(key))
    routers = httpx.get(f"{api}/api/http/routers", auth=auth, timeout=5)
    assert routers.status_code == 200
    assert any(r["name"] == "devpush-app@file" for r in routers.json())


def test_forwarded_headers_count_only_from_traefiks_address(
    api: Api, deploy_platform: RunningPlatform
) -> None:
    """X-Forwarded-For is believed from 127.0.0.1 (where Traefik connects from, and which no
    app can use); from any other address (127.0.0.2 here) the peer's own address counts."""
    team = api.team()
    token = api.http.headers["Authorization"]
    spoofed = {"Authorization": token, "X-Forwarded-For": "203.0.113.9"}
    url = f"{deploy_platform.app_url}/api/v1/teams/{team}"
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=elsewhere, timeout=10) as client:
        assert client.patch(url, json={"name": "Spoofed"}, headers=spoofed).status_code == 200
    with httpx.Client(timeout=10) as client:  # from 127.0.0.1, as Traefik
        assert client.patch(url, json={"name": "Proxied"}, headers=spoofed).status_code == 200
    entries = api.get(f"/api/v1/teams/{team}/audit")["items"]
    renamed = [e for e in entries if e["action"] == "team.rename"][:2]
    assert [e["ip"] for e in renamed] == ["203.0.113.9", "127.0.0.2"], renamed
