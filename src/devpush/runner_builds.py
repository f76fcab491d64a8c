"""The runner images as the platform sees them: which projects run on each, and builds from
the admin page (the `build_runner_image` job and the state it keeps in Redis). The catalog and
the script itself are the runtime's (devpush.runtime.runner_images)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devpush.errors import Invalid, NotConfigured, ServiceUnavailable
from devpush.runtime import IMAGE_RUNTIMES
from devpush.runtime.runner_images import (
    IN_PROGRESS,
    JOB_TIMEOUT,
    LINES_KEPT,
    STATE_TTL,
    ImageUser,
    RunnerImage,
    build,
    cannot_build,
    host_command,
    short,
)

if TYPE_CHECKING:
    from arq.worker import Function
    from sqlalchemy.ext.asyncio import AsyncSession

    from devpush.platform import Platform
    from devpush.settings import Settings


async def users(*, session: AsyncSession, default_image: str) -> dict[str, list[ImageUser]]:
    """Projects with a running deployment, by the runner image its recorded plan names (the
    default image for a docker deployment whose plan names none, as the runtime does)."""
    from sqlalchemy import select

    from devpush.deployments.models import Deployment
    from devpush.projects.models import Project
    from devpush.teams.models import Team

    rows = await session.execute(
        select(
            Deployment.config, Deployment.runtime, Project.id, Project.name, Team.slug, Team.name
        )
        .join(Project, Project.id == Deployment.project_id)
        .join(Team, Team.id == Project.team_id)
        .where(Deployment.runtime_handle.is_not(None))
        .order_by(Team.name, Project.name)
    )
    found: dict[str, list[ImageUser]] = {}
    for config, runtime, project_id, project, team_slug, team in rows.all():
        plan = config.get("plan") if isinstance(config, dict) else None
        image = plan.get("image") if isinstance(plan, dict) else None
        if not image and runtime in IMAGE_RUNTIMES:
            image = default_image
        if not isinstance(image, str) or not image:
            continue
        user = ImageUser(str(project_id), str(project), str(team_slug), str(team))
        same = found.setdefault(short(image), [])
        if user not in same:
            same.append(user)
    return found


def attach_users(images: list[RunnerImage], by_image: dict[str, list[ImageUser]]) -> None:
    for image in images:
        image.users = by_image.get(short(image.tag), [])


# ---- builds from the admin page ---------------------------------------------------------------
def state_key(name: str) -> str:
    return f"devpush:runner-image:{name}"


async def read_states(platform: Platform, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each name's last build from the page: state, times, exit code, output tail."""
    names = list(names)
    if not names:
        return {}
    raw = await platform.redis.mget([state_key(n) for n in names])
    states = {}
    for name, value in zip(names, raw, strict=True):
        if value:
            state = json.loads(value)
            # A worker that died mid-build left its state behind: past the job's time limit
            # the build is not going on.
            if state.get("state") in IN_PROGRESS and time.time() - state["updated"] > (
                JOB_TIMEOUT + 60
            ):
                state |= {"state": "failed", "error": "the worker stopped answering"}
            for key in ("started", "finished", "updated"):
                if isinstance(state.get(key), int | float):
                    state[f"{key}_at"] = datetime.fromtimestamp(state[key], UTC)
            states[name] = state
    return states


async def _save(platform: Platform, name: str, state: dict[str, Any]) -> None:
    state["updated"] = time.time()
    await platform.redis.set(state_key(name), json.dumps(state), ex=STATE_TTL)


async def mark_queued(platform: Platform, name: str, *, refresh: bool) -> None:
    await _save(platform, name, {"state": "queued", "refresh": refresh, "lines": []})


async def run_build(platform: Platform, name: str, *, refresh: bool = False) -> int:
    """Build one image, keeping the state the admin page shows; its exit code."""
    state: dict[str, Any] = {
        "state": "building",
        "refresh": refresh,
        "started": time.time(),
        "lines": [],
    }
    await _save(platform, name, state)

    async def line(text: str) -> None:
        state["lines"] = [*state["lines"], text][-LINES_KEPT:]
        await _save(platform, name, state)

    code = 1
    try:
        if reason := cannot_build(platform.settings):
            raise NotConfigured(f"Can't build here: {reason}. Run `{host_command(name)}`.")
        code = await build(platform.settings, [name], refresh=refresh, on_line=line)
    except (Invalid, NotConfigured, ServiceUnavailable, OSError) as exc:
        state["error"] = getattr(exc, "message", None) or str(exc)
    finally:
        state |= {
            "state": "succeeded" if code == 0 else "failed",
            "finished": time.time(),
            "exit_code": code,
        }
        await _save(platform, name, state)
    return code


async def build_runner_image(ctx: dict[str, Any], name: str, refresh: bool = False) -> None:
    """The arq job: build `name`, record the outcome in the audit log."""
    from devpush.audit.service import record

    platform: Platform = ctx["platform"]
    code = await run_build(platform, name, refresh=refresh)
    async with platform.sessions() as session:
        await record(
            session=session,
            principal=None,
            action="runner_image.built" if code == 0 else "runner_image.build_failed",
            resource_type="runner_image",
            resource_id=name,
            team_id=None,
            data={"exit_code": code, "refresh": refresh},
        )
        await session.commit()


def functions(settings: Settings) -> list[Function]:
    from arq import func

    return [func(build_runner_image, timeout=JOB_TIMEOUT, keep_result=0, max_tries=1)]
