"""flows.make_plan: a version the runtime lacks is fetched through Runtime.provide, once, and
the plan then uses it; a runtime that can't fetch it leaves the build with the clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devpush.builds import MissingToolchain
from devpush.deployments.flows import make_plan
from devpush.runtime.base import Toolchain

HOST = [Toolchain("python", "3.11.2", path="/usr/bin/python3.11")]
FETCHED = Toolchain("python", "3.12.7", path="/devpush/toolchains/python/cpython-3.12.7/bin/py")


class StubRuntime:
    def __init__(self, fetched: Toolchain | None) -> None:
        self.fetched = fetched
        self.asked: list[tuple[str, str]] = []

    async def toolchains(self) -> list[Toolchain]:
        return list(HOST)

    async def provide(self, language: str, spec: str) -> Toolchain | None:
        self.asked.append((language, spec))
        return self.fetched


class Registry:
    def __init__(self, runtime: StubRuntime) -> None:
        self.runtime = runtime

    def get(self, name: str) -> Any:
        return self.runtime


def app(root: Path) -> Path:
    (root / ".python-version").write_text("3.12\n")
    (root / "main.py").write_text("print('hi')\n")
    return root


async def test_a_missing_python_is_fetched_and_used(tmp_path: Path) -> None:
    runtime = StubRuntime(FETCHED)
    said: list[str] = []

    async def log(line: str) -> None:
        said.append(line)

    plan = await make_plan(Registry(runtime), "process", app(tmp_path), {}, log)  # type: ignore[arg-type]
    assert runtime.asked == [("python", "3.12")]
    assert plan.version == "3.12.7" and FETCHED.path in (plan.install or "")
    assert said == ["Fetching python 3.12 for this build"]


async def test_a_runtime_that_cannot_fetch_leaves_the_clear_error(tmp_path: Path) -> None:
    runtime = StubRuntime(None)
    with pytest.raises(MissingToolchain, match=r"\.python-version asks for 3\.12.*3\.11\.2"):
        await make_plan(Registry(runtime), "process", app(tmp_path), {})  # type: ignore[arg-type]
    assert runtime.asked == [("python", "3.12")]
