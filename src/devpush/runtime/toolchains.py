"""The interpreters the process runtime offers to builds, and the ones it can fetch.

Offered, in this order of preference for a given version:
- Python installations the admin named (`DEVPUSH_PYTHON_INTERPRETERS`: prefixes such as
  `/opt/python/3.12` or a pyenv version), bound read-only into the sandbox at the same path;
- the host's `/usr/bin` and `/usr/local/bin` (`python3.X`, `node`), which the sandbox sees;
- versions fetched earlier into the toolchains directory (read-only at /devpush/toolchains).

Fetched on demand (`provide`): a Node from the npm registry's `node-linux-<arch>` package, and,
when `DEVPUSH_PYTHON_DOWNLOADS` is on, a CPython build installed by `uv python install` (which
honours `UV_PYTHON_INSTALL_MIRROR` and `UV_PYTHON_DOWNLOADS_JSON_URL` for servers that can't
reach the default download host).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from devpush.runtime.base import Toolchain

INSIDE = "/devpush/toolchains"  # where the toolchains directory appears in the sandbox
HOST_DIRS = (Path("/usr/bin"), Path("/usr/local/bin"))
_PYTHON_NAME = re.compile(r"python3\.\d+")
_NODE_ARCH = {"x86_64": "x64", "aarch64": "arm64"}
_NODE_SPEC = re.compile(r"[0-9x*^~<>=. |-]{1,64}")
# What `uv python install` accepts from a request: "3.12", "3.12.4", ">=3.11,<3.13".
_PYTHON_SPEC = re.compile(r"[0-9.*<>=!~, ]{1,64}")
_FETCH_TIMEOUT = 600


class Toolchains:
    def __init__(
        self,
        directory: Path | None,
        *,
        python_prefixes: Sequence[Path] = (),
        python_downloads: bool = False,
        uv: Path | None = None,
    ) -> None:
        self._dir = Path(directory).absolute() if directory else None
        self._prefixes = [Path(p).absolute() for p in python_prefixes]
        self._python_downloads = python_downloads
        self._uv = uv

    def offered(self) -> list[Toolchain]:
        """Every interpreter a build may use, by (language, version) the first one found."""
        found: dict[tuple[str, str], Toolchain] = {}
        candidates = [p for prefix in self._prefixes for p in _pythons(prefix / "bin")]
        for directory in HOST_DIRS:
            candidates += [*_pythons(directory), directory / "node"]
        for path in candidates:
            version = version_of(str(path))
            if version is not None:
                language = "node" if path.name == "node" else "python"
                found.setdefault((language, version), Toolchain(language, version, str(path)))
        for toolchain in self._fetched():
            found.setdefault((toolchain.language, toolchain.version), toolchain)
        return list(found.values())

    def sandbox_args(self) -> list[str]:
        """bubblewrap arguments that bind the toolchains read-only into an instance: each admin
        prefix at its own path (its parents made 0755, else bwrap makes them 0700), and the
        fetched ones at /devpush/toolchains."""
        argv: list[str] = []
        for prefix in self._prefixes:
            if prefix.is_dir():
                for parent in reversed(prefix.parents[:-1]):
                    argv += ["--perms", "0755", "--dir", str(parent)]
                argv += ["--ro-bind", str(prefix), str(prefix)]
        if self._dir is not None and self._dir.is_dir():
            argv += ["--ro-bind", str(self._dir), INSIDE]
        return argv

    def provide(self, language: str, spec: str) -> Toolchain | None:
        """Fetches a toolchain that satisfies `spec`; None when this server can't."""
        spec = spec.strip().removeprefix("v")
        if self._dir is None:
            return None
        if language == "node":
            arch = _NODE_ARCH.get(os.uname().machine)
            npm = shutil.which("npm")
            if not arch or not npm or not _NODE_SPEC.fullmatch(spec):
                return None  # "lts/*" and the like: npm can't resolve them
            return self._fetch_node(npm, arch, spec)
        if language == "python" and self._python_downloads and self._uv is not None:
            if not _PYTHON_SPEC.fullmatch(spec):
                return None
            return self._fetch_python(spec)
        return None

    # -- fetched -------------------------------------------------------------------------------

    def _fetched(self) -> list[Toolchain]:
        if self._dir is None:
            return []
        found = []
        for node in sorted(self._dir.glob("node/*/bin/node")):
            version = node.parents[1].name
            found.append(Toolchain("node", version, path=f"{INSIDE}/node/{version}/bin/node"))
        for python in sorted(self._dir.glob("python/cpython-*/bin/python3.*")):
            match = re.match(r"cpython-(\d+\.\d+\.\d+)-", python.parents[1].name)
            if match and _PYTHON_NAME.fullmatch(python.name):
                inside = f"{INSIDE}/{python.relative_to(self._dir)}"
                found.append(Toolchain("python", match.group(1), path=inside))
        return found

    def _home(self, name: str) -> Path:
        assert self._dir is not None
        home = self._dir / name
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o755)  # the sandbox's user reads it through the bind
        os.chmod(home, 0o755)
        return home

    def _fetch_node(self, npm: str, arch: str, spec: str) -> Toolchain | None:
        home = self._home("node")
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=home))
        try:
            packed = subprocess.run(
                [npm, "pack", f"node-linux-{arch}@{spec}", "--pack-destination", str(work)],
                capture_output=True,
                text=True,
                timeout=_FETCH_TIMEOUT,
                stdin=subprocess.DEVNULL,
                cwd=work,
            )
            match = re.search(r"node-linux-\w+-(\d+\.\d+\.\d+)\.tgz", packed.stdout)
            if packed.returncode != 0 or match is None:
                return None
            version = match.group(1)
            target = home / version
            if not target.is_dir():
                untar = ["tar", "-xzf", str(work / match.group(0)), "-C", str(work)]
                subprocess.run(untar + ["--no-same-owner"], check=True, timeout=_FETCH_TIMEOUT)
                # the sandbox's user reads it all; tar makes the directories an npm tarball
                # does not list under the worker's umask (077)
                _readable(work / "package")
                with contextlib.suppress(OSError):  # another worker fetched it meanwhile
                    os.rename(work / "package", target)
            return Toolchain("node", version, path=f"{INSIDE}/node/{version}/bin/node")
        except (OSError, subprocess.SubprocessError):
            return None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _fetch_python(self, spec: str) -> Toolchain | None:
        assert self._uv is not None and self._dir is not None
        home = self._home("python")
        env = {k: v for k, v in os.environ.items() if k != "UV_PYTHON_DOWNLOADS"}
        argv = [str(self._uv), "python", "install", spec, "--install-dir", str(home), "--no-bin"]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=_FETCH_TIMEOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        match = re.search(r"\+ (cpython-(\d+\.\d+\.\d+)-\S+)", done.stderr + done.stdout)
        if done.returncode != 0 or match is None:
            return None
        install = home / match.group(1)
        _readable(install)
        python = next(iter(_pythons(install / "bin")), None)
        if python is None:
            return None
        return Toolchain("python", match.group(2), path=f"{INSIDE}/{python.relative_to(self._dir)}")


def _readable(tree: Path) -> None:
    """Opens an installed tree to the sandbox's user (the worker's umask may be 077)."""
    for path in [tree, *tree.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        os.chmod(path, mode | 0o555 if path.is_dir() or mode & 0o100 else mode | 0o444)


def _pythons(directory: Path) -> list[Path]:
    return [p for p in sorted(directory.glob("python3.*")) if _PYTHON_NAME.fullmatch(p.name)]


_VERSIONS: dict[str, str | None] = {}


def version_of(path: str) -> str | None:
    """The interpreter's own version ("3.11.2", "20.20.2"), asked once per path."""
    if path not in _VERSIONS:
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, env={}
            )
            match = re.search(r"(\d+\.\d+\.\d+)", out.stdout + out.stderr)
            _VERSIONS[path] = match.group(1) if match and out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            _VERSIONS[path] = None
    return _VERSIONS[path]
