"""The process runtime's files on disk: instance.json, the state files the app writes, and the
log files its output goes to."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devpush.errors import RuntimeFailure
from devpush.runtime.base import PHASE_MARKER, LogRecord, Phase, RuntimeSpec

MAX_LINE = 64 * 1024  # longer log lines are cut
_READ_CHUNK = 1024 * 1024
POLL = 0.025  # idle poll of log files and process state; live logs target < 100 ms
VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PHASES = {phase.value for phase in Phase}
_STALE_STAGING = 3600.0  # seconds after which a `.new-*` directory is a crashed create()


# ---------------------------------------------------------------------------------------------
# instance.json


@dataclass
class Instance:
    """What `instance.json` records: enough for any worker, after any restart, to find the app."""

    deployment_id: str
    project_id: str
    labels: dict[str, str]
    created_at: str
    spec: dict[str, Any]  # a summary: limits and env var names, never env values
    sandbox: str | None = None  # "bubblewrap" or "unsandboxed", from start() on
    user: str | None = None
    pid: int | None = None  # the root of the instance's process tree
    create_time: float | None = None  # with pid, identifies the process (pids are reused)
    port: int | None = None
    address: str | None = None  # the instance's own address (isolated network), else None
    started_at: str | None = None
    limits: str | None = None  # "cgroup v2", "cgroup v1" or "rlimit"
    cgroups: dict[str, str] = field(default_factory=dict)  # controller -> cgroup directory
    stopped: bool = False  # stop() was asked for
    replica: int = 0  # 0 ran the build; the others run copies of its built app

    @property
    def name(self) -> str:
        """The instance's directory (and namespace, cgroup) name."""
        return instance_name(self.deployment_id, self.replica)

    @classmethod
    def new(cls, spec: RuntimeSpec) -> Instance:
        summary = {
            "image": spec.image,
            "port": spec.port,
            "cpus": spec.cpus,
            "memory_mb": spec.memory_mb,
            "build_memory_mb": spec.build_memory_mb,
            "pids_limit": spec.pids_limit,
            "env_keys": sorted(spec.env),
        }
        return cls(
            deployment_id=spec.deployment_id,
            project_id=spec.project_id,
            labels=dict(spec.labels),
            created_at=now().isoformat(),
            spec=summary,
            replica=spec.replica,
        )

    @classmethod
    def load(cls, directory: Path) -> Instance | None:
        path = directory / "instance.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise RuntimeFailure(f"{path} is unreadable: {exc}") from exc

    def save(self, directory: Path) -> None:
        tmp = directory / f".instance.json.{secrets.token_hex(4)}"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, directory / "instance.json")


# ---------------------------------------------------------------------------------------------
# logs


class LogFile:
    """Reads one log file incrementally into records: phase markers applied, long lines cut."""

    def __init__(self, path: Path, stream: str) -> None:
        self.path = path
        self.stream = stream
        self.phase = Phase.build  # lines before any marker belong to the build
        self._file: Any = None
        self._partial = b""
        self._cutting = False  # the rest of an over-long line is being dropped

    def read(self, *, final: bool = False) -> list[LogRecord]:
        """New complete lines; with final=True the whole rest of the file, last line included."""
        records: list[LogRecord] = []
        while True:
            chunk = self._read_chunk()
            self._split(chunk, records)
            if not chunk or (records and not final):
                break
        if final and self._partial and not self._cutting:
            self._emit(self._partial, records)
        if final:
            self._partial, self._cutting = b"", False
        return records

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def _read_chunk(self) -> bytes:
        if self._file is None:
            try:
                self._file = open(self.path, "rb", buffering=0)  # open until close()
            except FileNotFoundError:
                return b""
        return self._file.read(_READ_CHUNK) or b""

    def _split(self, chunk: bytes, records: list[LogRecord]) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if self._cutting:  # the tail of a line already cut
                self._cutting = False
                continue
            self._emit(line, records)
        if len(self._partial) > MAX_LINE:
            if not self._cutting:
                self._emit(self._partial, records)
            self._partial, self._cutting = b"", True

    def _emit(self, line: bytes, records: list[LogRecord]) -> None:
        message = line[:MAX_LINE].decode("utf-8", errors="replace")
        if message.startswith(PHASE_MARKER):
            value = message[len(PHASE_MARKER) :].strip()
            if value in _PHASES:
                self.phase = Phase(value)
                return
        records.append(LogRecord(ts=now(), stream=self.stream, phase=self.phase, message=message))


# ---------------------------------------------------------------------------------------------
# helpers


def _read_state_file(path: Path) -> str | None:
    """Reads a file the app can write to: no symlink, no FIFO, no more than a few bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 64).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)


def read_phase(state_dir: Path) -> Phase | None:
    value = _read_state_file(state_dir / "phase")
    return Phase(value) if value in _PHASES else None


def read_exit_code(state_dir: Path) -> int | None:
    value = _read_state_file(state_dir / "exit_code")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def is_leftover(entry: Path) -> bool:
    """Left by a crash: a `.trash-*` directory (mid-delete) or an old `.new-*` (mid-create)."""
    if entry.name.startswith(".trash-"):
        return True
    if entry.name.startswith(".new-"):
        with contextlib.suppress(FileNotFoundError):
            return time.time() - entry.stat().st_mtime > _STALE_STAGING
    return False


def chown_tree(top: Path, uid: int) -> None:
    """Hand `top` to the sandbox's user as its only reader (group and other bits go: a tree
    extracted from git keeps 0644 whatever the umask)."""
    _own_privately(str(top), uid)
    for directory, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            _own_privately(os.path.join(directory, name), uid)


def _own_privately(path: str, uid: int) -> None:
    os.lchown(path, uid, uid)
    mode = os.lstat(path).st_mode
    if not stat.S_ISLNK(mode) and mode & 0o077:
        os.chmod(path, stat.S_IMODE(mode) & 0o700)


def special_files(directory: str, names: list[str]) -> set[str]:
    """copytree's `ignore`: sockets, pipes and devices (only files, links and directories are
    an app's code)."""
    skipped = set()
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            mode = os.lstat(os.path.join(directory, name)).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                skipped.add(name)
    return skipped


def copy_present(source: str, dest: str) -> None:
    """copytree's `copy_function`: a file deleted while the tree is copied is left out."""
    with contextlib.suppress(FileNotFoundError):
        shutil.copy2(source, dest)


def instance_name(deployment_id: str, replica: int) -> str:
    return deployment_id if replica == 0 else f"{deployment_id}-r{replica}"


def check_id(instance_id: str) -> str:
    if not VALID_ID.fullmatch(instance_id):
        raise RuntimeFailure(f"{instance_id!r} is not a valid instance id")
    return instance_id


def now() -> datetime:
    return datetime.now(UTC)
