"""The host services each runtime root on this machine gives its isolated apps.

The nftables table `inet devpush` is one for the whole machine, while each process-runtime root
(an install, or a test's platform) has services of its own, such as the managed databases'
PostgreSQL port. Each root records its own here and the table opens the union, so a root that
applies the table never closes what another root gave its apps.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

REGISTRY = Path("/run/devpush-netns")

Service = tuple[str, int]


@contextlib.contextmanager
def registered(root: Path, owner: str, services: list[Service]) -> Iterator[list[Service]]:
    """Under a machine-wide lock: records `services` as `owner`'s (the root at `root`) and
    yields the union of every root's, for the caller to apply before the lock is let go. A
    root whose directory is gone, or whose record can't be read, is dropped."""
    REGISTRY.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(REGISTRY / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entry = REGISTRY / f"{owner}.json"
        temporary = entry.with_suffix(".tmp")
        temporary.write_text(json.dumps({"root": str(root), "services": services}))
        os.replace(temporary, entry)
        union: set[Service] = set()
        for path in REGISTRY.glob("*.json"):
            try:
                record = json.loads(path.read_text())
                if not Path(record["root"]).is_dir():
                    path.unlink(missing_ok=True)
                    continue
                union.update((str(host), int(port)) for host, port in record["services"])
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
        yield sorted(union)
