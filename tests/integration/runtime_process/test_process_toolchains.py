"""Interpreters beyond Debian's: the admin's own Python prefixes, and CPython builds that
`uv python install` fetches when DEVPUSH_PYTHON_DOWNLOADS is on. The downloads come from a
custom downloads list (UV_PYTHON_DOWNLOADS_JSON_URL, as a mirror would be configured) that
points at an archive in the python-build-standalone layout, built here around the host's
python3.11: this machine can't reach the real download host."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from devpush.runtime.base import Phase, Toolchain
from devpush.runtime.process import ProcessRuntime
from devpush.runtime.toolchains import version_of
from tests.integration.runtime_process.conftest import APP
from tests.integration.runtime_process.test_process_builds import spec
from tests.integration.runtime_process.test_process_runtime import all_logs, get, lines

HOST_PYTHON = "/usr/bin/python3.11"
HOST_VERSION = version_of(HOST_PYTHON) or "missing"  # the tests fail below if it is missing
# The archive's label: the host's minor version with a patch release the host lacks, so that
# the fetched build is listed beside the host's (the host's wins for an equal version).
_MAJOR, _MINOR, _PATCH = (HOST_VERSION + ".0.0.0").split(".")[:3]
VERSION = f"{_MAJOR}.{_MINOR}.{int(_PATCH or 0) + 100}" if HOST_VERSION != "missing" else ""
WRAPPER = f'#!/bin/sh\nexec {HOST_PYTHON} "$@"\n'


def standalone_archive(directory: Path, version: str) -> Path:
    """A python-build-standalone `install_only` archive: python/bin, python/lib/python3.X."""
    minor = ".".join(version.split(".")[:2])
    tree = directory / "python"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib" / f"python{minor}").mkdir(parents=True)
    (tree / "bin" / f"python{minor}").write_text(WRAPPER)
    (tree / "bin" / f"python{minor}").chmod(0o755)
    (tree / "bin" / "python3").symlink_to(f"python{minor}")
    sysconfig = tree / "lib" / f"python{minor}" / "_sysconfigdata__linux_x86_64-linux-gnu.py"
    sysconfig.write_text(
        "# system configuration generated and used by the sysconfig module\nbuild_time_vars = {}\n"
    )
    archive = directory / f"cpython-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="python")
    return archive


def downloads_list(directory: Path, archive: Path, version: str) -> Path:
    major, minor, patch = (int(part) for part in version.split("."))
    entry = {
        "name": "cpython",
        "arch": {"family": "x86_64", "variant": None},
        "os": "linux",
        "libc": "gnu",
        "major": major,
        "minor": minor,
        "patch": patch,
        "prerelease": "",
        "url": archive.as_uri(),
        "sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "variant": None,
        "build": "20260101",
    }
    listing = directory / "downloads.json"
    listing.write_text(json.dumps({f"cpython-{version}-linux-x86_64-gnu": entry}))
    return listing


def make_runtime(tmp_path: Path, **options: object) -> ProcessRuntime:
    import uv

    return ProcessRuntime(
        root=tmp_path / "data" / "runtime" / "process",
        protected_paths=[tmp_path / "data"],
        allow_unsandboxed=False,
        cache_dir=tmp_path / "data" / "cache",
        trees_dir=tmp_path / "data" / "trees",
        toolchains_dir=tmp_path / "data" / "toolchains",
        tools={"bin/uv": Path(uv.find_uv_bin())},
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    assert HOST_VERSION != "missing", f"{HOST_PYTHON} is needed for this test"
    (tmp_path / "mirror").mkdir()
    archive = standalone_archive(tmp_path / "mirror", VERSION)
    listing = downloads_list(tmp_path / "mirror", archive, VERSION)
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS_JSON_URL", str(listing))
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS", "never")  # as builds set it: provide overrides
    return listing


@pytest.fixture
async def downloading(tmp_path: Path, mirror: Path) -> AsyncIterator[ProcessRuntime]:
    runtime = make_runtime(tmp_path, python_downloads=True)
    yield runtime
    for handle in await runtime.list():
        await runtime.remove(handle)


async def test_a_fetched_python_is_offered_and_runs_in_the_sandbox(
    downloading: ProcessRuntime, tmp_path: Path
) -> None:
    minor = ".".join(VERSION.split(".")[:2])
    previous = os.umask(0o077)  # the platform's own umask: the sandbox must still read it
    try:
        fetched = await downloading.provide("python", minor)
    finally:
        os.umask(previous)
    inside = f"/devpush/toolchains/python/cpython-{VERSION}-linux-x86_64-gnu/bin/python{minor}"
    assert fetched == Toolchain("python", VERSION, inside)
    assert fetched in await downloading.toolchains()

    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(APP)
    check = f"{inside} -c 'import sys; print(\"fetched\", sys.version.split()[0])'"
    handle = await downloading.start(
        await downloading.create(spec(source, build_command=check, env={"BODY": "up"}))
    )
    assert (await get(handle)).text == "up"
    built = [m for p, m in lines(await all_logs(downloading, handle), "stdout") if p is Phase.build]
    assert f"fetched {HOST_VERSION}" in built  # the wrapper runs the host's interpreter


async def test_downloads_stay_off_unless_the_setting_is_on(tmp_path: Path, mirror: Path) -> None:
    runtime = make_runtime(tmp_path)
    assert await runtime.provide("python", "3.11") is None
    assert not (tmp_path / "data" / "toolchains" / "python").exists()


@pytest.mark.parametrize("request_", ["3.11; touch /tmp/pwned", "$(id)", "latest", "3" * 80])
async def test_a_hostile_or_unknown_request_fetches_nothing(
    downloading: ProcessRuntime, tmp_path: Path, request_: str
) -> None:
    assert await downloading.provide("python", request_) is None
    installed = tmp_path / "data" / "toolchains" / "python"
    assert not installed.exists() or not list(installed.glob("cpython-*"))


async def test_a_version_the_mirror_lacks_fetches_nothing(downloading: ProcessRuntime) -> None:
    assert await downloading.provide("python", "3.99") is None
    assert all(t.version != "3.99" for t in await downloading.toolchains())


async def test_a_failed_download_fetches_nothing(
    tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mirror" / f"cpython-{VERSION}.tar.gz").write_bytes(b"truncated")
    runtime = make_runtime(tmp_path, python_downloads=True)
    assert await runtime.provide("python", ".".join(VERSION.split(".")[:2])) is None


async def test_an_admin_prefix_is_offered_first_and_bound_into_the_sandbox(
    tmp_path: Path,
) -> None:
    assert HOST_VERSION != "missing", f"{HOST_PYTHON} is needed for this test"
    minor = ".".join(VERSION.split(".")[:2])
    prefix = tmp_path / "opt" / f"python-{minor}"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / f"python{minor}").write_text(WRAPPER)
    (prefix / "bin" / f"python{minor}").chmod(0o755)
    for directory in (prefix, prefix / "bin"):  # as an admin installs it, whatever our umask
        directory.chmod(0o755)
    runtime = make_runtime(tmp_path, python_prefixes=[prefix])
    offered = await runtime.toolchains()
    path = str(prefix / "bin" / f"python{minor}")
    assert Toolchain("python", HOST_VERSION, path) in offered
    assert all(t.path != HOST_PYTHON for t in offered)

    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text(APP)
    check = f"{path} -c 'print(\"prefix-ran\")'"
    handle = await runtime.start(
        await runtime.create(spec(source, build_command=check, env={"BODY": "up"}))
    )
    try:
        assert (await get(handle)).text == "up"
        built = [m for p, m in lines(await all_logs(runtime, handle), "stdout")]
        assert "prefix-ran" in built
    finally:
        await runtime.remove(handle)
