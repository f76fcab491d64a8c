"""The `git` source: any https://, ssh:// or file:// URL, fetched into a per-project mirror on
the worker's side and exported as a plain tree (no .git, no credentials) for the runtime.

Every git call is an argv list with a timeout; refs are validated and passed after `--`.
Credentials reach git through the environment only: an HTTPS token through GIT_ASKPASS (a fixed
script that prints an env var), an SSH key through GIT_SSH_COMMAND naming a 0600 key file in a
private temp dir that is removed after the call. Never argv, never logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import re
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from devpush import safetar
from devpush.errors import Invalid, RuntimeFailure

SHA = re.compile(r"^[0-9a-f]{7,64}$")
GIT_TIMEOUT = 300.0
FETCHABLE = ("refs/heads/", "refs/pull/")
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
ASKPASS = """#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\\n' "$DEVPUSH_GIT_USERNAME" ;;
  *) printf '%s\\n' "$DEVPUSH_GIT_PASSWORD" ;;
esac
"""


@dataclass(frozen=True)
class Credentials:
    """How to authenticate a fetch: a username + token over HTTPS, or an SSH private key
    (with the host keys to trust; without them the first key seen is accepted)."""

    username: str = "git"
    token: str = field(default="", repr=False)
    ssh_key: str = field(default="", repr=False)
    known_hosts: str = ""


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


def redact(message: str, secrets: tuple[str, ...] = ()) -> str:
    """Drop userinfo from URLs and any known secret from a message bound for logs/errors."""
    message = _URL_USERINFO.sub("***@", message)
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


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
    command = _subcommand(args)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeFailure(f"git {command} took longer than {timeout:.0f}s") from None
    if proc.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        fatal = [line.removeprefix("fatal: ") for line in lines if line.startswith("fatal:")]
        reason = fatal[0] if fatal else (lines[-1] if lines else "no output")
        secrets = tuple(v for k, v in (env or {}).items() if k == "DEVPUSH_GIT_PASSWORD")
        raise RuntimeFailure(f"git {command} failed: {redact(reason, secrets)}")
    return out


def _subcommand(args: tuple[str, ...]) -> str:
    """The git subcommand in argv (skipping options like `--git-dir X`)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--git-dir", "-C", "-c"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return "command"


@contextlib.asynccontextmanager
async def auth_env(credentials: Credentials | None) -> AsyncIterator[dict[str, str]]:
    """The env that lets git authenticate with `credentials`; its files live in a private
    temp dir (0700, files 0600) that is removed when the block ends."""
    if credentials is None or not (credentials.token or credentials.ssh_key):
        yield {}
        return
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="devpush-git-"))
    try:
        if credentials.ssh_key:
            yield _ssh_env(tmp, credentials)
        else:
            askpass = tmp / "askpass"
            _write_private(askpass, ASKPASS, mode=0o700)
            yield {
                "GIT_ASKPASS": str(askpass),
                "SSH_ASKPASS": str(askpass),
                "DEVPUSH_GIT_USERNAME": credentials.username or "git",
                "DEVPUSH_GIT_PASSWORD": credentials.token,
                # Credentials are for this host: never follow a redirect elsewhere with them.
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.followRedirects",
                "GIT_CONFIG_VALUE_0": "false",
            }
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def _write_private(path: Path, content: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


def _ssh_env(tmp: Path, credentials: Credentials) -> dict[str, str]:
    key, known = tmp / "id", tmp / "known_hosts"
    _write_private(key, credentials.ssh_key.strip() + "\n")
    _write_private(known, credentials.known_hosts.strip() + "\n" if credentials.known_hosts else "")
    # GIT_SSH_COMMAND goes through a shell: it holds only our own quoted temp paths.
    command = [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "StrictHostKeyChecking=" + ("yes" if credentials.known_hosts else "accept-new"),
    ]
    return {"GIT_SSH_COMMAND": " ".join(shlex.quote(part) for part in command)}


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
    """Create the bare mirror, atomically: `git init` writes HEAD before the rest, so it
    builds in a temp dir that is renamed into place; a concurrent creator's rename wins."""
    if (mirror / "HEAD").exists():
        return
    mirror.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{mirror.name}.", dir=mirror.parent))
    try:
        await run_git("init", "--bare", "--quiet", str(building))
        with contextlib.suppress(OSError):  # another job created it meanwhile
            building.rename(mirror)
    finally:
        shutil.rmtree(building, ignore_errors=True)


@contextlib.asynccontextmanager
async def mirror_lock(mirror: Path) -> AsyncIterator[None]:
    """One writer per mirror across jobs and worker processes: concurrent fetches of the same
    ref fail with "cannot lock ref"."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(mirror.parent / f"{mirror.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


async def check_ref(ref: str) -> None:
    if not ref.startswith(FETCHABLE):
        raise Invalid(f"{ref[:80]!r} is not a branch or pull request ref")
    proc = await asyncio.create_subprocess_exec(
        "git",
        "check-ref-format",
        ref,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=_env(),
    )
    if await proc.wait() != 0:
        raise Invalid(f"{ref[:80]!r} is not a valid ref")


async def fetch(
    *,
    mirror: Path,
    url: str,
    branch: str,
    commit_sha: str | None = None,
    env: dict[str, str] | None = None,
    ref: str | None = None,
    credentials: Credentials | None = None,
) -> Commit:
    """Fetch `branch` (or another `ref`, e.g. refs/pull/7/head) and `commit_sha`, when given,
    from `url` into the mirror, authenticating with `credentials` when given."""
    await check_branch(branch)
    ref = ref or f"refs/heads/{branch}"
    await check_ref(ref)
    if commit_sha is not None and not SHA.match(commit_sha):
        raise Invalid("commit_sha must be 7 to 64 hex characters")
    local = "refs/devpush/" + ref.removeprefix("refs/")
    async with mirror_lock(mirror), auth_env(credentials) as auth:
        await ensure_mirror(mirror)
        await run_git(
            "--git-dir",
            str(mirror),
            "fetch",
            "--quiet",
            "--force",
            "--no-tags",
            "--",
            url,
            f"+{ref}:{local}",
            env={**(env or {}), **auth},
        )
    target = commit_sha or local
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
            safetar.extract_all(tar, dest)

    await asyncio.to_thread(extract)
    root = (dest / subdir).resolve() if subdir else dest
    if not root.is_relative_to(dest.resolve()) or not root.is_dir():
        raise Invalid(f"root_directory {subdir!r} does not exist in commit {sha[:7]}")
    return root


async def changed_files(*, mirror: Path, base: str, head: str) -> list[str] | None:
    """Paths changed between two commits; None when `base` is not in the mirror any more."""
    try:
        out = await run_git("--git-dir", str(mirror), "diff", "--name-only", "-z", base, head)
    except RuntimeFailure:
        return None
    return [p for p in out.decode(errors="replace").split("\x00") if p]
