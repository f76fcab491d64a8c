"""Unpacking an untrusted tar archive (a commit's `git archive`, a backup) safely on every
Python devpush accepts. tarfile's "data" filter does it from Python 3.11.4; Debian 12 ships
3.11.2, which lacks it, so there the same checks are made here, member by member."""

from __future__ import annotations

import copy
import os
import tarfile
from pathlib import Path


class UnsafeMember(tarfile.TarError):
    """A member the "data" filter refuses: an absolute path or link, a path or link leading
    outside the destination, or a device, pipe or other special file."""


def extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract every member of `tar` into `dest` as the "data" filter does."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)
    for member in tar:
        checked = data_member(member, root)
        # the filter leaves a directory's mode alone (mode None), which 3.11.2 can't express
        tar.extract(checked, root, set_attrs=not checked.isdir())


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([os.path.realpath(path), root]) == root


def data_member(member: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
    """What tarfile.data_filter makes of `member` for extraction into `root` (a real path),
    checked against what is already on disk; raises UnsafeMember where it would refuse."""
    name = member.name.lstrip("/" + os.sep)
    if os.path.isabs(name):
        raise UnsafeMember(f"{member.name!r}: an absolute path")
    if not _inside(os.path.join(root, name), root):
        raise UnsafeMember(f"{member.name!r}: outside the destination")
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise UnsafeMember(f"{member.name!r}: a link to an absolute path")
        base = os.path.dirname(name) if member.issym() else ""
        if not _inside(os.path.join(root, base, member.linkname), root):
            raise UnsafeMember(f"{member.name!r}: a link outside the destination")
    mode = member.mode & 0o755
    if member.isreg() or member.islnk():
        if not mode & 0o100:
            mode &= ~0o111
        mode |= 0o600
    elif not (member.isdir() or member.issym()):
        raise UnsafeMember(f"{member.name!r}: a device, pipe or other special file")
    safe = copy.copy(member)
    safe.name, safe.mode = name, mode
    # owned by whoever extracts (tarfile only changes owners when run as root)
    safe.uid, safe.gid, safe.uname, safe.gname = os.geteuid(), os.getegid(), "", ""
    return safe
