"""The swarm runtime end to end on a real single-node Docker Swarm (issue #21), through a real
`devpush up`: a Flask app with its requirements, whose devpush.toml asks for three replicas, is
built once (its image pushed to the swarm's registry) and runs as one service of three tasks
behind Traefik; a killed task loses no request
under a steady 50 req/s and swarm replaces it; scaling 3 -> 1 -> 2 changes the service's tasks
while it serves; a redeploy switches, and a rollback puts the previous deployment (kept warm as a
service) back at once; a deployment whose every task dies is served again by swarm's new ones."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.corpus import APPS_DIR
from tests.e2e.apps import git, push_app
from tests.e2e.conftest import DOCKER, SWARM_REGISTRY
from tests.e2e.test_replicas import APP, RATE, Live, Load, _count, deploy_three, scale_cli
from tests.e2e.test_volumes import Platform, deploy, new_project, running_on, until

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    yield from running_on("swarm", tmp_path_factory.mktemp("swarm"))


@pytest.fixture(scope="module")
def live(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Live:
    return deploy_three(platform, tmp_path_factory)


def docker(*args: str) -> str:
    return subprocess.run(
        [*DOCKER, *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout


def service(deployment_id: str) -> dict[str, Any]:
    return dict(json.loads(docker("service", "inspect", f"devpush-{deployment_id}"))[0])


def task_containers(deployment_id: str) -> list[str]:
    return docker(
        "ps", "-q", "--filter", f"label=com.docker.swarm.service.name=devpush-{deployment_id}"
    ).split()


def instances(live: Live, n: int) -> set[str]:
    return set(live.serving(n))


def test_three_tasks_of_one_service_serve_the_deployment(live: Live) -> None:
    spec = service(live.deployment["id"])["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 3
    template = spec["TaskTemplate"]
    assert template["RestartPolicy"]["Condition"] == "any"
    assert template["ContainerSpec"]["Healthcheck"]["Test"][0] == "CMD-SHELL"
    # Built once, pushed to the registry every node pulls from; placed on any node.
    assert (
        template["ContainerSpec"]["Image"]
        == f"{SWARM_REGISTRY}/devpush-app:{live.deployment['id']}"
    )
    assert not template["Placement"].get("Constraints")
    pushed = httpx.get(f"http://{SWARM_REGISTRY}/v2/devpush-app/tags/list", timeout=10).json()
    assert live.deployment["id"] in pushed["tags"], pushed
    # The built image carries no env var of the build: the service gives its tasks theirs.
    image = json.loads(docker("image", "inspect", template["ContainerSpec"]["Image"]))[0]
    assert not any(e.startswith("DEVPUSH_START_COMMAND") for e in image["Config"]["Env"] or [])
    network = docker("network", "inspect", "-f", "{{.Driver}}", f"devpush-p-{live.project['id']}")
    assert network.strip() == "overlay"
    assert len(task_containers(live.deployment["id"])) == 3

    seen = live.serving(60)
    assert len(seen) == 3, seen
    assert min(seen.values()) >= 10, seen  # Traefik balances over the three tasks
    built = live.api.get(
        f"/api/v1/projects/{live.project['id']}/logs",
        deployment=live.deployment["id"],
        q="install took",
    )["items"]
    assert built and {line["phase"] for line in built} == {"build"}, built


def test_a_killed_task_loses_no_request_and_swarm_replaces_it(live: Live) -> None:
    before = instances(live, 30)
    assert len(before) == 3
    victim = task_containers(live.deployment["id"])[0]
    with Load(live) as load:
        time.sleep(2)
        kill_started = time.monotonic()
        docker("kill", "--signal", "KILL", victim)
        kill = (kill_started, time.monotonic())
        time.sleep(8)
    assert load.lost_beyond(kill) == [], load.failures[:5]
    assert len(load.answers) >= 2 * RATE, len(load.answers)  # the load ran throughout

    def three_again() -> set[str]:
        assert live.replicas() == 3
        seen = instances(live, 30)
        assert len(seen) == 3 and seen != before, seen
        return seen

    until(three_again, "swarm's replacement task serving", timeout=180)
    log = live.api.get(
        f"/api/v1/projects/{live.project['id']}/logs",
        deployment=live.deployment["id"],
        q="swarm starts a new one",
    )
    assert log["items"], "no log line says a task stopped and was replaced"


def test_scaling_the_service_3_to_1_to_2_while_serving(live: Live, tmp_path: Path) -> None:
    api = live.api
    scale_url = f"/api/v1/projects/{live.project['id']}/environments/production/scale"
    with Load(live) as load:
        api.post(scale_url, {"replicas": 1}, expect=202)
        until(lambda: _count(live, 1), "scaled down to one task", timeout=180)
        assert service(live.deployment["id"])["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
        cli = scale_cli(live, tmp_path, "web=2", "--timeout", "240")
        assert cli.returncode == 0, cli.stderr
        assert "2 of 2 replicas serving" in cli.stderr
        until(lambda: _count(live, 2), "scaled up to two tasks", timeout=180)
    assert load.failures == [], load.failures[:5]
    assert service(live.deployment["id"])["Spec"]["Mode"]["Replicated"]["Replicas"] == 2


def test_redeploy_then_rollback_to_the_warm_service(live: Live, tmp_path: Path) -> None:
    api = live.api
    repo = Path(re.sub(r"^file://", "", live.project["repo_url"]))
    app = repo / "app.py"
    app.write_text(app.read_text().replace('"RELEASE", "v1"', '"RELEASE", "v2"'))
    git(repo, "commit", "-qam", "v2")
    second = deploy(api, live.project["id"])
    assert second["replicas"] == 2  # the environment's count, set by the scaling above
    url = live.url.rstrip("/") + "/whoami"
    assert api.serve(url).json()["release"] == "v2"
    assert service(live.deployment["id"])["Spec"]["Mode"]["Replicated"]["Replicas"] == 2

    started = time.monotonic()
    rolled = api.post(f"/api/v1/deployments/{second['id']}/rollback", expect=200)
    assert rolled["id"] == live.deployment["id"]
    assert api.serve(url).json()["release"] == "v1"
    assert time.monotonic() - started < 2.0


def test_every_task_killed_is_served_again_by_swarms_new_ones(live: Live) -> None:
    before = instances(live, 20)
    for container in task_containers(live.deployment["id"]):
        docker("kill", "--signal", "KILL", container)

    def new_ones() -> set[str]:
        seen = instances(live, 20)
        assert seen and not seen & before, (before, seen)
        return seen

    until(new_ones, "new tasks serving after all were killed", timeout=240)
    deployment = live.api.get(f"/api/v1/deployments/{live.deployment['id']}")
    assert deployment["conclusion"] == "succeeded", deployment


def test_a_build_that_fails_is_reported_and_leaves_no_service(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A build that fails is reported with its cause, and no service is left behind."""
    repo = push_app(APP, tmp_path_factory.mktemp("broken") / "app")
    (repo / "requirements.txt").write_text("flask==0.0.0-does-not-exist\n")
    git(repo, "commit", "-qam", "a requirement that does not exist")
    project = new_project(platform.api, repo, "swarm-broken")
    failed = platform.api.wait(platform.api.deploy(project["id"])["id"], timeout=600)
    assert failed["conclusion"] == "failed", failed
    assert "build" in (failed["error"] or "").lower(), failed["error"]
    until(lambda: _gone(f"devpush-{failed['id']}"), "the failed deployment's service removed", 60)


def _gone(name: str) -> None:
    found = docker("service", "ls", "-q", "--filter", f"name={name}").split()
    assert not found, found


def test_another_projects_task_is_out_of_reach(
    live: Live, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tenants on one swarm: a project's tasks are on its own overlay network only, and can't
    reach another project's task through the port its node published for Traefik."""
    api = live.api
    repo = push_app(APPS_DIR / "static-site", tmp_path_factory.mktemp("other") / "app")
    other = deploy(api, new_project(api, repo, "swarm-other")["id"])
    (other_task,) = task_containers(other["id"])
    ports = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Ports}}", other_task))
    published = next(iter(ports.values()))[0]["HostPort"]
    gateway = docker(
        "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", "docker_gwbridge"
    ).strip()
    # The route's way in answers (Traefik's, from the host)...
    assert httpx.get(f"http://127.0.0.1:{published}/", timeout=10).status_code == 200
    own = task_containers(live.deployment["id"])[0]
    networks = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", own))
    assert f"devpush-p-{live.project['id']}" in networks
    assert f"devpush-p-{other['project_id']}" not in networks
    # ...but not from another project's task.
    probe = (
        "import sys, urllib.request\n"
        "try:\n"
        "    urllib.request.urlopen(sys.argv[1], timeout=3)\n"
        "    print('reached')\n"
        "except Exception as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    answer = docker("exec", own, "python3", "-c", probe, f"http://{gateway}:{published}/")
    assert answer.startswith("refused"), answer
