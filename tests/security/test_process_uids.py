"""Each project runs under its own uid (issue #17), proved on real process-runtime instances
(bubblewrap, root worker, umask 077 like the platform):

- two projects' apps run as two different uids (and gids) of the reserved range; two
  deployments of one project share one, which owns its app/, state/, cache and kept trees;
- project A can reach nothing of project B: not from inside its sandbox (B's paths, cache and
  trees aren't there), and not on the host either: a process with A's uid, handed a descriptor
  of B's directories (so the runtime root's 0700 is no part of the proof), can neither read nor
  create B's files, nor signal B's app; B's own uid can (the control);
- a project keeps its uid for its next deployment; forget_project frees it (not while an
  instance of the project is left), and a full range refuses a new project with the setting
  to raise;
- a range that holds an existing user's uid is refused, naming the user and the settings.
- what an older version left to nobody (the shared cache directory, a project's trees) is
  taken back: the shared entries deleted, the trees made afresh under the project's uid.

Needs root and bubblewrap (scripts/test-setup.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from devpush.errors import RuntimeFailure
from devpush.runtime.base import RuntimeHandle
from devpush.runtime.process import ProcessRuntime
from tests.integration.runtime_process.conftest import APP
from tests.integration.runtime_process.test_process_runtime import deploy, get, make_spec

BASE, COUNT = 200_000, 100_000  # the settings' defaults
SECRET = "secret-of-b"
# B's install step leaves a secret in each place B owns: its app, its cache, its kept trees.
WRITE_SECRETS = " && ".join(
    f"echo {SECRET} > {path}"
    for path in ("/app/secret.txt", "/devpush/cache/secret.txt", "/devpush/trees/secret.txt")
)
# Runs under setpriv as some uid: argv[1] is a directory descriptor the test opened as root.
TRY = r"""
import json, os, sys
directory, name, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
result = {}
try:
    fd = os.open(name, os.O_RDONLY, dir_fd=directory)
    result["read"] = "read:" + os.read(fd, 100).decode().strip()
except OSError as exc:
    result["read"] = "error:" + type(exc).__name__
try:
    os.close(os.open("planted.txt", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=directory))
    result["create"] = "created"
except OSError as exc:
    result["create"] = "error:" + type(exc).__name__
try:
    os.kill(pid, 0)
    result["signal"] = "sent"
except OSError as exc:
    result["signal"] = "error:" + type(exc).__name__
print(json.dumps(result))
"""


@pytest.fixture(autouse=True)
def platform_umask() -> Iterator[None]:
    old = os.umask(0o077)  # the platform's own (cli.py)
    yield
    os.umask(old)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "src"
    directory.mkdir()
    (directory / "app.py").write_text(APP)
    return directory


@pytest.fixture
async def runtimes(tmp_path: Path) -> AsyncIterator[Callable[..., ProcessRuntime]]:
    data = tmp_path / "data"
    made: list[ProcessRuntime] = []

    def make(**overrides: Any) -> ProcessRuntime:
        options: dict[str, Any] = {
            "root": data / "runtime" / "process",
            "protected_paths": [data],
            "allow_unsandboxed": False,
            "cache_dir": data / "cache" / "builds",
            "trees_dir": data / "cache" / "trees",
        }
        runtime = ProcessRuntime(**(options | overrides))
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        for handle in await runtime.list():
            await runtime.remove(handle)


async def probe(handle: RuntimeHandle) -> dict[str, Any]:
    result: dict[str, Any] = (await get(handle, "/probe")).json()
    return result


def app_process(handle: RuntimeHandle, uid: int) -> psutil.Process:
    root = psutil.Process(handle.data["pid"])
    for proc in root.children(recursive=True):
        if proc.uids().real == uid and "app.py" in " ".join(proc.cmdline()):
            return proc
    raise AssertionError(f"no app process of uid {uid} under {root.pid}")


def as_uid(uid: int, directory: Path, name: str, pid: int) -> dict[str, str]:
    """What a process of `uid` can do to `directory`/`name` and to process `pid`, `directory`
    handed over as an open descriptor (no path above it is walked)."""
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    try:
        setpriv = [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}"]
        done = subprocess.run(
            [*setpriv, "--clear-groups", sys.executable, "-I", "-c", TRY, str(fd), name, str(pid)],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=30,
            cwd="/",
            check=True,
        )
    finally:
        os.close(fd)
    result: dict[str, str] = json.loads(done.stdout)
    return result


def owner(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, info.st_mode & 0o777


async def test_each_project_runs_as_its_own_uid_which_owns_its_files(
    runtimes: Callable[..., ProcessRuntime], source: Path, tmp_path: Path
) -> None:
    runtime = runtimes()
    a1 = await deploy(runtime, make_spec(source, project_id="proj-a"))
    a2 = await deploy(runtime, make_spec(source, project_id="proj-a"))
    b = await deploy(runtime, make_spec(source, project_id="proj-b"))
    seen = {name: await probe(handle) for name, handle in (("a1", a1), ("a2", a2), ("b", b))}
    uid_a, uid_b = seen["a1"]["uid"], seen["b"]["uid"]

    assert BASE <= uid_a < BASE + COUNT and BASE <= uid_b < BASE + COUNT
    assert uid_a != uid_b
    assert (seen["a2"]["uid"], seen["a2"]["gid"]) == (uid_a, uid_a)  # one project, one uid
    assert seen["b"]["gid"] == uid_b
    data = tmp_path / "data"
    for handle, uid in ((a1, uid_a), (a2, uid_a), (b, uid_b)):
        directory = Path(handle.data["dir"])
        assert owner(directory / "app") == (uid, uid, 0o700)
        assert owner(directory / "app" / "app.py") == (uid, uid, 0o600)
        assert owner(directory / "state") == (uid, uid, 0o700)
        info = json.loads((directory / "instance.json").read_text())
        assert info["user"] == f"{uid}:{uid}"
    for project, uid in (("proj-a", uid_a), ("proj-b", uid_b)):
        assert owner(data / "cache" / "builds" / project) == (uid, uid, 0o700)
        assert owner(data / "cache" / "trees" / project) == (uid, uid, 0o700)
    described = await runtime.describe()
    assert described["app_user"] == f"per project, from uids {BASE}-{BASE + COUNT - 1}"


async def test_a_project_reaches_nothing_of_another(
    runtimes: Callable[..., ProcessRuntime], source: Path, tmp_path: Path
) -> None:
    runtime = runtimes()
    b = await deploy(runtime, make_spec(source, project_id="proj-b", install_command=WRITE_SECRETS))
    uid_b = (await probe(b))["uid"]
    data = tmp_path / "data"
    b_app = Path(b.data["dir"]) / "app"
    places = {
        "app": b_app,
        "cache": data / "cache" / "builds" / "proj-b",
        "trees": data / "cache" / "trees" / "proj-b",
    }
    host_paths = [str(path / "secret.txt") for path in places.values()]
    inside = ["/devpush/cache/secret.txt", "/devpush/trees/secret.txt"]
    env = {"PROBE_READ": ":".join(host_paths), "PROBE_EXISTS": ":".join(host_paths + inside)}
    a = await deploy(runtime, make_spec(source, project_id="proj-a", env=env))
    seen = await probe(a)
    uid_a = seen["uid"]
    assert uid_a != uid_b

    # Inside A's sandbox, none of B's files exist (its own cache and trees are empty).
    assert all(value.startswith("error:") for value in seen["read"].values()), seen["read"]
    assert not any(seen["exists"].values()), seen["exists"]
    # On the host: A's uid can't read nor create B's files, nor signal B's app; B's uid can.
    b_app_pid = app_process(b, uid_b).pid
    for place, directory in places.items():
        assert owner(directory / "secret.txt") == (uid_b, uid_b, 0o600), place
        assert as_uid(uid_a, directory, "secret.txt", b_app_pid) == {
            "read": "error:PermissionError",
            "create": "error:PermissionError",
            "signal": "error:PermissionError",
        }, place
        control = as_uid(uid_b, directory, "secret.txt", b_app_pid)
        assert control == {"read": f"read:{SECRET}", "create": "created", "signal": "sent"}
    # Nor can it open B's instance directory's app/ itself.
    assert as_uid(uid_a, b_app.parent, "app", b_app_pid)["read"] == "error:PermissionError"


async def test_a_project_keeps_its_uid_until_forgotten(
    runtimes: Callable[..., ProcessRuntime], source: Path, tmp_path: Path
) -> None:
    runtime = runtimes(uid_range=(250_000, 2))  # room for two projects
    a = await deploy(runtime, make_spec(source, project_id="proj-a"))
    uid_a = (await probe(a))["uid"]
    b = await deploy(runtime, make_spec(source, project_id="proj-b"))
    assert {uid_a, (await probe(b))["uid"]} == {250_000, 250_001}
    with pytest.raises(RuntimeFailure, match=r"every uid of 250000-250001 belongs to a project"):
        await runtime.create(make_spec(source, project_id="proj-c"))

    await runtime.remove(a)
    a = await deploy(runtime, make_spec(source, project_id="proj-a"))
    assert (await probe(a))["uid"] == uid_a  # its next deployment: the same uid

    await runtime.forget_project("proj-a")  # an instance of it is left: the uid stays its own
    with pytest.raises(RuntimeFailure, match="every uid"):
        await runtime.create(make_spec(source, project_id="proj-c"))
    await runtime.remove(a)
    await runtime.forget_project("proj-a")
    for kind in ("builds", "trees"):
        assert not (tmp_path / "data" / "cache" / kind / "proj-a").exists()
    c = await deploy(runtime, make_spec(source, project_id="proj-c"))
    assert (await probe(c))["uid"] == uid_a  # freed, then handed to the next project
    assert owner(tmp_path / "data" / "cache" / "trees" / "proj-c")[0] == uid_a


async def test_a_range_holding_a_users_uid_is_refused(
    runtimes: Callable[..., ProcessRuntime], source: Path
) -> None:
    runtime = runtimes(uid_range=(65_000, 1_000))  # holds nobody's 65534
    expected = (
        "DEVPUSH_SANDBOX_UID_BASE=65000 and DEVPUSH_SANDBOX_UID_COUNT=1000 reserve uids and "
        "gids 65000-65999 for the process runtime's projects, but user 'nobody' has uid 65534; "
        "choose a range that no user, group or subuid/subgid range uses"
    )
    with pytest.raises(RuntimeFailure) as refused:
        await runtime.create(make_spec(source, project_id="proj-a"))
    assert str(refused.value) == expected
    assert (await runtime.describe())["app_user"] == expected
    assert await runtime.list() == []  # nothing was made


async def test_the_caches_an_older_version_shared_as_nobody_are_taken_back(
    runtimes: Callable[..., ProcessRuntime], source: Path, tmp_path: Path
) -> None:
    """Before per-project uids every app ran as nobody, which owned the whole cache directory
    (its uv/, npm/... shared by all projects) and each project's trees: nobody keeps none."""
    data = tmp_path / "data"
    builds, trees = data / "cache" / "builds", data / "cache" / "trees"
    for directory in (builds / "uv" / "wheels", trees / "proj-a" / "0123abcd" / ".venv"):
        directory.mkdir(parents=True)
        (directory / "planted.txt").write_text("planted")
    for path in (builds, builds / "uv", builds / "uv" / "wheels", trees / "proj-a"):
        os.chown(path, 65534, 65534)
    runtime = runtimes()
    a = await deploy(runtime, make_spec(source, project_id="proj-a"))
    uid = (await probe(a))["uid"]
    assert owner(builds) == (os.getuid(), os.getgid(), 0o700)
    assert sorted(p.name for p in builds.iterdir()) == ["proj-a"]  # the shared uv/ is gone
    assert owner(trees / "proj-a") == (uid, uid, 0o700)
    assert list((trees / "proj-a").iterdir()) == []  # nobody's kept tree: made afresh
