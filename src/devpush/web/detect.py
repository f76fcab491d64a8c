"""Build-plan detection for the "new project" page: the same plan the worker would follow at
deploy time (`deployments.plans`), so the page can pre-fill the commands it would use."""

from __future__ import annotations

from devpush import builds, git
from devpush.deployments import plans
from devpush.errors import DevpushError
from devpush.platform import Platform
from devpush.projects.repository import check_local_url
from devpush.projects.schemas import REPO_URL


async def detect(
    p: Platform,
    *,
    url: str,
    branch: str,
    subdir: str = "",
    credentials: git.Credentials | None = None,
    admin: bool,
) -> builds.Plan:
    """The build plan of `branch` at `url`. Raises a DevpushError when the repository cannot be
    read, or a PlanError when nothing is recognised. A file:// URL is checked as a project's
    would be (`sources.remote.check_local_url`)."""
    if not REPO_URL.match(url) or len(url) > 2048:
        raise DevpushError("enter an https://, ssh://, git@host: or file:/// git URL")
    check_local_url(p.settings, url, admin=admin)
    plan, _ = await plans.plan_source(
        p, url=url, branch=branch, subdir=subdir, credentials=credentials
    )
    return plan
