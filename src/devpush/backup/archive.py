"""The backup archive: one tar.gz with a manifest, a `pg_dump -Fc` of the database, the keys,
Traefik's dynamic files and the push-remote repositories. Reading one validates everything
(manifest, member names and types, the schema revision) before a byte lands outside a
staging directory, so a bad archive changes nothing.

Layout::

    manifest.json            format, devpush version, alembic revision, created_at, contents
    database.dump            pg_dump --format=custom of the platform database
    secrets/encryption_keys  the Fernet keys, newest first, one a line
    secrets/secret_key       the signing secret
    traefik/dynamic/...      Traefik's dynamic files
    repos/<project id>.git/  the push remote's bare repositories
    volumes/<project>/<environment>/<name>/...  the process runtime's volumes
    docker-volumes/<volume name>/...            the docker runtime's volumes (backup/volumes.py)
"""

from __future__ import annotations

import io
import json
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from devpush import safetar
from devpush.errors import Invalid

FORMAT = 1
MANIFEST = "manifest.json"
DATABASE = "database.dump"
KEYS = "secrets/encryption_keys"
SECRET_KEY = "secrets/secret_key"
REQUIRED = (MANIFEST, DATABASE, KEYS, SECRET_KEY)
TOP_LEVEL = {MANIFEST, DATABASE, "secrets", "traefik", "repos", "volumes", "docker-volumes"}
MAX_MANIFEST = 1 << 20


@dataclass(frozen=True)
class Manifest:
    devpush_version: str
    alembic_revision: str
    created_at: str
    contents: dict[str, Any] = field(default_factory=dict)
    format: int = FORMAT

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": self.format,
                "devpush_version": self.devpush_version,
                "alembic_revision": self.alembic_revision,
                "created_at": self.created_at,
                "contents": self.contents,
            },
            indent=2,
        )

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Invalid(f"the archive's {MANIFEST} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise Invalid(f"the archive's {MANIFEST} is not a JSON object")
        if data.get("format") != FORMAT:
            raise Invalid(
                f"the archive has backup format {data.get('format')!r}; this devpush reads "
                f"format {FORMAT}: restore it with the devpush version that made it"
            )
        missing = [
            k
            for k in ("devpush_version", "alembic_revision", "created_at")
            if not isinstance(data.get(k), str) or not data.get(k)
        ]
        if missing:
            raise Invalid(f"the archive's {MANIFEST} lacks {', '.join(missing)}")
        try:
            datetime.fromisoformat(data["created_at"])
        except ValueError:
            raise Invalid(f"the archive's {MANIFEST} has a bad created_at") from None
        contents = data.get("contents") or {}
        if not isinstance(contents, dict):
            raise Invalid(f"the archive's {MANIFEST} has bad contents")
        return cls(
            devpush_version=data["devpush_version"],
            alembic_revision=data["alembic_revision"],
            created_at=data["created_at"],
            contents=contents,
        )


def check_member(member: tarfile.TarInfo) -> None:
    """Refuse anything but plain files and directories at a relative, known place."""
    name = member.name
    path = PurePosixPath(name)
    if not name or name.startswith("/") or path.is_absolute() or "\\" in name:
        raise Invalid(f"the archive holds an absolute member {name!r}; refusing it")
    if any(part == ".." for part in path.parts):
        raise Invalid(f"the archive holds a member that climbs out ({name!r}); refusing it")
    if not (member.isfile() or member.isdir()):
        raise Invalid(f"the archive holds {name!r}, which is not a plain file or directory")
    top = path.parts[0] if path.parts else ""
    if top not in TOP_LEVEL or (top == "secrets" and name not in ("secrets", KEYS, SECRET_KEY)):
        raise Invalid(f"the archive holds an unexpected member {name!r}")


def _open(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise Invalid(f"no backup archive at {path}")
    try:
        return tarfile.open(path, "r:gz")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise Invalid(
            f"{path} is not a devpush backup (a corrupt or non-gzip tar: {exc})"
        ) from None


def read(path: Path, staging: Path) -> Manifest:
    """Validate the archive at `path` and unpack it into `staging` (an empty directory).
    Raises Invalid, with what is wrong, for anything but a complete, well-formed backup."""
    try:
        with _open(path) as tar:
            members = tar.getmembers()
            names = set()
            for member in members:
                check_member(member)
                names.add(member.name.rstrip("/"))
            missing = [n for n in REQUIRED if n not in names]
            if missing:
                raise Invalid(f"{path} is not a complete devpush backup: it lacks {missing}")
            manifest_member = tar.getmember(MANIFEST)
            if manifest_member.size > MAX_MANIFEST:
                raise Invalid(f"the archive's {MANIFEST} is too large")
            handle = tar.extractfile(manifest_member)
            assert handle is not None
            manifest = Manifest.parse(handle.read())
            safetar.extract_all(tar, staging)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise Invalid(f"{path} is not a devpush backup (a corrupt archive: {exc})") from None
    return manifest


def write(
    path: Path,
    *,
    manifest: Manifest,
    database_dump: Path,
    keys: list[str],
    secret_key: str,
    traefik_dir: Path,
    repos_dir: Path,
    volumes: dict[str, Path] | None = None,
    keep: Callable[[str], bool] = lambda name: True,
) -> None:
    """Write the archive to `path` (created 0600; the caller renames it into place).
    `volumes` maps an archive directory to the directory whose files go there, less what
    `keep` refuses (by member name)."""
    fd = _create_private(path)
    with open(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        _add_bytes(tar, MANIFEST, manifest.to_json().encode())
        tar.add(database_dump, arcname=DATABASE)
        _add_bytes(tar, KEYS, ("\n".join(keys) + "\n").encode())
        _add_bytes(tar, SECRET_KEY, (secret_key + "\n").encode())
        for source, arcname in ((traefik_dir, "traefik/dynamic"), (repos_dir, "repos")):
            if source.is_dir():
                tar.add(source, arcname=arcname, filter=_plain_only)
        for arcname, source in (volumes or {}).items():
            if source.is_dir():
                tar.add(
                    source,
                    arcname=arcname,
                    filter=lambda m: _plain_only(m) if keep(m.name) else None,
                )


def _create_private(path: Path) -> int:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)


def _plain_only(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Keep files and directories only (a stray symlink or socket never enters a backup)."""
    if not (member.isfile() or member.isdir()):
        return None
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    info.mtime = int(datetime.now().timestamp())
    tar.addfile(info, io.BytesIO(data))
