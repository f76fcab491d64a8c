"""The post-receive hook of every push remote (`python -m devpush.git_remote.hook`).

git runs it after a push has stored its commits, with "<old> <new> <ref>" lines on stdin; what
it prints reaches the pusher as `remote:` lines. For each pushed branch it creates a deployment
exactly as a GitHub push would (through actions.create_and_enqueue), prints its URL, then follows
the build log until the deployment concludes (`git push -o nofollow` skips that). A deleted
branch's preview is taken down by a worker job. The app passes everything the hook needs in
DEVPUSH_* variables; the pushed data is only ever compared and stored, never run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass

from devpush import events
from devpush.auth.service import Principal
from devpush.bootstrap import build_platform
from devpush.db import session_scope
from devpush.deployments import service as deployments
from devpush.errors import DevpushError
from devpush.logs.follow import stream_position
from devpush.logs.lines import Followed, StatusChange
from devpush.platform import Platform
from devpush.projects.models import Environment, Project
from devpush.queue import enqueue_retire_branch
from devpush.settings import Settings
from devpush.sources import branches

ZERO = "0" * 40
FOLLOW_POLL_S = 1.0


@dataclass(frozen=True)
class Update:
    old: str
    new: str
    ref: str


def read_updates(lines: list[str]) -> list[Update]:
    updates = []
    for line in lines:
        parts = line.strip().split(" ", 2)
        if len(parts) == 3:
            updates.append(Update(*parts))
    return updates


def push_options(environ: dict[str, str]) -> list[str]:
    count = environ.get("GIT_PUSH_OPTION_COUNT", "0")
    n = int(count) if count.isdigit() else 0
    return [environ.get(f"GIT_PUSH_OPTION_{i}", "") for i in range(min(n, 100))]


def say(message: str = "") -> None:
    # one line at a time; git prefixes each with "remote: "
    for line in message.splitlines() or [""]:
        print(line[:1000].replace("\x1b", ""), flush=True)


def principal_from(environ: dict[str, str]) -> Principal:
    return Principal(
        user_id=environ["DEVPUSH_HOOK_USER_ID"],
        is_admin=False,
        scopes=frozenset({"deploy"}),
        token_id=environ.get("DEVPUSH_HOOK_TOKEN_ID") or None,
    )


async def run(updates: list[Update], *, follow: bool, environ: dict[str, str]) -> int:
    settings = Settings()
    p = await build_platform(settings, pool_size=1)
    try:
        created = []
        for update in updates:
            deployed = await _handle(p, update, environ)
            if deployed:
                created.append(deployed)
        if not created:
            return 0
        if not follow:
            say("Not following the build (-o nofollow); `devpush` shows its progress.")
            return 0
        for deployment_id, url in created:
            await follow_deployment(p, deployment_id, url)
        return 0
    finally:
        await p.close()


async def _handle(p: Platform, update: Update, environ: dict[str, str]) -> tuple[str, str] | None:
    """Deploy one pushed ref; (deployment id, its main URL), or None."""
    project_id = environ["DEVPUSH_HOOK_PROJECT_ID"]
    if not update.ref.startswith("refs/heads/"):
        say(f"{update.ref}: not a branch, nothing to deploy")
        return None
    branch = update.ref.removeprefix("refs/heads/")
    if update.new == ZERO:
        await enqueue_retire_branch(p.redis, project_id, branch)
        say(f"Branch {branch} deleted: its preview is being removed")
        return None
    async with p.sessions() as session:
        project = await session.get(Project, project_id)
        if project is None:
            say("devpush: this project no longer exists")
            return None
        try:
            deployment = await branches.deploy_push(
                session=session,
                p=p,
                project=project,
                branch=branch,
                commit_sha=update.new,
                trigger="git_push",
                principal=principal_from(environ),
                ip=environ.get("DEVPUSH_HOOK_IP") or None,
            )
        except DevpushError as exc:
            say(f"devpush: {branch} not deployed: {exc.message}")
            return None
        if deployment is None:
            say(
                f"{branch}: no environment follows this branch and previews are off; "
                "nothing to deploy"
            )
            return None
        environment = (
            await session.get(Environment, deployment.environment_id)
            if deployment.environment_id
            else None
        )
        urls = deployments.urls(
            p.settings, deployments.alias_specs(project, deployment, environment)
        )
    say(f"Deploying {branch} at {update.new[:7]} (deployment {deployment.id[:7]})")
    for kind, url in urls.items():
        say(f"  {kind:<15} {url}")
    main = urls.get("environment") or urls.get("branch") or urls["deployment"]
    return deployment.id, main


async def follow_deployment(p: Platform, deployment_id: str, url: str) -> None:
    """Print the deployment's log lines and status changes until it concludes (through the
    log store's follow, the same path the SSE stream uses)."""
    store = p.log_store
    position = await stream_position(p.redis, events.deployment_stream(deployment_id))
    limit = p.settings.build_timeout + p.settings.deploy_timeout + 120
    deadline = time.monotonic() + limit
    followed = store.follow(
        sessions=p.sessions,
        redis=p.redis,
        deployment_id=deployment_id,
        after_seq=0,
        position=position,
        idle=FOLLOW_POLL_S,
    )
    last_seq = 0
    async for batch in followed:
        last_seq = _say_batch(batch, last_seq)
        async with session_scope(p.sessions) as session:
            row = await deployments.get(session=session, deployment_id=deployment_id)
        if deployments.is_concluded(row):
            # lines stored before it concluded that the stream had not brought yet
            rest = store.stored_after(
                sessions=p.sessions, deployment_id=deployment_id, after_seq=last_seq
            )
            async for batch in rest:
                last_seq = _say_batch(batch, last_seq)
            _conclusion(row.conclusion.value if row.conclusion else "", row.error, url)
            return
        if time.monotonic() > deadline:
            break
    say(f"Still deploying after {limit:.0f}s; stopped following.")


def _say_batch(batch: list[Followed], last_seq: int) -> int:
    """Print a batch; returns the sequence number of the last line printed."""
    for item in batch:
        if isinstance(item, StatusChange):
            say(f"-> {item.payload.get('status')}")
        else:
            say(f"[{item.phase}] {item.message}")
            last_seq = item.seq
    return last_seq


def _conclusion(conclusion: str, error: str | None, url: str) -> None:
    if conclusion == "succeeded":
        say(f"Deployment succeeded: {url}")
    else:
        say(f"Deployment {conclusion or 'ended'}" + (f": {error}" if error else ""))


def main() -> int:
    environ = dict(os.environ)
    if "DEVPUSH_HOOK_PROJECT_ID" not in environ:
        print("devpush hook: run by the devpush git remote only", file=sys.stderr)
        return 1
    updates = read_updates(sys.stdin.read().splitlines())
    follow = "nofollow" not in push_options(environ)
    try:
        return asyncio.run(run(updates, follow=follow, environ=environ))
    except Exception as exc:  # the push is stored either way: say why nothing deployed
        say(f"devpush: could not deploy ({type(exc).__name__}); the push is stored, retry later")
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
