"""Unpacking untrusted archives (issue #18, item 7): Python before 3.11.4 (Debian 12 has
3.11.2) lacks tarfile's "data" filter; devpush.safetar then makes the same checks itself.
Each hostile archive is tried with the real filter and with the fallback."""

from __future__ import annotations

import io
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from devpush import safetar

Member = tuple[tarfile.TarInfo, bytes]


@pytest.fixture(params=["filter", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "fallback":
        monkeypatch.delattr(tarfile, "data_filter")
    return str(request.param)


def archive(*members: Member) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer)


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info, data


def unpack(tmp_path: Path, *members: Member) -> Path:
    dest = tmp_path / "dest"
    dest.mkdir()
    with archive(*members) as tar:
        safetar.extract_all(tar, dest)
    return dest


def test_the_fallback_is_what_old_pythons_get(mode: str) -> None:
    assert hasattr(tarfile, "data_filter") == (mode == "filter")


def test_a_plain_archive_unpacks_with_modes_masked(tmp_path: Path, mode: str) -> None:
    script, _ = tool = entry("bin/tool", data=b"#!/bin/sh\n")
    script.mode = 0o4777  # setuid, world-writable
    plain, _ = note = entry("bin/note", data=b"hello")
    plain.mode = 0o000
    dest = unpack(
        tmp_path,
        entry("bin", tarfile.DIRTYPE),
        tool,
        note,
        entry("bin/link", tarfile.SYMTYPE, "tool"),
        entry("bin/shared", data=b"both"),
        entry("bin/hard", tarfile.LNKTYPE, "bin/shared"),
    )
    assert stat.S_IMODE((dest / "bin/tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "bin/note").stat().st_mode) == 0o600
    assert (dest / "bin/link").read_bytes() == b"#!/bin/sh\n"
    assert (dest / "bin/hard").read_bytes() == b"both"
    assert (dest / "bin/hard").stat().st_ino == (dest / "bin/shared").stat().st_ino


def test_an_absolute_path_lands_inside(tmp_path: Path, mode: str) -> None:
    dest = unpack(tmp_path, entry(f"{tmp_path}/abs.txt", data=b"x"))
    assert not (tmp_path / "abs.txt").exists()
    assert (dest / str(tmp_path).lstrip("/") / "abs.txt").read_bytes() == b"x"


HOSTILE: dict[str, Callable[[], list[Member]]] = {
    "dot-dot": lambda: [entry("../escaped", data=b"x")],
    "nested dot-dot": lambda: [entry("a", tarfile.DIRTYPE), entry("a/../../escaped")],
    "absolute symlink": lambda: [entry("link", tarfile.SYMTYPE, "/etc/passwd")],
    "symlink escape": lambda: [entry("link", tarfile.SYMTYPE, "../escaped")],
    "chained symlinks": lambda: [
        entry("here", tarfile.SYMTYPE, "."),
        entry("up", tarfile.SYMTYPE, "here/.."),
    ],
    "write through a symlink": lambda: [
        entry("here", tarfile.SYMTYPE, "."),
        entry("here/../escaped", data=b"x"),
    ],
    "hardlink escape": lambda: [entry("hard", tarfile.LNKTYPE, "../outside")],
    "absolute hardlink": lambda: [entry("hard", tarfile.LNKTYPE, "/etc/passwd")],
    "character device": lambda: [entry("null", tarfile.CHRTYPE)],
    "block device": lambda: [entry("disk", tarfile.BLKTYPE)],
    "fifo": lambda: [entry("pipe", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused(tmp_path: Path, mode: str, case: str) -> None:
    (tmp_path / "outside").write_text("keep")
    with pytest.raises(tarfile.TarError):
        unpack(tmp_path, *HOSTILE[case]())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "outside"]
    assert (tmp_path / "outside").read_text() == "keep"
    for found in (tmp_path / "dest").rglob("*"):
        assert found.is_symlink() or not (found.is_char_device() or found.is_block_device())
