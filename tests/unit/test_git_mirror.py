"""Concurrent deployments of one project share its mirror: creating it and fetching into it
must be safe when several jobs (or worker processes) do it at once."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from devpush import git


def _repo(path: Path) -> str:
    path.mkdir()
    run = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com"]
    subprocess.run([*run[:1], "init", "-q", "-b", "main", str(path)], check=True)
    (path / "app.py").write_text("print('hi')\n")
    subprocess.run([*run, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*run, "-C", str(path), "commit", "-q", "-m", "first"], check=True)
    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return head.stdout.strip()


async def test_concurrent_fetches_into_a_new_mirror_all_succeed(tmp_path: Path) -> None:
    sha = _repo(tmp_path / "src")
    mirror = tmp_path / "mirrors" / "p.git"
    commits = await asyncio.gather(
        *(
            git.fetch(mirror=mirror, url=f"file://{tmp_path / 'src'}", branch="main")
            for _ in range(12)
        )
    )
    assert {c.sha for c in commits} == {sha}
    assert sorted(p.name for p in mirror.parent.iterdir()) == ["p.git", "p.git.lock"]
