"""Backport of `TarFile.extractall(..., filter="data")` for Python 3.11 < 3.11.4.

Debian bookworm ships Python 3.11.2, whose tarfile predates extraction filters (PEP 706);
devpush extracts git archives and backups with `filter="data"`. The devpush image loads this
module at interpreter start (a .pth file) and, only when the running Python lacks filters,
wraps extractall with the checks of the "data" filter: no absolute or escaping names, no
links leading outside the destination, no devices or fifos, no setuid/setgid/sticky bits and
no group/other write permission. Newer Pythons are left untouched.
"""

from __future__ import annotations

import os
import tarfile

if not hasattr(tarfile, "data_filter"):
    _original = tarfile.TarFile.extractall

    def _inside(root: str, path: str) -> bool:
        return os.path.commonpath([root, os.path.realpath(path)]) == root

    def _check(member: tarfile.TarInfo, root: str) -> None:
        name = member.name
        if name.startswith(("/", os.sep)) or os.path.isabs(name):
            raise tarfile.ExtractError(f"{name!r} has an absolute path")
        target = os.path.join(root, name)
        if not _inside(root, target):
            raise tarfile.ExtractError(f"{name!r} would be extracted outside the destination")
        if member.ischr() or member.isblk() or member.isfifo():
            raise tarfile.ExtractError(f"{name!r} is a special file")
        if member.issym():
            link = member.linkname
            if os.path.isabs(link):
                raise tarfile.ExtractError(f"{name!r} links to the absolute path {link!r}")
            if not _inside(root, os.path.join(os.path.dirname(target), link)):
                raise tarfile.ExtractError(f"{name!r} links outside the destination")
        elif member.islnk() and not _inside(root, os.path.join(root, member.linkname)):
            raise tarfile.ExtractError(f"{name!r} links outside the destination")
        if member.isreg() or member.isdir():
            mode = member.mode & 0o755  # no setuid/setgid/sticky, no group/other write
            member.mode = mode | (0o600 if member.isreg() else 0o700)

    def extractall(self, path=".", members=None, *, numeric_owner=False, filter=None):  # noqa: A002
        if filter is None or filter in ("fully_trusted", "tar"):
            return _original(self, path, members, numeric_owner=numeric_owner)
        if filter != "data":
            raise ValueError(f"unsupported extraction filter {filter!r}")
        root = os.path.realpath(os.fspath(path))
        chosen = list(members) if members is not None else self.getmembers()
        for member in chosen:
            _check(member, root)
        return _original(self, path, chosen, numeric_owner=numeric_owner)

    tarfile.TarFile.extractall = extractall  # type: ignore[method-assign]
