"""The supervisor restarts a crashed child, and leaves one that keeps crashing stopped while
the rest of the platform (and the apps it serves) keeps running."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from devpush.embedded.launcher import RESTARTS_PER_MINUTE, Supervisor
from devpush.embedded.services import ChildSpec
from devpush.settings import Settings


class CrashingSupervisor(Supervisor):
    """Every component is a real process that exits at once with code 3."""

    def start_component(self, name: str) -> None:
        spec = ChildSpec(
            name=name,
            argv=[sys.executable, "-c", "raise SystemExit(3)"],
            log=self.settings.data_path / "logs" / f"{name}.log",
        )
        self.spawn(spec, {})
        self.stopped.discard(name)


def test_a_child_that_keeps_crashing_is_left_stopped(tmp_path: Path) -> None:
    out = io.StringIO()
    supervisor = CrashingSupervisor(Settings(data_dir=tmp_path), out=out)  # type: ignore[call-arg]
    supervisor.start_component("worker")
    for _ in range(RESTARTS_PER_MINUTE):
        assert supervisor._restart_crashed("worker", 3) is True
        assert "worker" in supervisor.children
    assert supervisor._restart_crashed("worker", 3) is False
    assert "worker" not in supervisor.children
    assert "worker" in supervisor.stopped
    assert not supervisor._stopping.is_set()  # the platform itself keeps running
    message = out.getvalue()
    assert "worker is left stopped: it keeps exiting (code 3)" in message
    assert "devpush start --components worker" in message
    # the operator starts it again: the count starts over
    supervisor.start_component("worker")
    assert supervisor._restart_crashed("worker", 3) is True
    for proc in supervisor.children.values():
        proc.wait(10)
