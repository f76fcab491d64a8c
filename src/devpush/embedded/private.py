"""The data directory is private: 0700, written under umask 077, and tightened on start.

What must stay open is opened explicitly, never through a shared umask:
- the fetched toolchains (DATA_DIR/toolchains), which the process runtime's sandbox user reads
  through a bind mount (runtime/toolchains.py opens each one it fetches);
- the way to pgdata for PostgreSQL's system user (`grant_traverse`): a POSIX ACL entry
  `u:<user>:x` on each directory on the way that others cannot traverse, instead of o+x for
  every user of the machine.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

from devpush.errors import ConfigError

PRIVATE_UMASK = 0o077
# Under the data directory, trees that keep their own modes (see the module docstring).
OPEN_SUBTREES = ("toolchains",)


def set_private_umask() -> None:
    """Every file and directory this process creates is its owner's alone, unless opened on
    purpose with an explicit mode."""
    os.umask(PRIVATE_UMASK)


def make_private_dir(path: Path) -> None:
    """`path` (and missing parents) as 0700; an existing `path` is made 0700 too."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(mode & 0o700)


def tighten(data: Path) -> int:
    """Remove the group and other bits from everything under `data` (a data directory made
    by an older version, or under a looser umask), except `OPEN_SUBTREES`; symlinks are not
    followed. Returns how many entries changed. One walk, one lstat per entry, once: a
    marker records it (what the platform writes afterwards is private by the umask)."""
    marker = data / "run" / ".tightened"
    if marker.exists():
        return 0
    changed = 0
    skip = {str(data / name) for name in OPEN_SUBTREES}
    pending = [str(data)]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.path in skip or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            changed += _drop_group_other(entry.path)
    changed += _drop_group_other(str(data))
    marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    marker.touch(mode=0o600)
    return changed


def _drop_group_other(path: str) -> int:
    try:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, mode & ~0o077, follow_symlinks=False)
            return 1
    except FileNotFoundError:
        pass
    return 0


def grant_traverse(user: str, path: Path) -> list[Path]:
    """Let `user` (only) reach `path`: a POSIX ACL entry `u:<user>:x` on `path` and on each
    parent that others cannot traverse. Returns the directories that got the entry.

    Directories others can already traverse are left as they are; nothing is chmod-ed, so the
    system's directories keep their modes.
    """
    needed = [p for p in [path, *path.parents] if not p.stat().st_mode & stat.S_IXOTH]
    if not needed:
        return []
    setfacl = shutil.which("setfacl")
    if setfacl is None:
        raise ConfigError(
            f"{user} must reach {path}, and `setfacl` is missing: install the acl package "
            "(apt-get install acl)"
        )
    result = subprocess.run(
        [setfacl, "-m", f"u:{user}:x", "--", *map(str, needed)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise ConfigError(
            f"cannot let {user} reach {path} (setfacl: {result.stderr.strip()}); the file "
            "system must support POSIX ACLs"
        )
    return needed
