"""The backup archive: what `archive.write` produces reads back, and anything else (corrupt,
incomplete, traversal, links, a bad manifest) is refused before a byte is unpacked."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from pathlib import Path

import pytest

from devpush.backup import archive
from devpush.backup.install import check_keys
from devpush.backup.service import known_revision
from devpush.errors import ConfigError, Invalid
from devpush.settings import Settings

MANIFEST = archive.Manifest(
    devpush_version="0.1.0",
    alembic_revision="0003",
    created_at="2026-11-30T17:00:00+00:00",
    contents={"projects": 2},
)


def make_backup(tmp_path: Path) -> Path:
    dump = tmp_path / "db.dump"
    dump.write_bytes(b"PGDMP fake dump")
    traefik = tmp_path / "dynamic"
    traefik.mkdir()
    (traefik / "project-a.yml").write_text("http: {}\n")
    repos = tmp_path / "repos"
    (repos / "p1.git" / "hooks").mkdir(parents=True)
    hook = repos / "p1.git" / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    path = tmp_path / "backup.tar.gz"
    archive.write(
        path,
        manifest=MANIFEST,
        database_dump=dump,
        keys=["k1", "k2"],
        secret_key="s3cret",
        traefik_dir=traefik,
        repos_dir=repos,
    )
    return path


def custom_archive(path: Path, members: dict[str, bytes], extra: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def complete_members() -> dict[str, bytes]:
    return {
        archive.MANIFEST: MANIFEST.to_json().encode(),
        archive.DATABASE: b"dump",
        archive.KEYS: b"k1\n",
        archive.SECRET_KEY: b"s\n",
    }


def test_a_written_archive_reads_back_whole_and_private(tmp_path: Path) -> None:
    path = make_backup(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    staging = tmp_path / "staging"
    manifest = archive.read(path, staging)
    assert manifest == MANIFEST
    assert (staging / archive.DATABASE).read_bytes() == b"PGDMP fake dump"
    assert (staging / archive.KEYS).read_text().split() == ["k1", "k2"]
    assert (staging / archive.SECRET_KEY).read_text().strip() == "s3cret"
    assert (staging / "traefik" / "dynamic" / "project-a.yml").read_text() == "http: {}\n"
    hook = staging / "repos" / "p1.git" / "hooks" / "post-receive"
    assert hook.stat().st_mode & stat.S_IXUSR


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil", "climbs out"),
        ("repos/../../evil", "climbs out"),
        ("/etc/evil", "absolute"),
        ("other/file", "unexpected member"),
        ("secrets/db_password", "unexpected member"),
    ],
)
def test_bad_member_names_are_refused_and_nothing_is_unpacked(
    tmp_path: Path, name: str, message: str
) -> None:
    members = {**complete_members(), name: b"x"}
    path = custom_archive(tmp_path / "bad.tar.gz", members, [])
    staging = tmp_path / "staging"
    with pytest.raises(Invalid, match=message):
        archive.read(path, staging)
    assert not staging.exists()
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])
def test_links_and_special_files_are_refused(tmp_path: Path, kind: bytes) -> None:
    link = tarfile.TarInfo("repos/p1.git/link")
    link.type = kind
    link.linkname = "/etc/passwd"
    path = custom_archive(tmp_path / "link.tar.gz", complete_members(), [link])
    with pytest.raises(Invalid, match="not a plain file or directory"):
        archive.read(path, tmp_path / "staging")


@pytest.mark.parametrize("missing", archive.REQUIRED)
def test_an_incomplete_archive_is_refused(tmp_path: Path, missing: str) -> None:
    members = complete_members()
    del members[missing]
    path = custom_archive(tmp_path / "partial.tar.gz", members, [])
    with pytest.raises(Invalid, match="not a complete devpush backup"):
        archive.read(path, tmp_path / "staging")


def test_corrupt_truncated_and_missing_archives_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not a gzip file at all" * 10)
    with pytest.raises(Invalid, match="not a devpush backup"):
        archive.read(garbage, tmp_path / "s1")
    whole = make_backup(tmp_path).read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(Invalid, match="not a devpush backup"):
        archive.read(truncated, tmp_path / "s2")
    with pytest.raises(Invalid, match="no backup archive at"):
        archive.read(tmp_path / "nowhere.tar.gz", tmp_path / "s3")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps({"format": 99}).encode(), "backup format 99"),
        (json.dumps({"format": 1, "created_at": "x"}).encode(), "lacks devpush_version"),
        (
            json.dumps(
                {
                    "format": 1,
                    "devpush_version": "1",
                    "alembic_revision": "0003",
                    "created_at": "yesterday",
                }
            ).encode(),
            "bad created_at",
        ),
    ],
)
def test_a_bad_manifest_is_refused(tmp_path: Path, manifest: bytes, message: str) -> None:
    members = {**complete_members(), archive.MANIFEST: manifest}
    path = custom_archive(tmp_path / "manifest.tar.gz", members, [])
    with pytest.raises(Invalid, match=message):
        archive.read(path, tmp_path / "staging")


def test_schema_revisions_this_code_knows() -> None:
    assert known_revision("0001")
    assert known_revision("0003")
    assert not known_revision("9999")


def test_environment_keys_must_open_the_archive_keys(tmp_path: Path) -> None:
    backup = tmp_path / "b.tar.gz"
    # file-held keys (no DEVPUSH_ENCRYPTION_KEYS): the archive's are installed later
    check_keys(Settings(data_dir=tmp_path, encryption_keys=None), ["k1"], backup)
    check_keys(Settings(data_dir=tmp_path, encryption_keys="k0,k1"), ["k1"], backup)
    with pytest.raises(ConfigError, match="Put the backup's keys in .env"):
        check_keys(Settings(data_dir=tmp_path, encryption_keys="k0"), ["k1"], backup)


def test_volumes_keep_their_files_not_their_filesystem_images(tmp_path: Path) -> None:
    from devpush.backup import volumes

    root = tmp_path / "volumes"
    data = root / "p1" / "e1" / "data"
    (data / "uploads").mkdir(parents=True)
    (data / "notes.db").write_bytes(b"SQLite format 3\x00")
    (data / "uploads" / "a.png").write_bytes(b"\x89PNG")
    (root / "p1" / "e1" / "sized.img").write_bytes(b"\x00" * 1024)
    (root / "p1" / "e1" / "sized" / "lost+found").mkdir(parents=True)
    docker = tmp_path / "mountpoint"
    docker.mkdir()
    (docker / "blob").write_bytes(b"x")
    dump = tmp_path / "db.dump"
    dump.write_bytes(b"PGDMP")
    path = tmp_path / "backup.tar.gz"
    archive.write(
        path,
        manifest=MANIFEST,
        database_dump=dump,
        keys=["k1"],
        secret_key="s",
        traefik_dir=tmp_path / "none",
        repos_dir=tmp_path / "none",
        volumes={"volumes": root, "docker-volumes/devpush-vol-p1-e1-data": docker},
        keep=volumes.keep,
    )
    staging = tmp_path / "staging"
    archive.read(path, staging)
    assert (staging / "volumes/p1/e1/data/notes.db").read_bytes() == b"SQLite format 3\x00"
    assert (staging / "volumes/p1/e1/data/uploads/a.png").is_file()
    assert (staging / "docker-volumes/devpush-vol-p1-e1-data/blob").read_bytes() == b"x"
    assert not (staging / "volumes/p1/e1/sized.img").exists()
    assert not (staging / "volumes/p1/e1/sized/lost+found").exists()
