"""The runner-image catalog: the images the container engine has (language, version, size,
which projects run on each), and their builds by `scripts/runner-images.sh`, from the admin
page (the `build_runner_image` job, its state in Redis) or from `devpush update --full`.

Names are the script's targets (`python-3.11`, `node-22`): every name is checked against the
script's own `--list` before anything runs."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import re
import shutil
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devpush.errors import Invalid, NotConfigured, ServiceUnavailable

if TYPE_CHECKING:
    from devpush.settings import Settings

REPO_PREFIX = "devpush-runner-"
LABEL_LANGUAGE = "devpush.runner.language"
LABEL_VERSION = "devpush.runner.version"
LABEL_TOOL = "devpush.runner."  # devpush.runner.node=22.23.5, devpush.runner.uv=0.13.9
NAME = re.compile(r"[a-z][a-z0-9]*-[0-9]+(?:\.[0-9]+)*")  # python-3.11, node-22
LIST_TIMEOUT = 15.0
ENGINE_TIMEOUT = 5.0
JOB_TIMEOUT = 1800  # a first build runs debootstrap: minutes
LINES_KEPT = 40
STATE_TTL = 7 * 24 * 3600
IN_PROGRESS = ("queued", "building")

OnLine = Callable[[str], Awaitable[None] | None]


@dataclass(frozen=True)
class Target:
    """An image the script can build: `python-3.11  devpush-runner-python:3.11  <about>`."""

    name: str
    image: str
    about: str


@dataclass(frozen=True)
class ImageUser:
    """A project with a running deployment on an image."""

    project_id: str
    project: str
    team_slug: str
    team: str


@dataclass
class RunnerImage:
    tag: str
    name: str | None  # the script's target, when it builds this image
    language: str
    version: str  # exact where a label has it (Node.js), else the tag's
    tools: dict[str, str]  # the other versions the labels record: uv, npm, corepack
    size: int
    created: datetime | None
    default: bool
    users: list[ImageUser] = field(default_factory=list)

    @property
    def size_mb(self) -> int:
        return round(self.size / 1_000_000)


# ---- the script -------------------------------------------------------------------------------
def script_path(settings: Settings | None = None) -> Path | None:
    """scripts/runner-images.sh of this checkout (an editable install, `devpush up` from a
    checkout), else of the install dir that holds the compose files (scripts/install.sh puts
    the CLI in a venv beside them); None in a container image."""
    roots = [Path(__file__).resolve().parents[3]]
    if settings is not None:
        roots.append(settings.compose_dir.resolve().parent)
    for root in roots:
        path = root / "scripts" / "runner-images.sh"
        if path.is_file():
            return path
    return None


def parse_list(text: str) -> list[Target]:
    """The script's `--list` output: NAME IMAGE ABOUT..., one target a line."""
    found = []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and NAME.fullmatch(parts[0]):
            found.append(Target(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return found


async def targets(settings: Settings | None = None) -> list[Target]:
    """What the script can build (empty without the script)."""
    script = script_path(settings)
    if script is None:
        return []
    proc = await asyncio.create_subprocess_exec(
        "bash",
        str(script),
        "--list",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), LIST_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise ServiceUnavailable(f"{script} --list did not answer") from None
    if proc.returncode != 0:
        raise ServiceUnavailable(f"{script} --list failed: {err.decode(errors='replace')[-300:]}")
    return parse_list(out.decode(errors="replace"))


def validate(names: Iterable[str], known: Sequence[Target]) -> list[str]:
    """`names` when each is one of the script's targets; Invalid naming the first that is not."""
    allowed = [t.name for t in known]
    checked = []
    for name in names:
        if not NAME.fullmatch(name) or name not in allowed:
            shown = name if len(name) <= 40 and name.isprintable() else repr(name[:40])
            raise Invalid(
                f"There is no runner image {shown!r}: one of {', '.join(allowed) or 'none'}."
            )
        checked.append(name)
    return checked


def host_command(name: str | None = None) -> str:
    """How an operator builds images on the host."""
    return "sudo scripts/runner-images.sh" + (f" {name}" if name else "")


def cannot_build(settings: Settings) -> str | None:
    """Why this process can't run the script (None when it can)."""
    if not settings.docker_host:
        return "this platform has no docker runtime (DEVPUSH_DOCKER_HOST is not set)"
    if script_path(settings) is None:
        return "scripts/runner-images.sh is not part of this installation"
    if os.geteuid() != 0:
        return "the platform does not run as root, as the script needs"
    if shutil.which(os.environ.get("PODMAN", "podman")) is None:
        return "there is no podman command here"
    return None


async def build(
    settings: Settings,
    names: list[str] | None,
    *,
    refresh: bool = False,
    on_line: OnLine | None = None,
) -> int:
    """Run `scripts/runner-images.sh [--refresh] NAMES...` (every image when `names` is None),
    passing each output line (stdout and stderr) to `on_line`; its exit code."""
    script = script_path(settings)
    if script is None:
        raise NotConfigured(
            f"scripts/runner-images.sh is not part of this installation: run "
            f"`{host_command(' '.join(names or []) or None)}` from a devpush checkout"
        )
    chosen = validate(names, await targets(settings)) if names is not None else []
    args = ["bash", str(script), *(["--refresh"] if refresh else []), *chosen]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a cancel ends podman and debootstrap too
    )
    assert proc.stdout is not None
    try:
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if on_line is not None:
                result = on_line(line)
                if inspect.isawaitable(result):
                    await result
        return await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)


# ---- the catalog ------------------------------------------------------------------------------
def short(tag: str) -> str:
    """A tag as the engine may spell it, without Podman's `localhost/` or Docker Hub's prefix."""
    for prefix in ("localhost/", "docker.io/library/"):
        tag = tag.removeprefix(prefix)
    return tag


def parse_images(
    images: Iterable[dict[str, Any]], *, default: str, known: Sequence[Target] = ()
) -> list[RunnerImage]:
    """Runner images from the engine's image list (GET /images/json), one per tag."""
    by_image = {short(t.image): t.name for t in known}
    rows = []
    for image in images:
        labels = image.get("Labels") or {}
        created = image.get("Created")
        for tag in image.get("RepoTags") or []:
            repo, _, version = short(tag).rpartition(":")
            if not repo.startswith(REPO_PREFIX) or not version or version == "<none>":
                continue
            language = labels.get(LABEL_LANGUAGE) or repo.removeprefix(REPO_PREFIX)
            tools = {
                key.removeprefix(LABEL_TOOL): value
                for key, value in sorted(labels.items())
                if key.startswith(LABEL_TOOL) and key not in (LABEL_LANGUAGE, LABEL_VERSION)
            }
            exact = tools.pop(language, None)
            rows.append(
                RunnerImage(
                    tag=tag,
                    name=by_image.get(short(tag)),
                    language=language,
                    version=exact or labels.get(LABEL_VERSION) or version,
                    tools=tools,
                    size=int(image.get("Size") or 0),
                    created=datetime.fromtimestamp(created, UTC)
                    if isinstance(created, int | float)
                    else None,
                    default=short(tag) == short(default),
                )
            )
    return sorted(rows, key=lambda r: r.tag)


async def catalog(
    settings: Settings, *, known: Sequence[Target] | None = None
) -> list[RunnerImage]:
    """The runner images the engine has (none without a docker runtime)."""
    if not settings.docker_host:
        return []
    import aiodocker

    try:
        async with aiodocker.Docker(url=settings.docker_host) as docker:
            images = await asyncio.wait_for(docker.images.list(), ENGINE_TIMEOUT)
    except (aiodocker.DockerError, TimeoutError, OSError) as exc:
        raise ServiceUnavailable(f"the container engine did not answer: {exc}") from None
    if known is None:
        known = await targets(settings)
    return parse_images(images, default=settings.runner_image, known=known)
