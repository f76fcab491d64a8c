"""The `git` source: any https://, ssh:// or file:// URL, fetched into a per-project mirror on
the worker's side and exported as a plain tree (no .git, no credentials) for the runtime.

Every git call is an argv list with a timeout; refs are validated and passed after `--`.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from devpush.errors import Invalid, RuntimeFailure

SHA = re.compile(r"^[0-9a-f]{7,64}$")
GIT_TIMEOUT = 300.0


@dataclass(frozen=True)
class Commit:
    sha: str
    message: str
    author: str


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "LANG": "C.UTF-8",
    }
    env.update(extra or {})
    return env


async def run_git(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = GIT_TIMEOUT,
) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "protocol.file.allow=always",
        *args,
        cwd=cwd,
        env=_env(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeFailure(f"git {args[0]} took longer than {timeout:.0f}s") from None
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise RuntimeFailure(f"git {args[0]} failed: {message[-1] if message else 'no output'}")
    return out


async def check_branch(branch: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "git",
        "check-ref-format",
        "--branch",
        branch,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(),
    )
    if await proc.wait() != 0:
        raise Invalid(f"{branch[:80]!r} is not a valid branch name")


async def ensure_mirror(mirror: Path) -> None:
    if not (mirror / "HEAD").exists():
        mirror.parent.mkdir(parents=True, exist_ok=True)
        await run_git("init", "--bare", "--quiet", str(mirror))


async def fetch(
    *,
    mirror: Path,
    url: str,
    branch: str,
    commit_sha: str | None = None,
    env: dict[str, str] | None = None,
) -> Commit:
    """Fetch `branch` (and `commit_sha`, when given) from `url` into the mirror."""
    await check_branch(branch)
    if commit_sha is not None and not SHA.match(commit_sha):
        raise Invalid("commit_sha must be 7 to 64 hex characters")
    await ensure_mirror(mirror)
    ref = f"refs/devpush/{branch}"
    await run_git(
        "--git-dir",
        str(mirror),
        "fetch",
        "--quiet",
        "--force",
        "--no-tags",
        "--",
        url,
        f"+refs/heads/{branch}:{ref}",
        env=env,
    )
    target = commit_sha or ref
    try:
        sha = (
            (
                await run_git(
                    "--git-dir",
                    str(mirror),
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    f"{target}^{{commit}}",
                )
            )
            .decode()
            .strip()
        )
    except RuntimeFailure:
        raise Invalid(f"commit {target} is not on branch {branch}") from None
    return await commit_info(mirror=mirror, sha=sha)


async def commit_info(*, mirror: Path, sha: str) -> Commit:
    out = await run_git("--git-dir", str(mirror), "log", "-1", "--format=%H%x00%an%x00%B", sha)
    full, author, message = out.decode(errors="replace").split("\x00", 2)
    return Commit(sha=full.strip(), author=author[:255], message=message.strip()[:4000])


async def export(*, mirror: Path, sha: str, dest: Path, subdir: str = "") -> Path:
    """Write the tree of `sha` (optionally one subdirectory) into `dest`; returns the root."""
    data = await run_git("--git-dir", str(mirror), "archive", "--format=tar", sha)
    dest.mkdir(parents=True, exist_ok=True)

    def extract() -> None:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")

    await asyncio.to_thread(extract)
    root = (dest / subdir).resolve() if subdir else dest
    if not root.is_relative_to(dest.resolve()) or not root.is_dir():
        raise Invalid(f"root_directory {subdir!r} does not exist in commit {sha[:7]}")
    return root
