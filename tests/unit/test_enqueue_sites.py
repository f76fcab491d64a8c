"""Every job is enqueued through the typed helpers of devpush.queue, never by a
function-name string elsewhere (issue #18, item 8)."""

from __future__ import annotations

import re
from pathlib import Path

import devpush

SRC = Path(devpush.__file__).parent
HOME = SRC / "queue.py"


def test_no_module_outside_the_queue_calls_enqueue_job() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted(SRC.rglob("*.py"))
        if path != HOME
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\benqueue_job\(", line)
    ]
    assert offenders == []
    assert "enqueue_job(" in HOME.read_text()
