"""Build-plan detection for the "new project" page: the same plan the worker would follow at
deploy time (`deployments.plans`), so the page can pre-fill the commands it would use."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from devpush import builds
from devpush.deployments import plans
from devpush.errors import DevpushError
from devpush.platform import Platform
from devpush.projects.schemas import REPO_URL
from devpush.sources import git


async def detect(
    p: Platform,
    *,
    url: str,
    branch: str,
    subdir: str = "",
    credentials: git.Credentials | None = None,
    private_dir: Path | None = None,
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
    plan, _ = await plans.plan_source(
        p, url=url, branch=branch, subdir=subdir, credentials=credentials
    )
    return plan
