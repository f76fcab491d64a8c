"""Which Engine API calls the socket proxy lets through: pure functions, no I/O.

A request is allowed when its method and path (with or without the `/v1.NN` version prefix)
match a rule. Calls on one container also require the container to carry the label
`devpush.managed=true` (checked by the server), and a create must ask for nothing that
escapes the runtime's sandbox: no privileged mode, host paths, added capabilities, devices or
host namespaces, and the devpush label must be set so the container is manageable later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MANAGED_LABEL = "devpush.managed"
_VERSION = r"(?:/v\d+(?:\.\d+)?)?"
TREES_VOLUME = r"devpush-trees-[a-z0-9][a-z0-9_.-]*"  # a project's kept install trees
DATA_VOLUME = r"devpush-vol-[a-z0-9][a-z0-9_.-]*"  # an environment's persistent volume
_ID = r"(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]*)"
_EXEC = r"(?P<exec>[A-Za-z0-9]+)"


@dataclass(frozen=True)
class Rule:
    method: str
    pattern: str  # a path regex without the version prefix
    what: str  # the runtime call it serves, for the docs and the error message
    container: bool = False  # the path names one container, which must be devpush-managed
    create: bool = False  # the body is a container config to check
    volume: bool = False  # the body is a volume to check (check_volume)
    exec_create: bool = False  # the body is an exec to check (check_exec)
    exec: bool = False  # the path names one exec, whose container must be devpush-managed

    def matches(self, method: str, path: str) -> re.Match[str] | None:
        if method != self.method:
            return None
        return re.fullmatch(_VERSION + self.pattern, path)


RULES: tuple[Rule, ...] = (
    Rule("GET", r"/_ping", "liveness"),
    Rule("HEAD", r"/_ping", "liveness"),
    Rule("GET", r"/version", "API version negotiation, `describe`"),
    Rule("GET", r"/containers/json", "`list` (devpush-managed containers, by label)"),
    Rule("POST", r"/containers/create", "`create`", create=True),
    Rule("GET", rf"/containers/{_ID}/json", "inspect: `start`, `status`", container=True),
    Rule("PUT", rf"/containers/{_ID}/archive", "upload the source tree: `create`", container=True),
    Rule(
        "GET",
        rf"/containers/{_ID}/archive",
        "read the phase file: `status`; copy the built /app: `replicate`",
        container=True,
    ),
    Rule("HEAD", rf"/containers/{_ID}/archive", "stat a path: `status`", container=True),
    Rule("POST", rf"/containers/{_ID}/start", "`start`", container=True),
    Rule("GET", rf"/containers/{_ID}/logs", "`logs` (streams with follow)", container=True),
    Rule("POST", rf"/containers/{_ID}/stop", "`stop`", container=True),
    Rule("POST", rf"/containers/{_ID}/kill", "`stop` (forced)", container=True),
    Rule("POST", rf"/containers/{_ID}/wait", "wait for an exit", container=True),
    Rule("DELETE", rf"/containers/{_ID}", "`remove`", container=True),
    Rule(
        "POST", rf"/containers/{_ID}/update", "the app's own limits after the build", container=True
    ),
    Rule(
        "POST",
        rf"/libpod/containers/{_ID}/update",
        "the same on Podman, whose Docker API lacks it",
        container=True,
    ),
    Rule(
        "POST",
        rf"/containers/{_ID}/exec",
        "`exec`: a cron job's command in the app's container",
        container=True,
        exec_create=True,
    ),
    Rule("POST", rf"/exec/{_EXEC}/start", "`exec`: its output (streamed)", exec=True),
    Rule("GET", rf"/exec/{_EXEC}/json", "`exec`: its exit code", exec=True),
    Rule("GET", r"/images/json", "`toolchains` (runner images, by label)"),
    Rule("POST", r"/volumes/create", "a project's trees volume: `create`", volume=True),
    Rule(
        "DELETE",
        rf"/volumes/{TREES_VOLUME}",
        "`forget_project`: a deleted project's kept install trees",
    ),
    Rule("GET", rf"/volumes/{DATA_VOLUME}", "a persistent volume: `create`, `volume_dir`"),
    Rule("DELETE", rf"/volumes/{DATA_VOLUME}", "`delete_volumes`: a deleted project's volumes"),
    Rule("GET", r"/volumes", "`delete_volumes`: find a project's volumes"),
    Rule("GET", r"/system/df", "`volumes`: the space each volume uses"),
    Rule("GET", r"/images/(?P<image>.+)/json", "check the runner image exists: `create`"),
    Rule("GET", r"/networks", "diagnostics: list networks"),
    Rule("GET", r"/networks/(?P<network>[A-Za-z0-9][A-Za-z0-9_.-]*)", "diagnostics: a network"),
)

_HOST_NAMESPACES = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode")
_EMPTY_LISTS = ("Binds", "VolumesFrom", "Devices", "CapAdd", "DeviceRequests", "Links")
# The one mount a runtime asks for: the named volume of shared package caches.
CACHE_MOUNT = {"Type": "volume", "Source": "devpush-build-cache", "Target": "/devpush/cache"}


class Refused(Exception):
    """A call the proxy does not forward; the message says why."""


def match(method: str, path: str) -> tuple[Rule, str | None]:
    """The rule allowing this call and the container (or, for `exec` rules, the exec) it
    names, or Refused."""
    for rule in RULES:
        found = rule.matches(method, path)
        if found:
            if rule.exec:
                return rule, found.group("exec")
            return rule, found.groupdict().get("id") if rule.container else None
    raise Refused(f"{method} {path} is not an allowed Engine API call")


_EXEC_FIELDS = {
    "Container",
    "Privileged",
    "Tty",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Cmd",
    "Env",
    "WorkingDir",
    "detachKeys",
    "User",
    "ConsoleSize",
}


def check_exec(config: Any) -> None:
    """An exec as the runtime makes them: not privileged, not as root, no terminal or stdin."""
    if not isinstance(config, dict):
        raise Refused("an exec body must be a JSON object")
    unknown = sorted(set(config) - _EXEC_FIELDS)
    if unknown:
        raise Refused(f"exec fields {', '.join(unknown)} are not allowed")
    if config.get("Privileged"):
        raise Refused("privileged execs are not allowed")
    if config.get("Tty") or config.get("AttachStdin"):
        raise Refused("execs may not take a terminal or stdin")
    user = str(config.get("User") or "")
    if user.partition(":")[0] in ("", "0", "root"):
        raise Refused("execs must run as the app's user, not root")


def check_create(config: Any) -> None:
    """Refuse a container config that asks for more than the docker runtime ever does."""
    if not isinstance(config, dict):
        raise Refused("a container create body must be a JSON object")
    labels = config.get("Labels") or {}
    if not isinstance(labels, dict) or labels.get(MANAGED_LABEL) != "true":
        raise Refused(f"containers must be created with the label {MANAGED_LABEL}=true")
    if config.get("Volumes"):
        raise Refused("containers may not declare volumes")
    host = config.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise Refused("HostConfig must be a JSON object")
    if host.get("Privileged"):
        raise Refused("privileged containers are not allowed")
    for key in _EMPTY_LISTS:
        if host.get(key):
            raise Refused(f"HostConfig.{key} is not allowed (no host paths, devices or caps)")
    _check_mounts_and_namespaces(host)


def _check_mounts_and_namespaces(host: dict[str, Any]) -> None:
    for mount in host.get("Mounts") or []:
        if mount != CACHE_MOUNT and not _is_trees_mount(mount) and not _is_data_mount(mount):
            raise Refused(
                "HostConfig.Mounts may only hold the build cache volume, the project's "
                "devpush-trees-* volume, devpush-vol-* volumes and anonymous volumes"
            )
    network = str(host.get("NetworkMode") or "")
    if network == "host" or network.startswith("container:"):
        raise Refused(f"NetworkMode {network} is not allowed")
    for key in _HOST_NAMESPACES:
        value = str(host.get(key) or "")
        if value == "host" or value.startswith("container:"):
            raise Refused(f"HostConfig.{key}={value} is not allowed")
    for option in host.get("SecurityOpt") or []:
        if "unconfined" in str(option) or str(option).startswith("label=disable"):
            raise Refused(f"SecurityOpt {option} is not allowed")


def _is_trees_mount(mount: Any) -> bool:
    return (
        isinstance(mount, dict)
        and set(mount) == {"Type", "Source", "Target"}
        and mount["Type"] == "volume"
        and re.fullmatch(TREES_VOLUME, str(mount["Source"])) is not None
        and mount["Target"] == "/devpush/trees"
    )


def _is_data_mount(mount: Any) -> bool:
    """An environment's devpush-vol-* volume, or a preview's anonymous one, at an absolute
    path of the container."""
    if not isinstance(mount, dict) or mount.get("Type") != "volume":
        return False
    target = str(mount.get("Target") or "")
    if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", target) or "/.." in target:
        return False
    if set(mount) == {"Type", "Target"}:
        return True
    return set(mount) == {"Type", "Source", "Target"} and (
        re.fullmatch(DATA_VOLUME, str(mount["Source"])) is not None
    )


def check_volume(body: Any) -> None:
    """The volumes a runtime creates: a project's devpush-trees-* volume and its environments'
    devpush-vol-* volumes, no driver."""
    if not isinstance(body, dict) or set(body) - {"Name", "Labels"}:
        raise Refused("a volume create body may only hold Name and Labels")
    name = str(body.get("Name"))
    if not (re.fullmatch(TREES_VOLUME, name) or re.fullmatch(DATA_VOLUME, name)):
        raise Refused("only devpush-trees-* and devpush-vol-* volumes may be created")
    labels = body.get("Labels") or {}
    if not isinstance(labels, dict) or labels.get(MANAGED_LABEL) != "true":
        raise Refused(f"volumes must be created with the label {MANAGED_LABEL}=true")
