"""The swarm runtime's reading of a service's tasks, and the service it asks for (issue #21)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devpush.runtime.base import Endpoint, InstanceState, RuntimeSpec
from devpush.runtime.swarm_service import (
    app_image,
    endpoints,
    node_address,
    service_spec,
    task_status,
)

NODES = {"n1": "10.0.0.1", "n2": "10.0.0.2"}


def task(
    id: str,
    slot: int,
    state: str,
    *,
    node: str = "n1",
    port: int | None = 32768,
    desired: str = "running",
    at: str = "2026-12-07T10:00:00Z",
    code: int | None = None,
    err: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Timestamp": at}
    if port:
        status["PortStatus"] = {"Ports": [{"TargetPort": 8000, "PublishedPort": port}]}
    if code is not None:
        status["ContainerStatus"] = {"ExitCode": code}
    if err:
        status["Err"] = err
    return {"ID": id, "Slot": slot, "NodeID": node, "DesiredState": desired, "Status": status}


def test_running_tasks_are_endpoints_at_their_nodes_lowest_slot_first() -> None:
    tasks = [
        task("b", 2, "running", node="n2", port=32769),
        task("a", 1, "running", port=32768),
        task("c", 3, "starting", port=None),
        task("d", 4, "running", desired="shutdown", port=32770),  # being stopped
    ]
    assert endpoints(tasks, NODES) == [
        Endpoint("a", 1, "10.0.0.1:32768"),
        Endpoint("b", 2, "10.0.0.2:32769"),
    ]
    assert task_status(tasks, NODES).upstream == "10.0.0.1:32768"


def test_a_task_on_an_unknown_node_or_without_a_published_port_is_not_routed() -> None:
    assert endpoints([task("a", 1, "running", node="gone")], NODES) == []
    assert endpoints([task("a", 1, "running", port=None)], NODES) == []


def test_no_task_yet_is_starting_and_an_ended_one_with_no_successor_is_an_exit() -> None:
    assert task_status([], NODES).state is InstanceState.building
    starting = [task("a", 1, "preparing", port=None)]
    assert task_status(starting, NODES).state is InstanceState.building
    died = [task("a", 1, "failed", desired="shutdown", code=137, at="2026-12-07T10:00:05Z")]
    status = task_status(died, NODES)
    assert (status.state, status.exit_code) == (InstanceState.exited, 137)
    assert status.error and "SIGKILL" in status.error
    replaced = [*died, task("b", 1, "pending", port=None, at="2026-12-07T10:00:06Z")]
    assert task_status(replaced, NODES).state is InstanceState.building
    err = [task("a", 1, "rejected", desired="shutdown", err="No such image: x")]
    assert task_status(err, NODES).error == "No such image: x"


def test_a_manager_advertised_on_no_address_is_reached_on_its_managers_one() -> None:
    assert node_address({"Status": {"Addr": "10.0.0.9"}}) == "10.0.0.9"
    node = {"Status": {"Addr": "0.0.0.0"}, "ManagerStatus": {"Addr": "10.0.0.3:2377"}}
    assert node_address(node) == "10.0.0.3"


def spec(**fields: Any) -> RuntimeSpec:
    base: dict[str, Any] = {
        "deployment_id": "dep1",
        "project_id": "proj1",
        "source_dir": Path("/nonexistent"),
        "start_command": "gunicorn app:app",
        "env": {"PORT": "8000", "API_KEY": "s3cret"},
        "memory_mb": 256,
        "cpus": 0.5,
        "pids_limit": 100,
        "health_path": "/health",
    }
    return RuntimeSpec(**(base | fields))


def test_the_service_maps_limits_health_network_and_ports() -> None:
    body = service_spec(
        spec(),
        image="runner:1",
        owner="own",
        build_id="b1",
        mounts=[],
        drain_seconds=10,
        start_period=60,
    )
    template = body["TaskTemplate"]
    container = template["ContainerSpec"]
    assert body["Name"] == "devpush-dep1"
    assert body["Mode"]["Replicated"]["Replicas"] == 0  # no task before the build
    assert template["Resources"]["Limits"] == {
        "MemoryBytes": 256 * 1024 * 1024,
        "NanoCPUs": 500_000_000,
        "Pids": 100,
    }
    assert template["RestartPolicy"]["Condition"] == "any"
    assert template["Networks"] == [{"Target": "devpush-p-proj1"}]
    assert template["Placement"] == {"Constraints": []}
    assert container["Command"][-1] == "run"
    assert container["User"] == "10001:10001" and container["CapabilityDrop"] == ["ALL"]
    assert container["StopGracePeriod"] == 10 * 10**9
    assert "DEVPUSH_HEALTH_PATH=/health" in container["Env"]
    assert "API_KEY=s3cret" in container["Env"]
    assert body["Labels"]["devpush.owner"] == "own" and body["Labels"]["devpush.build"] == "b1"
    assert body["EndpointSpec"] == {
        "Mode": "dnsrr",
        "Ports": [{"Protocol": "tcp", "TargetPort": 8000, "PublishMode": "host"}],
    }


def test_without_a_registry_the_tasks_stay_on_the_building_node() -> None:
    body = service_spec(
        spec(),
        image="runner:1",
        owner=None,
        build_id="b1",
        mounts=[],
        drain_seconds=1,
        start_period=1,
        node="node-7",
    )
    assert body["TaskTemplate"]["Placement"] == {"Constraints": ["node.id==node-7"]}
    assert app_image("dep1") == "devpush-app:dep1"
    assert app_image("dep1", "reg.local:5000/") == "reg.local:5000/devpush-app:dep1"
