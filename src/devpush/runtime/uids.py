"""Per-project uids of the process runtime (issue #17): when the worker is root, each project's
apps run as, and its files belong to, a uid (and gid) of its own from a reserved range, so two
tenants' processes and files are strangers to each other.

The mapping is `<runtime root>/.uids.json` ({project id: uid}), changed only under the
runtime's lock. A project's first choice is derived from its id, so a lost registry hands it the
same uid again; a collision moves on to the next free one. Two deployments of one project share
its uid (and its kept trees); forget_project frees it.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import secrets
from pathlib import Path

from devpush.errors import RuntimeFailure

_MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel
_SUBORDINATE = (Path("/etc/subuid"), Path("/etc/subgid"))


def refusal(base: int, count: int) -> str | None:
    """Why uids base..base+count-1 can't be the sandboxes' own, or None: an existing user,
    group or subordinate range (a container engine's user namespaces) would share them."""
    last = base + count - 1
    where = f"DEVPUSH_SANDBOX_UID_BASE={base} and DEVPUSH_SANDBOX_UID_COUNT={count}"
    if base < 1 or count < 1 or last > _MAX_ID:
        return f"{where} are no valid uid range (1 to {_MAX_ID})"
    clash = _clash(base, last)
    if clash is None:
        return None
    return (
        f"{where} reserve uids and gids {base}-{last} for the process runtime's projects, but"
        f" {clash}; choose a range that no user, group or subuid/subgid range uses"
    )


def _clash(base: int, last: int) -> str | None:
    for user in pwd.getpwall():
        if base <= user.pw_uid <= last:
            return f"user {user.pw_name!r} has uid {user.pw_uid}"
    for group in grp.getgrall():
        if base <= group.gr_gid <= last:
            return f"group {group.gr_name!r} has gid {group.gr_gid}"
    for path in _SUBORDINATE:
        for name, start, size in _subordinate_ranges(path):
            if start <= last and base < start + size:
                return f"{path} gives {name!r} {start}-{start + size - 1}"
    return None


class ProjectUids:
    """The registry. `assign` and `release` are called under the runtime's lock; `get` reads
    without it (the file is replaced atomically)."""

    def __init__(self, path: Path, base: int, count: int) -> None:
        self.path = path
        self.base = base
        self.count = count

    @property
    def last(self) -> int:
        return self.base + self.count - 1

    def get(self, project_id: str) -> int | None:
        uid = self._read().get(project_id)
        return uid if uid is not None and self.base <= uid <= self.last else None

    def assign(self, project_id: str) -> int:
        """The project's uid, allocated on first use (or anew when the range changed)."""
        taken = self._read()
        uid = taken.get(project_id)
        if uid is not None and self.base <= uid <= self.last:
            return uid
        used = set(taken.values())
        digest = hashlib.sha256(project_id.encode()).digest()
        first = int.from_bytes(digest[:8], "big") % self.count
        for offset in range(self.count):
            uid = self.base + (first + offset) % self.count
            if uid not in used:
                taken[project_id] = uid
                self._write(taken)
                return uid
        raise RuntimeFailure(
            f"every uid of {self.base}-{self.last} belongs to a project; raise "
            "DEVPUSH_SANDBOX_UID_COUNT"
        )

    def release(self, project_id: str) -> None:
        taken = self._read()
        if taken.pop(project_id, None) is not None:
            self._write(taken)

    def _read(self) -> dict[str, int]:
        try:
            value = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RuntimeFailure(f"{self.path} is unreadable: {exc}") from exc
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in value.items()
        ):
            raise RuntimeFailure(f"{self.path} is no map of project ids to uids")
        return value

    def _write(self, taken: dict[str, int]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(taken, file, indent=1, sort_keys=True)
        os.replace(tmp, self.path)


def _subordinate_ranges(path: Path) -> list[tuple[str, int, int]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((parts[0], int(parts[1]), int(parts[2])))
    return ranges
