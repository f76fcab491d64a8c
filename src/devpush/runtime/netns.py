"""Network isolation for the process runtime: each instance gets its own network namespace,
joined to the host through a bridge whose ports cannot reach each other, behind an nftables
table that keeps instances away from the host and from private networks but lets them out.

What devpush owns on the host (nothing else is touched):
- the bridge `devpush0`, holding the gateway (the subnet's first address, 10.213.0.1/16 by
  default); every port on it is `isolated`, so instances never see each other's frames;
- per instance, the namespace `devpush-<owner>-<instance id>` (`ip netns`, /run/netns) with
  `lo` and `eth0` (its address, default route via the gateway), and the host end of its veth
  pair, `dpv<hex of the address's index in the subnet>`: creating that link reserves the
  address on the whole machine, since a second one with the same name cannot exist;
- `table inet devpush`, replaced atomically (one nft transaction) whenever it is applied:
  input from the bridge only for replies (and the host services apps are given, such as the
  managed databases' PostgreSQL); forwarding from the bridge to anything but private,
  link-local, CGNAT and loopback ranges (DNS to the resolvers of resolv.conf excepted) and
  never bridge to bridge; masquerade for the subnet leaving through any other interface.

The owner tag (from the runtime's root) keeps two runtime roots on one machine (tests) from
sweeping each other's namespaces, and `netns_services` from closing the host services another
root gave its apps. Every command is an argv list with a timeout.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import random
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from devpush.errors import RuntimeFailure
from devpush.runtime import netns_services

log = logging.getLogger("devpush.runtime")
BRIDGE = "devpush0"
NETNS_DIR = Path("/run/netns")
INSTALL_HINT = "install them with `apt-get install nftables iproute2` (Debian/Ubuntu)"
# Where an instance may never connect, resolvers' port 53 excepted (RFC 1918, CGNAT,
# link-local, loopback, multicast and reserved).
PRIVATE_RANGES = (
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/3",
)
_PREFIX = "devpush-"
_VETH = "dpv"
_BRIDGE_MAC = "02:64:70:00:00:01"  # fixed: a bridge's MAC otherwise follows its ports
_SYS_NET = Path("/sys/class/net")
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp


def owner_tag(root: Path) -> str:
    """A short tag naming one runtime root in its namespaces' names (the same in every
    process, whatever path leads there)."""
    return hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:8]


def choose(
    mode: str,
    *,
    subnet: str,
    root: Path,
    ip: str,
    nft: str,
    services: Iterable[tuple[str, int]] = (),
) -> tuple[Network | None, str, str | None]:
    """For DEVPUSH_NETWORK_ISOLATION `mode`: the network (None: the host's), what to say about
    it in `describe()`, and, for "on" without what it needs, why instances are refused.
    "auto" without them runs apps on the host network, and says so loudly."""
    if mode == "off":
        return None, "host network (DEVPUSH_NETWORK_ISOLATION=off)", None
    found, missing = find_tools(ip, nft)
    if not missing:
        network = Network(subnet=subnet, root=root, tools=found, services=services)
        return network, network.describe(), None
    why = f"network isolation needs {', '.join(missing)}; {INSTALL_HINT}"
    if mode == "on":
        return None, f"refused: {why}", f"DEVPUSH_NETWORK_ISOLATION=on but {why}"
    log.warning(
        "process runtime apps run on the host network, NOT ISOLATED: they can reach the "
        "platform's loopback services and each other",
        extra={"missing": ", ".join(missing), "hint": INSTALL_HINT},
    )
    return None, f"HOST NETWORK, NOT ISOLATED: {why}", None


def find_tools(ip: str, nft: str, nsenter: str = "nsenter") -> tuple[dict[str, str], list[str]]:
    """The tools isolation needs, found on PATH (sbin included), and the names of those
    missing, with what else it needs (root)."""
    found: dict[str, str] = {}
    missing: list[str] = []
    for name, value in (("ip", ip), ("nft", nft), ("nsenter", nsenter)):
        path = shutil.which(value, path=f"{os.environ.get('PATH', '')}:{_PATH}")
        if path:
            found[name] = path
        else:
            missing.append(f"{name} ({value})")
    if os.geteuid() != 0:
        missing.append(f"root (the worker runs as uid {os.geteuid()})")
    return found, missing


def render_table(
    *,
    bridge: str,
    subnet: str,
    resolvers: Iterable[str],
    gateway: str = "",
    services: Iterable[tuple[str, int]] = (),
) -> str:
    """The whole `table inet devpush`, as one nft script that replaces it atomically.
    `services`: (host, TCP port) instances may reach although private; host "" is this
    machine, at the `gateway` address."""
    allowed_in: list[str] = []
    allowed_out: list[str] = []
    for host, port in services:
        if not host:
            allowed_in.append(f'iifname "{bridge}" ip daddr {gateway} tcp dport {port} accept')
        else:
            family = "ip" if ipaddress.ip_address(host).version == 4 else "ip6"
            allowed_out.append(f'iifname "{bridge}" {family} daddr {host} tcp dport {port} accept')
    dns: list[str] = []
    for resolver in resolvers:
        family = "ip" if ipaddress.ip_address(resolver).version == 4 else "ip6"
        for proto in ("udp", "tcp"):
            dns.append(f'iifname "{bridge}" {family} daddr {resolver} {proto} dport 53 accept')
    private = ", ".join(PRIVATE_RANGES)
    lines = [
        "table inet devpush {}",
        "delete table inet devpush",
        "table inet devpush {",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        f'    iifname "{bridge}" ct state established,related accept',
        *(f"    {rule}" for rule in dns),
        *(f"    {rule}" for rule in allowed_in),
        f'    iifname "{bridge}" drop',
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        f'    iifname "{bridge}" oifname "{bridge}" drop',
        f'    oifname "{bridge}" ct state established,related accept',
        f'    oifname "{bridge}" drop',
        f'    iifname "{bridge}" meta nfproto ipv6 drop',
        *(f"    {rule}" for rule in dns),
        *(f"    {rule}" for rule in allowed_out),
        f'    iifname "{bridge}" ip daddr {{ {private} }} drop',
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    ip saddr {subnet} oifname != "{bridge}" masquerade',
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def resolvers(resolv_conf: Path) -> list[str]:
    """The nameserver addresses of a resolv.conf."""
    found = []
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    found.append(str(ipaddress.ip_address(parts[1].split("%")[0])))
    return found


def instance_resolv_conf() -> Path:
    """The resolv.conf an instance can use: /etc/resolv.conf, unless it names only loopback
    resolvers (systemd-resolved's stub, unreachable from a namespace), then resolved's list
    of the real upstream servers."""
    etc = Path("/etc/resolv.conf")
    upstream = Path("/run/systemd/resolve/resolv.conf")
    if all(ipaddress.ip_address(r).is_loopback for r in resolvers(etc)) and resolvers(upstream):
        return upstream
    return etc


class Network:
    """The bridge, the table and the instances' namespaces of one runtime root."""

    def __init__(
        self,
        *,
        subnet: str,
        root: Path,
        tools: dict[str, str],
        services: Iterable[tuple[str, int]] = (),
    ) -> None:
        try:
            self.subnet = ipaddress.IPv4Network(subnet)
        except ValueError as exc:
            raise RuntimeFailure(f"DEVPUSH_INSTANCE_SUBNET {subnet!r} is not valid: {exc}") from exc
        if self.subnet.num_addresses < 8:
            raise RuntimeFailure(f"DEVPUSH_INSTANCE_SUBNET {subnet} is too small")
        self.gateway = self.subnet.network_address + 1
        self.services = list(services)
        self.root = root
        self.owner = owner_tag(root)
        self.resolv_conf = instance_resolv_conf()
        self._ip, self._nft, self._nsenter = tools["ip"], tools["nft"], tools["nsenter"]
        self._ensured = False

    def name(self, instance_id: str) -> str:
        return f"{_PREFIX}{self.owner}-{instance_id}"

    def enter(self, instance_id: str) -> list[str]:
        """The argv prefix that runs a command inside the instance's namespace."""
        return [self._nsenter, f"--net={NETNS_DIR / self.name(instance_id)}", "--"]

    def describe(self) -> str:
        return (
            f"isolated: a namespace per instance on bridge {BRIDGE} ({self.gateway}), subnet "
            f"{self.subnet}, nftables table inet devpush, DNS from {self.resolv_conf}"
        )

    # -- host side --------------------------------------------------------------------------

    def ensure_once(self) -> None:
        """`ensure()` the first time only: starting an instance does not reload the firewall
        each time (`list()`, which the monitor's reconciliation calls, re-applies it)."""
        if not self._ensured:
            self.ensure()

    def ensure(self) -> None:
        """The bridge, forwarding and the table: created when missing, the table replaced."""
        bridge = f"{self.gateway}/{self.subnet.prefixlen}"
        if not (_SYS_NET / BRIDGE).exists():
            result = self._run([self._ip, "link", "add", BRIDGE, "type", "bridge"])
            if result.returncode != 0 and not (_SYS_NET / BRIDGE).exists():
                raise self._failure("create the bridge " + BRIDGE, result)
            self._check([self._ip, "link", "set", "dev", BRIDGE, "address", _BRIDGE_MAC], BRIDGE)
        self._check([self._ip, "addr", "replace", bridge, "dev", BRIDGE], f"address {bridge}")
        self._check([self._ip, "link", "set", "dev", BRIDGE, "up"], f"bring {BRIDGE} up")
        forward = Path("/proc/sys/net/ipv4/ip_forward")
        try:
            if forward.read_text().strip() != "1":
                forward.write_text("1")
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot turn on net.ipv4.ip_forward ({exc}); instances need it to reach the "
                "internet: run `sysctl -w net.ipv4.ip_forward=1` as root"
            ) from exc
        with netns_services.registered(self.root, self.owner, self.services) as services:
            script = render_table(
                bridge=BRIDGE,
                subnet=str(self.subnet),
                resolvers=resolvers(self.resolv_conf),
                gateway=str(self.gateway),
                services=services,  # every root's on this machine: the table is shared
            )
            result = self._run([self._nft, "-f", "-"], stdin=script)
        if result.returncode != 0:
            raise self._failure("load the nftables table inet devpush", result)
        self._ensured = True

    # -- instances --------------------------------------------------------------------------

    def attach(self, instance_id: str, taken: set[str]) -> str:
        """Creates the instance's namespace with an address free on this machine (not in
        `taken`, nor held by a live veth); returns the address."""
        name = self.name(instance_id)
        self.detach(instance_id)  # a start retried after a failure starts afresh
        hosts = int(self.subnet.num_addresses) - 2
        first = random.randrange(hosts)  # spread out: a stale route rarely meets a new app
        for offset in range(hosts):
            index = 2 + (first + offset) % hosts  # .0 is the network, .1 the gateway
            address = str(self.subnet.network_address + index)
            veth = f"{_VETH}{index:x}"
            if address in taken or (_SYS_NET / veth).exists():
                continue
            self._check([self._ip, "netns", "add", name], f"create the namespace {name}")
            argv = [self._ip, "link", "add", veth, "type", "veth"]
            result = self._run([*argv, "peer", "name", "eth0", "netns", name])
            if result.returncode != 0:
                self.detach(instance_id)
                if (_SYS_NET / veth).exists():
                    continue  # taken meanwhile by another runtime root on this machine
                raise self._failure(f"create the veth pair {veth}", result)
            try:
                self._configure(name, veth, address)
            except RuntimeFailure:
                self.detach(instance_id)
                raise
            return address
        raise RuntimeFailure(f"no free address left in {self.subnet} (DEVPUSH_INSTANCE_SUBNET)")

    def _configure(self, name: str, veth: str, address: str) -> None:
        host = [
            f"link set dev {veth} master {BRIDGE}",
            f"link set dev {veth} type bridge_slave isolated on",
            f"link set dev {veth} up",
        ]
        self._check([self._ip, "-batch", "-"], f"attach {veth} to {BRIDGE}", stdin=host)
        inside = [
            "link set dev lo up",
            f"addr add {address}/{self.subnet.prefixlen} dev eth0",
            "link set dev eth0 up",
            f"route add default via {self.gateway}",
        ]
        self._check([self._ip, "-n", name, "-batch", "-"], f"configure {name}", stdin=inside)

    def detach(self, instance_id: str) -> None:
        """Deletes the namespace and its veth pair. Idempotent."""
        name = self.name(instance_id)
        if not (NETNS_DIR / name).exists():
            return
        # Deleting eth0 deletes the pair at once, even if a process still holds the namespace.
        self._run([self._ip, "-n", name, "link", "del", "eth0"])
        result = self._run([self._ip, "netns", "del", name])
        if result.returncode != 0 and (NETNS_DIR / name).exists():
            raise self._failure(f"delete the namespace {name}", result)

    def sweep(self, keep: set[str]) -> None:
        """Deletes this owner's namespaces whose instance is not in `keep`."""
        own = f"{_PREFIX}{self.owner}-"
        with contextlib.suppress(FileNotFoundError):
            for entry in os.listdir(NETNS_DIR):
                if entry.startswith(own) and entry[len(own) :] not in keep:
                    self.detach(entry[len(own) :])

    def listening(self, instance_id: str, pids: Iterable[int]) -> list[int]:
        """The TCP ports listened on inside the namespace, read through any of its processes
        (`pids`: the instance's; the first found inside the namespace is used)."""
        try:
            inode = os.stat(NETNS_DIR / self.name(instance_id)).st_ino
        except OSError:
            return []
        for pid in pids:
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino != inode:
                    continue
                return sorted(_listen_ports(Path(f"/proc/{pid}/net")))
            except OSError:
                continue
        return []

    # -- commands ---------------------------------------------------------------------------

    def _run(
        self, argv: list[str], *, stdin: str | list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        text = "\n".join(stdin) + "\n" if isinstance(stdin, list) else stdin
        try:
            return subprocess.run(
                argv,
                input=text if text is not None else "",
                capture_output=True,
                text=True,
                timeout=20,
                env={"PATH": _PATH},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeFailure(f"{argv[0]} failed: {exc}; {INSTALL_HINT}") from exc

    def _check(self, argv: list[str], what: str, *, stdin: list[str] | None = None) -> None:
        result = self._run(argv, stdin=stdin)
        if result.returncode != 0:
            raise self._failure(what, result)

    def _failure(self, what: str, result: subprocess.CompletedProcess[str]) -> RuntimeFailure:
        detail = (result.stderr or result.stdout).strip() or f"exit code {result.returncode}"
        return RuntimeFailure(
            f"cannot isolate the instance's network: {what} failed ({detail}). The worker "
            "needs root, iproute2 and nftables, and a kernel with network namespaces, veth "
            "and bridge support; or set DEVPUSH_NETWORK_ISOLATION=off to run apps on the "
            "host network"
        )


def _listen_ports(net: Path) -> set[int]:
    ports: set[int] = set()
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in (net / name).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and fields[3] == _LISTEN:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# ---- containers on a local engine (docker runtime) --------------------------------------------


def container_ports_isolatable(url: str, mode: str) -> tuple[bool, str]:
    """Whether the docker runtime can fence its containers off each other on the runner
    bridge: the engine runs on this machine (a unix socket), the worker is root with `ip` and
    `nsenter`, and DEVPUSH_NETWORK_ISOLATION is not "off". With the reason, for describe()."""
    if mode == "off":
        return (
            False,
            "containers on one bridge can reach each other (DEVPUSH_NETWORK_ISOLATION=off)",
        )
    if not url.startswith("unix://"):
        return False, (
            "containers on one bridge can reach each other: the engine is not on this "
            "machine's socket (compose mode: see SECURITY.md)"
        )
    found, missing = find_tools("ip", "nft")
    missing = [m for m in missing if not m.startswith("nft")]
    if missing:
        return False, f"containers on one bridge can reach each other: needs {', '.join(missing)}"
    return True, "each container's bridge port is isolated: containers can't reach each other"


def isolate_container_port(pid: int) -> str:
    """Marks the host end of the veth of the container whose process is `pid` as an isolated
    bridge port: it then exchanges frames only with the bridge itself (the host: Traefik, the
    readiness probe) and non-isolated ports, never with another container. Returns the
    port's interface index (what the container reads in /sys/class/net/eth0/iflink); raises
    RuntimeFailure when it can't."""
    tools = {"PATH": _PATH}
    try:
        shown = subprocess.run(
            ["nsenter", f"--net=/proc/{pid}/ns/net", "--", "ip", "-o", "link", "show", "eth0"],
            capture_output=True,
            text=True,
            timeout=20,
            env=tools,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeFailure(f"cannot isolate the container's network: {exc}") from exc
    peer = shown.stdout.split(":", 2)[1].strip() if shown.stdout.count(":") >= 2 else ""
    index = peer.rpartition("@if")[2]
    if shown.returncode != 0 or not index.isdigit():
        detail = (shown.stderr or shown.stdout).strip() or f"exit code {shown.returncode}"
        raise RuntimeFailure(f"cannot isolate the container's network: no eth0 peer ({detail})")
    for entry in _SYS_NET.iterdir():
        with contextlib.suppress(OSError):
            if (entry / "ifindex").read_text().strip() == index:
                argv = ["ip", "link", "set", "dev", entry.name, "type", "bridge_slave"]
                done = subprocess.run(
                    [*argv, "isolated", "on"], capture_output=True, text=True, timeout=20, env=tools
                )
                if done.returncode != 0:
                    raise RuntimeFailure(
                        f"cannot isolate the container's bridge port {entry.name}: "
                        f"{done.stderr.strip()}"
                    )
                return index
    raise RuntimeFailure(f"cannot isolate the container's network: no host link with index {index}")
