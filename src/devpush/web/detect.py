"""Build-plan detection for the "new project" page: a shallow fetch of one branch into a
temporary mirror, the tree exported, and `builds.detect` run on it — the same detection the
worker runs at deploy time, so the page can pre-fill the commands it would use."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from devpush import builds
from devpush.errors import DevpushError
from devpush.projects.schemas import REPO_URL
from devpush.runtime.base import Toolchain
from devpush.sources import git

DETECT_TIMEOUT = 30.0


async def detect(
    *,
    url: str,
    branch: str,
    subdir: str = "",
    credentials: git.Credentials | None = None,
    private_dir: Path | None = None,
    toolchains: list[Toolchain],
    runtime: str,
) -> builds.Plan:
    """The build plan of `branch` at `url`. Raises a DevpushError when the repository cannot be
    read, or a PlanError when nothing is recognised. A file:// URL may not point into
    `private_dir` (the platform's data dir, with other teams' repositories)."""
    if not REPO_URL.match(url) or len(url) > 2048:
        raise DevpushError("enter an https://, ssh://, git@host: or file:/// git URL")
    if url.startswith("file://") and private_dir is not None:
        target = Path(urlsplit(url).path).resolve()
        if target.is_relative_to(private_dir.resolve()):
            raise DevpushError("this path belongs to the platform")
    await git.check_branch(branch)
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="devpush-detect-"))
    try:
        mirror = tmp / "mirror.git"
        await git.ensure_mirror(mirror)
        async with git.auth_env(credentials) as auth:
            await git.run_git(
                "--git-dir",
                str(mirror),
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                "--",
                url,
                f"+refs/heads/{branch}:refs/devpush/detect",
                env=auth,
                timeout=DETECT_TIMEOUT,
            )
        root = await git.export(
            mirror=mirror, sha="refs/devpush/detect", dest=tmp / "src", subdir=subdir
        )
        return await asyncio.to_thread(
            builds.detect, root, toolchains=toolchains, runtime=runtime, config={}
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)
