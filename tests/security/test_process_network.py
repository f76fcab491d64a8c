"""The process runtime's network isolation, proved from inside real instances (bubblewrap, uid
of their project, their own network namespace on the devpush0 bridge): the app probes with its own
connects and serves what it saw as JSON, which the test GETs through the upstream.

- the host's loopback services, the host's own addresses and the bridge's gateway: unreachable,
  but for the one port given to apps (the managed databases' PostgreSQL);
- another instance: unreachable; the host still reaches both at their upstreams;
- outbound: a server in a test-only namespace routed from the host (198.18.0.0/15, standing
  in for the internet) is reached through the NAT, one on a private address (10.250.x.x)
  is not; DNS: the resolvers of /etc/resolv.conf are the only private addresses allowed;
- the build stage runs in the same namespace; `listening()` reads the instance's namespace;
- 2,000 listeners in one instance leave ports to everyone else;
- remove() leaves no namespace nor veth; the stray sweep removes orphaned namespaces;
- "on" without nft refuses with the fix; "auto" without it says so; "off" is the host network.

Needs root, bubblewrap, iproute2 and nftables (scripts/test-setup.sh). Traffic goes only to
loopback, the instances, and the namespaces this module creates (and deletes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from devpush.errors import RuntimeFailure
from devpush.runtime import netns
from devpush.runtime.base import Phase, RuntimeHandle, RuntimeSpec
from devpush.runtime.process import ProcessRuntime

SUBNET = ipaddress.ip_network("10.213.0.0/16")
GATEWAY = "10.213.0.1"

# The instance's app. GET /probe?t=HOST:PORT&t=... connects to each target from inside and
# answers {target: "ok:<first bytes sent>" | "error:<exception>"}; GET /netns answers the
# network namespace it runs in; `python3 app.py once` prints the probe of $TARGETS (the build).
# $EXTRA_PORTS="LOW-HIGH" listens on each of those ports too.
PROBE_APP = r"""
import json, os, resource, socket, sys, urllib.parse
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def connect(target):
    host, port = target.rsplit(":", 1)
    try:
        sock = socket.create_connection((host, int(port)), timeout=2)
    except OSError as exc:
        return "error:" + type(exc).__name__
    with sock:
        sock.settimeout(0.5)
        try:
            return "ok:" + sock.recv(64).decode(errors="replace").strip()
        except OSError:
            return "ok:"


def probe(targets):
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(targets, pool.map(connect, targets)))


def own_netns():
    return os.readlink("/proc/self/ns/net")


if sys.argv[1:] == ["once"]:
    print("NETNS", own_netns(), flush=True)
    print("PROBE", json.dumps(probe(json.loads(os.environ["TARGETS"]))), flush=True)
    sys.exit(0)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/probe":
            body = json.dumps(probe(urllib.parse.parse_qs(url.query).get("t", []))).encode()
        elif url.path == "/netns":
            body = own_netns().encode()
        else:
            body = os.environ.get("BODY", "").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


listeners = []
if os.environ.get("EXTRA_PORTS"):
    low, high = map(int, os.environ["EXTRA_PORTS"].split("-"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for port in range(low, high + 1):
        if port != int(os.environ["PORT"]):
            listeners.append(socket.create_server(("0.0.0.0", port)))
    print("extra listeners", len(listeners), flush=True)
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

# A TCP server that greets every connection with `<greeting> peer=<client address>`.
GREETER = r"""
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    with conn:
        conn.sendall(f"{sys.argv[3]} peer={peer[0]}\n".encode())
"""


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "app.py").write_text(PROBE_APP)
    return directory


@pytest.fixture
async def runtimes(tmp_path: Path) -> AsyncIterator[Callable[..., ProcessRuntime]]:
    """Runtimes on this test's root; every instance left there is removed afterwards."""
    data = tmp_path / "data"

    def make(**overrides: Any) -> ProcessRuntime:
        options: dict[str, Any] = {
            "root": data / "runtime" / "process",
            "protected_paths": [data],
            "allow_unsandboxed": False,
            "port_range": (20000, 29999),
        }
        return ProcessRuntime(**(options | overrides))

    yield make
    cleaner = make()
    for handle in await cleaner.list():
        await cleaner.remove(handle)


@pytest.fixture
def runtime(runtimes: Callable[..., ProcessRuntime]) -> ProcessRuntime:
    return runtimes()


def make_spec(source: Path, **fields: Any) -> RuntimeSpec:
    values: dict[str, Any] = {
        "deployment_id": f"dep-{uuid.uuid4().hex[:12]}",
        "project_id": "proj-net",
        "source_dir": source,
        "start_command": "python3 app.py",
    }
    return RuntimeSpec(**(values | fields))


async def deploy(runtime: ProcessRuntime, source: Path, **fields: Any) -> RuntimeHandle:
    handle = await runtime.start(await runtime.create(make_spec(source, **fields)))
    assert handle.upstream is not None
    return handle


async def get(handle: RuntimeHandle, path: str = "/", timeout: float = 20.0) -> httpx.Response:
    """GETs the app through its upstream once it listens; probes take up to ~2.5 s."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10.0) as client:
        while True:
            try:
                return await client.get(f"http://{handle.upstream}{path}")
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)


async def probe(handle: RuntimeHandle, *targets: str) -> dict[str, str]:
    response = await get(handle, "/probe?" + "&".join(f"t={t}" for t in targets))
    result: dict[str, str] = response.json()
    return result


def address_of(handle: RuntimeHandle) -> str:
    assert handle.upstream
    return handle.upstream.rsplit(":", 1)[0]


def netns_of(handle: RuntimeHandle) -> str:
    """The instance's namespace: named after its runtime's root and its id."""
    return f"devpush-{netns.owner_tag(Path(handle.data['dir']).parent)}-{handle.id}"


def veth_of(address: str) -> str:
    return f"dpv{int(ipaddress.ip_address(address)) - int(SUBNET.network_address):x}"


def namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Greeter:
    """GREETER in a thread of the test (the host's own network)."""

    def __init__(self, host: str, greeting: str) -> None:
        self.server = socket.create_server((host, 0))
        self.port = self.server.getsockname()[1]
        self.greeting = greeting
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.greeting} peer={peer[0]}\n".encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(5)


@pytest.fixture
def host_services() -> Iterator[tuple[Greeter, Greeter]]:
    """Stand-ins for PostgreSQL, Redis, Traefik's API and the app server: one listener on the
    host's 127.0.0.1 and one on all of its addresses."""
    loopback, anywhere = Greeter("127.0.0.1", "host-loopback"), Greeter("0.0.0.0", "host-any")
    yield loopback, anywhere
    loopback.close()
    anywhere.close()


def host_addresses() -> list[str]:
    """The host's own IPv4 addresses outside loopback and the namespaces' links."""
    found = []
    for name, addresses in psutil.net_if_addrs().items():
        if name == "lo" or name.startswith(("devpush", "dpv", "dpt")):
            continue
        found += [a.address for a in addresses if a.family == socket.AF_INET]
    return found


@dataclass
class Outside:
    """A test-only network namespace routed from the host, with GREETER listening in it."""

    name: str
    host_address: str  # the host's end of the link
    address: str  # the namespace's end, where GREETER listens
    port: int


@contextlib.contextmanager
def outside_namespace(network: str, greeting: str) -> Iterator[Outside]:
    """`network` is a /30 (its first address is the host's end, its second the namespace's)."""
    net = ipaddress.ip_network(network)
    host_end, far_end = str(net.network_address + 1), str(net.network_address + 2)
    tag = secrets.token_hex(3)
    name, veth = f"dpt-{greeting}-{tag}", f"dpt{tag}"
    port = free_port()

    def ip(*argv: str) -> None:
        subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=10)

    server: subprocess.Popen[str] | None = None
    try:
        ip("netns", "add", name)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("addr", "add", f"{host_end}/30", "dev", veth)
        ip("link", "set", veth, "up")
        ip("-n", name, "addr", "add", f"{far_end}/30", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        argv = ["ip", "netns", "exec", name, sys.executable, "-c", GREETER]
        server = subprocess.Popen(
            [*argv, far_end, str(port), greeting], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield Outside(name, host_end, far_end, port)
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
            assert server.stdout is not None
            server.stdout.close()
        subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def greet(host: str, port: int) -> str:
    """What the host itself gets from a greeter: proves it listens where the app is refused."""
    with socket.create_connection((host, port), timeout=2) as sock:
        return sock.recv(64).decode().strip()


def random_slash30(prefix: str) -> str:
    """A /30 at a random place of `prefix` (a /16), so that concurrent runs do not collide."""
    base = ipaddress.ip_network(prefix).network_address
    return f"{base + secrets.randbelow(16384) * 4}/30"


# -- the host and other instances are out of reach --------------------------------------------


async def test_the_app_cannot_reach_the_hosts_services(
    runtime: ProcessRuntime, source: Path, host_services: tuple[Greeter, Greeter]
) -> None:
    loopback, anywhere = host_services
    handle = await deploy(runtime, source, env={"BODY": "isolated"})
    assert ipaddress.ip_address(address_of(handle)) in SUBNET
    own_port = handle.upstream.rsplit(":", 1)[1]  # type: ignore[union-attr]
    # The listeners are there: the host itself reaches them, through the gateway too.
    assert greet("127.0.0.1", loopback.port).startswith("host-loopback")
    assert greet(GATEWAY, anywhere.port).startswith("host-any")

    outside_in = [f"{a}:{anywhere.port}" for a in host_addresses()]
    assert outside_in, "the host has no address outside loopback"
    targets = [
        f"127.0.0.1:{loopback.port}",  # PostgreSQL, Redis, Traefik's API on loopback
        f"127.0.0.1:{anywhere.port}",
        f"{GATEWAY}:{anywhere.port}",  # the host's end of the bridge
        f"{GATEWAY}:{loopback.port}",
        *outside_in,  # the host's own addresses (eth0)
    ]
    seen = await probe(handle, *targets, f"127.0.0.1:{own_port}")

    assert seen.pop(f"127.0.0.1:{own_port}") == "ok:"  # its own loopback works: the probe does
    assert all(result.startswith("error:") for result in seen.values()), seen
    assert (await get(handle)).text == "isolated"  # while the host reaches it at its upstream


async def test_a_host_service_given_to_apps_is_the_only_one_they_reach(
    runtimes: Callable[..., ProcessRuntime], source: Path
) -> None:
    """The managed databases' PostgreSQL: apps reach its port at the gateway, and only it."""
    given, other = Greeter("0.0.0.0", "databases"), Greeter("0.0.0.0", "other")
    try:
        runtime = runtimes(host_services=[("", given.port)])
        assert await runtime.host_address() == GATEWAY
        handle = await deploy(runtime, source, env={"BODY": "x"})
        seen = await probe(
            handle, f"{GATEWAY}:{given.port}", f"{GATEWAY}:{other.port}", f"127.0.0.1:{given.port}"
        )
        assert seen[f"{GATEWAY}:{given.port}"].startswith("ok:databases"), seen
        assert seen[f"{GATEWAY}:{other.port}"].startswith("error:"), seen
        assert seen[f"127.0.0.1:{given.port}"].startswith("error:"), seen
    finally:
        given.close()
        other.close()
        runtimes()._network.ensure()  # type: ignore[union-attr]  # the table without it


async def test_another_root_applying_the_table_keeps_this_ones_services_open(
    runtimes: Callable[..., ProcessRuntime], source: Path, tmp_path: Path
) -> None:
    """Two installs (or two test platforms) on one machine share the nftables table: one that
    applies it keeps the host services the other gave its apps."""
    given = Greeter("0.0.0.0", "databases")
    try:
        handle = await deploy(runtimes(host_services=[("", given.port)]), source)
        other = ProcessRuntime(
            root=tmp_path / "other" / "runtime" / "process",
            protected_paths=[tmp_path / "other"],
            allow_unsandboxed=False,
        )
        await other.list()  # applies the table, with no service of its own
        seen = await probe(handle, f"{GATEWAY}:{given.port}")
        assert seen[f"{GATEWAY}:{given.port}"].startswith("ok:databases"), seen
    finally:
        given.close()
        runtimes()._network.ensure()  # type: ignore[union-attr]  # the table without it


async def test_instances_cannot_reach_each_other(runtime: ProcessRuntime, source: Path) -> None:
    first, second = await asyncio.gather(
        deploy(runtime, source, env={"BODY": "first"}),
        deploy(runtime, source, env={"BODY": "second"}),
    )
    assert address_of(first) != address_of(second)
    assert [(await get(first)).text, (await get(second)).text] == ["first", "second"]

    from_first = await probe(first, second.upstream or "")
    from_second = await probe(second, first.upstream or "")
    assert from_first[second.upstream or ""].startswith("error:"), from_first
    assert from_second[first.upstream or ""].startswith("error:"), from_second


# -- outbound: the internet yes, private networks no ------------------------------------------


async def test_outbound_goes_through_the_nat_but_never_to_private_ranges(
    runtime: ProcessRuntime, source: Path
) -> None:
    with (
        outside_namespace(random_slash30("198.18.0.0/16"), "internet") as internet,
        outside_namespace(random_slash30("10.250.0.0/16"), "private") as private,
    ):
        # Both answer the host: what stops the app is the firewall, not the routing.
        assert greet(private.address, private.port).startswith("private")
        assert greet(internet.address, internet.port).startswith("internet")
        handle = await deploy(runtime, source)
        reach, block = f"{internet.address}:{internet.port}", f"{private.address}:{private.port}"

        seen = await probe(handle, reach, block)

    # Masqueraded: the outside sees the host's address on that link, never 10.213.x.x.
    assert seen[reach] == f"ok:internet peer={internet.host_address}"
    assert seen[block].startswith("error:"), seen


async def test_dns_is_the_only_private_destination_allowed(runtime: ProcessRuntime) -> None:
    """DNS is not sent anywhere from here: the table that runs is checked instead."""
    await runtime.list()  # applies the table
    resolvers = netns.resolvers(Path("/etc/resolv.conf"))
    assert resolvers, "no nameserver in /etc/resolv.conf"
    table = subprocess.run(
        ["nft", "list", "table", "inet", "devpush"], capture_output=True, text=True, timeout=10
    ).stdout
    forward = table[table.index("chain forward") : table.index("chain postrouting")]
    private_drop = forward.index("ip daddr { 10.0.0.0/8")
    for resolver in resolvers:
        for proto in ("udp", "tcp"):
            assert forward.index(f"ip daddr {resolver} {proto} dport 53 accept") < private_drop
    assert 'iifname "devpush0" oifname "devpush0" drop' in forward
    assert 'ip saddr 10.213.0.0/16 oifname != "devpush0" masquerade' in table


# -- build stage, listening(), ports ----------------------------------------------------------


async def test_the_build_runs_in_the_instance_namespace(
    runtime: ProcessRuntime, source: Path, host_services: tuple[Greeter, Greeter]
) -> None:
    loopback, anywhere = host_services
    with outside_namespace(random_slash30("198.18.0.0/16"), "registry") as registry:
        reach = f"{registry.address}:{registry.port}"  # a package registry, for instance
        targets = [reach, f"127.0.0.1:{loopback.port}", f"{GATEWAY}:{anywhere.port}"]
        handle = await deploy(
            runtime,
            source,
            build_command="python3 app.py once",
            env={"TARGETS": json.dumps(targets)},
        )
        app_netns = (await get(handle, "/netns")).text

    records = [r async for r in runtime.logs(handle, follow=False)]
    build = [r.message for r in records if r.phase is Phase.build and r.stream == "stdout"]
    probed = json.loads(next(m for m in build if m.startswith("PROBE "))[6:])
    assert probed[reach] == f"ok:registry peer={registry.host_address}"
    assert probed[f"127.0.0.1:{loopback.port}"].startswith("error:")
    assert probed[f"{GATEWAY}:{anywhere.port}"].startswith("error:")
    build_netns = next(m for m in build if m.startswith("NETNS "))[6:]
    inode = os.stat(netns.NETNS_DIR / netns_of(handle)).st_ino
    assert build_netns == app_netns == f"net:[{inode}]"


async def test_listening_reads_the_instance_namespace(
    runtime: ProcessRuntime, source: Path
) -> None:
    handle = await deploy(runtime, source, env={"EXTRA_PORTS": "24000-24001"})
    await get(handle)
    port = int(handle.upstream.rsplit(":", 1)[1])  # type: ignore[union-attr]
    # Not seen on the host's network, where psutil looks.
    assert not [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port]

    assert await runtime.listening(handle) == sorted({port, 24000, 24001})


async def test_thousands_of_listeners_leave_ports_to_the_others(
    runtimes: Callable[..., ProcessRuntime], source: Path
) -> None:
    low, high = 30000, 31999  # the runtime's whole port range, 2,000 ports
    runtime = runtimes(port_range=(low, high))
    greedy = await deploy(runtime, source, env={"EXTRA_PORTS": f"{low}-{high}"})
    await get(greedy)
    for _ in range(200):
        if len(await runtime.listening(greedy)) == 2000:
            break
        await asyncio.sleep(0.05)
    assert await runtime.listening(greedy) == list(range(low, high + 1))

    other = await deploy(runtime, source, env={"BODY": "still served"})
    assert (await get(other)).text == "still served"
    assert low <= int(other.upstream.rsplit(":", 1)[1]) <= high  # type: ignore[union-attr]
    with socket.create_server(("127.0.0.1", low)):  # the host's own ports stay free too
        pass


# -- cleanup ----------------------------------------------------------------------------------


async def test_stop_and_remove_leave_no_namespace_nor_veth(
    runtime: ProcessRuntime, source: Path
) -> None:
    handle = await deploy(runtime, source)
    await get(handle)
    name = netns_of(handle)
    veth = veth_of(address_of(handle))
    assert name in namespaces() and Path("/sys/class/net", veth).exists()

    await runtime.stop(handle)
    assert name not in namespaces() and not Path("/sys/class/net", veth).exists()
    await runtime.remove(handle)
    await runtime.remove(handle)
    assert name not in namespaces() and not Path("/sys/class/net", veth).exists()


async def test_removing_a_running_instance_deletes_its_namespace(
    runtime: ProcessRuntime, source: Path
) -> None:
    handle = await deploy(runtime, source)
    await get(handle)
    name = netns_of(handle)

    await runtime.remove(handle)
    assert name not in namespaces()
    assert not Path("/sys/class/net", veth_of(address_of(handle))).exists()


async def test_the_stray_sweep_removes_orphaned_namespaces(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    owner = netns.owner_tag(tmp_path / "data" / "runtime" / "process")
    orphan = f"devpush-{owner}-dep-ghost-{secrets.token_hex(3)}"
    foreign = f"devpush-{'0' * 8}-dep-{secrets.token_hex(3)}"  # another runtime root's
    for name in (orphan, foreign):
        subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        await runtime.list()
        listed = namespaces()
        assert orphan not in listed and foreign in listed
    finally:
        for name in (orphan, foreign):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


# -- the setting ------------------------------------------------------------------------------


async def test_on_without_nft_refuses_with_the_fix(
    runtimes: Callable[..., ProcessRuntime], source: Path
) -> None:
    created = await runtimes().create(make_spec(source))
    runtime = runtimes(network_isolation="on", nft="/nonexistent/nft")

    with pytest.raises(RuntimeFailure) as create_error:
        await runtime.create(make_spec(source))
    with pytest.raises(RuntimeFailure) as start_error:
        await runtime.start(created)
    for error in (create_error, start_error):
        assert "DEVPUSH_NETWORK_ISOLATION=on" in error.value.message
        assert "nft (/nonexistent/nft)" in error.value.message
        assert "apt-get install nftables iproute2" in error.value.message
    assert (await runtime.describe())["network"].startswith("refused: ")


async def test_auto_without_nft_runs_on_the_host_network_and_says_so(
    runtimes: Callable[..., ProcessRuntime], source: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="devpush.runtime"):
        runtime = runtimes(nft="/nonexistent/nft")
    assert any("NOT ISOLATED" in r.getMessage() for r in caplog.records)
    assert (await runtime.describe())["network"].startswith("HOST NETWORK, NOT ISOLATED")

    handle = await deploy(runtime, source, env={"BODY": "on the host", "HOST": "127.0.0.1"})
    assert address_of(handle) == "127.0.0.1"
    assert (await get(handle)).text == "on the host"


async def test_off_is_the_host_network(
    runtimes: Callable[..., ProcessRuntime], source: Path
) -> None:
    runtime = runtimes(network_isolation="off")
    handle = await deploy(runtime, source, env={"BODY": "off", "HOST": "127.0.0.1"})
    assert address_of(handle) == "127.0.0.1"
    assert (await get(handle)).text == "off"
    port = int(handle.upstream.rsplit(":", 1)[1])  # type: ignore[union-attr]
    assert await runtime.listening(handle) == [port]
    assert (await runtime.describe())["network"] == "host network (DEVPUSH_NETWORK_ISOLATION=off)"
