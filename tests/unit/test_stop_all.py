"""Killing a command's processes one by one (runtime/process_limits.py::stop_all): once they
are all stopped, a shell whose child is killed first can't run its next command before it is
killed too. Without it, a timed-out `echo started; sleep 300; echo never` printed "never"."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from devpush.runtime.process_limits import stop_all


def tree(pid: int) -> set[int]:
    root = psutil.Process(pid)
    return {pid, *(c.pid for c in root.children(recursive=True))}


def test_a_stopped_shell_does_not_go_on_when_its_child_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    shell = subprocess.Popen(["/bin/sh", "-c", f"sleep 300; echo next > {marker}; sleep 300"])
    try:
        deadline = time.monotonic() + 10
        while len(tree(shell.pid)) < 2:  # the shell and its sleep
            assert time.monotonic() < deadline, "the shell did not start its child"
            time.sleep(0.02)
        stopped = stop_all(lambda: tree(shell.pid))
        assert stopped == tree(shell.pid) and len(stopped) == 2
        assert all(psutil.Process(p).status() == psutil.STATUS_STOPPED for p in stopped)
        (child,) = stopped - {shell.pid}
        os.kill(child, signal.SIGKILL)  # the child first, as a one-by-one kill may
        time.sleep(0.5)
        assert not marker.exists()  # the shell stayed stopped
    finally:
        os.kill(shell.pid, signal.SIGKILL)
        shell.wait(timeout=10)
    assert not marker.exists()


def test_processes_started_during_the_pass_are_stopped_too() -> None:
    """A process that forks while the pass runs: its child is found on the next round."""
    shell = subprocess.Popen(["/bin/sh", "-c", "while :; do sleep 300 & sleep 0.001; done"])
    try:
        time.sleep(0.2)
        stopped = stop_all(lambda: tree(shell.pid))
        time.sleep(0.2)
        assert tree(shell.pid) == stopped  # nothing new once all are stopped
        # stopped, or a short sleep that had exited and waits for its stopped shell to reap it
        states = {psutil.Process(p).status() for p in stopped}
        assert states <= {psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE}, states
    finally:
        for pid in tree(shell.pid):
            os.kill(pid, signal.SIGKILL)
        shell.wait(timeout=10)
