"""A worker killed between spawning an instance and recording its pid leaves processes that no
pid points at: removing the instance still ends them (found by their working directory)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import psutil

from devpush.runtime.base import RuntimeSpec
from devpush.runtime.process import ProcessRuntime


async def test_remove_ends_processes_whose_pid_was_never_recorded(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "app.py").write_text("print('hi')\n")
    root = tmp_path / "data" / "runtime" / "process"
    runtime = ProcessRuntime(root=root, protected_paths=[tmp_path / "data"], allow_unsandboxed=True)
    spec = RuntimeSpec(
        deployment_id="dep-stray", project_id="p", source_dir=source, start_command="x"
    )
    handle = await runtime.create(spec)  # created; start() never recorded a pid
    stray = subprocess.Popen(
        ["sh", "-c", "sleep 300 & wait"], cwd=root / "dep-stray", start_new_session=True
    )
    children: list[psutil.Process] = []
    for _ in range(100):  # until the shell has started its child
        if children := psutil.Process(stray.pid).children(recursive=True):
            break
        time.sleep(0.05)
    try:
        assert children, "the stray's child did not start"
        await runtime.remove(handle)
        assert stray.wait(10) is not None
        assert not [c for c in children if c.is_running() and c.status() != "zombie"]
        assert not (root / "dep-stray").exists()
    finally:
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        if stray.poll() is None:
            stray.kill()
        stray.wait(10)
