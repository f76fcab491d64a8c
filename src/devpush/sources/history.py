"""A project's branches and a branch's recent commits, read live from its repository for the
dashboard's deploy form. Each read is a shallow fetch into a private temporary mirror (as the
build-plan preview does): the worker's mirror is never written from the app's side.

Every git call is an argv list with a timeout; a branch is checked before it reaches git and is
passed after `--`."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from devpush import git
from devpush.deployments import remote
from devpush.deployments.models import Deployment
from devpush.errors import Conflict, Invalid, RuntimeFailure
from devpush.platform import Platform
from devpush.projects.models import Project
from devpush.projects.repository import push_repo
from devpush.sources.branches import valid_branch

READ_TIMEOUT = 30.0
RECENT = 20  # commits the form offers
CHECK_DEPTH = 200  # how far back a submitted commit may be found on its branch
_REF = "refs/devpush/history"


@dataclass(frozen=True)
class RecentCommit:
    sha: str
    subject: str
    author: str
    committed_at: datetime


async def _source(p: Platform, project: Project, branch: str) -> remote.Remote | None:
    """Where the project's code comes from; None for a push remote nothing was pushed to."""
    probe = Deployment(branch=branch, pr_number=None)  # read by for_deployment, never saved
    source = await remote.for_deployment(p, project, probe)
    local = str(push_repo(p.settings, project.id))
    if source.url == local and not Path(local).exists():
        return None
    return source


async def list_branches(p: Platform, project: Project) -> list[str]:
    """The repository's branches (for a push remote, the pushed ones), the production branch
    first. Names git accepts but the API refuses are left out."""
    source = await _source(p, project, project.production_branch)
    if source is None:
        return []
    async with git.auth_env(source.credentials) as auth:
        out = await git.run_git(
            "ls-remote", "--heads", "--", source.url, env=auth, timeout=READ_TIMEOUT
        )
    names = set()
    for line in out.decode(errors="replace").splitlines():
        _, _, ref = line.partition("\t")
        name = ref.removeprefix("refs/heads/")
        if ref.startswith("refs/heads/") and valid_branch(name):
            names.add(name)
    return sorted(names, key=lambda n: (n != project.production_branch, n))


@asynccontextmanager
async def _fetched(
    p: Platform, project: Project, branch: str, depth: int
) -> AsyncIterator[Path | None]:
    """A temporary mirror holding the branch's last `depth` commits at _REF (None when there
    is nothing to read); removed when the block ends."""
    if not valid_branch(branch):
        raise Invalid(f"{branch[:80]!r} is not a valid branch name")
    await git.check_branch(branch)
    source = await _source(p, project, branch)
    if source is None:
        yield None
        return
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="devpush-history-"))
    try:
        mirror = tmp / "mirror.git"
        await git.ensure_mirror(mirror)
        async with git.auth_env(source.credentials) as auth:
            try:
                await git.run_git(
                    "--git-dir",
                    str(mirror),
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--depth",
                    str(depth),
                    "--",
                    source.url,
                    f"+refs/heads/{branch}:{_REF}",
                    env=auth,
                    timeout=READ_TIMEOUT,
                )
            except RuntimeFailure as exc:
                if "couldn't find remote ref" in exc.message:
                    raise Invalid(f"the repository has no branch {branch!r}") from None
                raise
        yield mirror
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


async def recent_commits(
    p: Platform, project: Project, branch: str, limit: int = RECENT
) -> list[RecentCommit]:
    """The branch's last `limit` commits, newest first."""
    async with _fetched(p, project, branch, limit) as mirror:
        if mirror is None:
            raise Conflict("nothing has been pushed to this project yet")
        out = await git.run_git(
            "--git-dir",
            str(mirror),
            "log",
            f"--max-count={limit}",
            "--format=%H%x00%ct%x00%an%x00%s",
            _REF,
            "--",
        )
    commits = []
    for line in out.decode(errors="replace").splitlines():
        sha, stamp, author, subject = line.split("\x00", 3)
        when = datetime.fromtimestamp(int(stamp), UTC)
        commits.append(
            RecentCommit(sha=sha, subject=subject[:200], author=author, committed_at=when)
        )
    return commits


async def commit_on_branch(p: Platform, project: Project, branch: str, sha: str) -> str | None:
    """The full sha of `sha` when it is one of the branch's last CHECK_DEPTH commits, else None."""
    if not git.SHA.match(sha):
        raise Invalid("a commit is 7 to 64 hex characters")
    async with _fetched(p, project, branch, CHECK_DEPTH) as mirror:
        if mirror is None:
            return None
        try:
            full = await git.run_git(
                "--git-dir", str(mirror), "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}"
            )
            found = full.decode().strip()
            await git.run_git("--git-dir", str(mirror), "merge-base", "--is-ancestor", found, _REF)
        except RuntimeFailure:
            return None
    return found
