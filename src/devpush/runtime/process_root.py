"""ProcessRuntime's root directory: the lock that serializes workers sharing it, the port and
address each instance claims under it, loading, listing and deleting the instance directories
in it, and forgetting a project's kept trees, package cache and uid."""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from devpush.errors import RuntimeFailure
from devpush.runtime import uids
from devpush.runtime.base import RuntimeHandle
from devpush.runtime.netns import Network
from devpush.runtime.process_files import VALID_ID, Instance, is_leftover
from devpush.runtime.process_limits import cgroup_remove
from devpush.runtime.process_tree import port_is_free

_Handles = list[RuntimeHandle]  # inside ProcessRuntime, `list` is the protocol's method


class RootMixin:
    """ProcessRuntime's bookkeeping of its root directory and the instances in it.
    ProcessRuntime.__init__ sets the attributes below."""

    name: str
    _root: Path
    _port_range: tuple[int, int]
    _cache_dir: Path | None
    _trees_dir: Path | None
    _network: Network | None
    _uids: uids.ProjectUids

    # -- claims --------------------------------------------------------------------------------

    def _claim(self, instance_id: str) -> tuple[int, str | None]:
        """A port, and when isolated an address with its namespace, that no other instance
        holds (under the lock)."""
        others: list[Instance] = []
        for entry in self._root.iterdir():
            if entry.name != instance_id and VALID_ID.fullmatch(entry.name):
                with contextlib.suppress(RuntimeFailure):
                    others += filter(None, [Instance.load(entry)])
        port = self._free_port({other.port for other in others if other.port})
        if self._network is None:
            return port, None
        self._network.ensure_once()
        addresses = {other.address for other in others if other.address}
        return port, self._network.attach(instance_id, addresses)

    def _free_port(self, taken: set[int]) -> int:
        """A port not promised to another instance, and free on 127.0.0.1 unless isolated
        (each namespace has all ports to itself)."""
        low, high = self._port_range
        # A random start spreads ports out, so a just-freed port is rarely handed out again
        # while a stale proxy route may still point at it.
        count = high - low + 1
        first = random.randrange(count)
        for offset in range(count):
            port = low + (first + offset) % count
            if port not in taken and (self._network is not None or port_is_free(port)):
                return port
        raise RuntimeFailure(f"no free port left in {low}-{high} on 127.0.0.1")

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serializes port choices across workers sharing this root."""
        with open(self._root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- instance directories ------------------------------------------------------------------

    def _load(self, instance_id: str) -> Instance | None:
        return Instance.load(self._root / instance_id)

    def _delete(self, instance_id: str, instance: Instance | None) -> None:
        directory = self._root / instance_id
        if directory.exists():
            # Renamed first so that a crash mid-delete leaves no half instance behind.
            trash = self._root / f".trash-{instance_id}-{secrets.token_hex(4)}"
            os.rename(directory, trash)
            shutil.rmtree(trash)
        if instance is not None and instance.cgroups:
            cgroup_remove(instance.cgroups)
        if self._network is not None:
            self._network.detach(instance_id)

    def _list(self) -> _Handles:
        handles = []
        for entry in sorted(self._root.iterdir()) if self._root.is_dir() else []:
            if is_leftover(entry):
                shutil.rmtree(entry, ignore_errors=True)
            if not entry.is_dir() or not VALID_ID.fullmatch(entry.name):
                continue
            try:
                instance = Instance.load(entry)
            except RuntimeFailure:
                instance = None
            handles.append(self._handle(instance) if instance else self._bare_handle(entry.name))
        if self._network is not None:  # re-applied: a firewall reload may have flushed it
            self._network.ensure()
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._lock():  # a namespace is made under it, for an existing directory
                self._network.sweep({entry.name for entry in self._root.iterdir()})
        return handles

    def _handle(self, instance: Instance) -> RuntimeHandle:
        host = instance.address or "127.0.0.1"
        upstream = f"{host}:{instance.port}" if instance.port and instance.pid else None
        directory = self._root / instance.name
        return RuntimeHandle(
            backend=self.name,
            id=instance.name,
            deployment_id=instance.deployment_id,
            upstream=upstream,
            data={
                "dir": str(directory),
                "pid": instance.pid,
                "port": instance.port,
                "replica": instance.replica,
            },
        )

    def _bare_handle(self, instance_id: str) -> RuntimeHandle:
        deployment_id, _, replica = instance_id.partition("-r")
        data = {"replica": int(replica)} if replica.isdigit() else {}
        return RuntimeHandle(
            backend=self.name, id=instance_id, deployment_id=deployment_id, data=data
        )

    # -- per-project uids ----------------------------------------------------------------------

    def _forget(self, project_id: str) -> None:
        for parent in filter(None, (self._cache_dir, self._trees_dir)):
            shutil.rmtree(parent / project_id, ignore_errors=True)
        if not self._root.is_dir():
            return
        with self._lock():  # the uid stays the project's while an instance of it is left
            for entry in self._root.iterdir():
                if entry.is_dir() and VALID_ID.fullmatch(entry.name):
                    with contextlib.suppress(RuntimeFailure):
                        instance = Instance.load(entry)
                        if instance is not None and instance.project_id == project_id:
                            return
            self._uids.release(project_id)
