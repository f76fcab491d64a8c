"""Which interpreter or Node version a tree asks for, and which of the versions the runtime can
provide satisfies it. A request that can't be met fails with one line naming the request and
the versions available."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import semantic_version
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from devpush.builds.plan import MissingToolchain, PlanError
from devpush.runtime import IMAGE_RUNTIMES
from devpush.runtime.base import Toolchain

# Runner images the project's script can build (scripts/runner-images.sh NAME).
RUNNER_IMAGES = {
    ("python", "3.11"): "python-3.11",
    ("python", "3.13"): "python-3.13",
    ("node", "20"): "node-20",
    ("node", "22"): "node-22",
}
_PLAIN = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")
_LABEL = {"python": "Python", "node": "Node"}


@dataclass(frozen=True)
class Request:
    spec: str  # "3.12", ">=3.11", "^20.10", "20"
    source: str  # ".python-version", "package.json engines.node", ...

    @property
    def reason(self) -> str:
        return f"{self.source} asks for {self.spec}"


def read(path: Path, limit: int = 200_000) -> str:
    try:
        return path.read_text(errors="replace")[:limit]
    except OSError:
        return ""


def python_request(root: Path, pinned: str | None = None) -> Request | None:
    """devpush.toml [runner] version, .python-version, runtime.txt, requires-python, Pipfile."""
    if pinned:
        return Request(pinned, "devpush.toml [runner] version")
    first = next((ln.strip() for ln in read(root / ".python-version").splitlines() if ln), "")
    if first and not first.startswith("#"):
        return Request(first.removeprefix("python-").removeprefix("cpython-"), ".python-version")
    runtime_txt = read(root / "runtime.txt").strip()
    if runtime_txt:
        return Request(runtime_txt.removeprefix("python-"), "runtime.txt")
    try:
        pyproject = tomllib.loads(read(root / "pyproject.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"pyproject.toml is not valid TOML: {exc}") from None
    requires = (pyproject.get("project") or {}).get("requires-python")
    if isinstance(requires, str) and requires.strip():
        return Request(requires.strip(), "pyproject.toml requires-python")
    match = re.search(r'python_version\s*=\s*"([\d.]+)"', read(root / "Pipfile"))
    if match:
        return Request(match.group(1), "Pipfile python_version")
    return None


def node_request(
    root: Path, package: dict[str, object], pinned: str | None = None
) -> Request | None:
    """devpush.toml [runner] version, .nvmrc, .node-version, package.json engines.node."""
    if pinned:
        return Request(pinned, "devpush.toml [runner] version")
    for name in (".nvmrc", ".node-version"):
        value = read(root / name).strip()
        if value:
            return Request(value, name)
    engines = package.get("engines")
    if isinstance(engines, dict) and isinstance(engines.get("node"), str):
        return Request(str(engines["node"]).strip(), "package.json engines.node")
    return None


def choose(
    language: str, request: Request | None, toolchains: Sequence[Toolchain], runtime: str
) -> Toolchain:
    """The newest toolchain of `language` that satisfies `request`."""
    own = [t for t in toolchains if t.language == language]
    matching = [t for t in own if request is None or _satisfies(language, request, t.version)]
    if matching:
        return max(matching, key=lambda t: _sort_key(t.version))
    label = _LABEL[language]
    have = ", ".join(sorted({t.version for t in own}, key=_sort_key)) or "none"
    where = "runner images present" if runtime in IMAGE_RUNTIMES else "available on this server"
    if request is None:
        raise PlanError(f"This app needs {label}, but no {label} is available ({where}).")
    hint = ""
    if runtime in IMAGE_RUNTIMES:
        buildable = [
            script
            for (lang, version), script in RUNNER_IMAGES.items()
            if lang == language and _satisfies(language, request, version)
        ]
        if buildable:
            hint = (
                f"; the runner image is missing: build it with "
                f"`bash scripts/runner-images.sh {buildable[-1]}`"
            )
    elif language == "python":
        hint = (
            "; an admin can offer more with DEVPUSH_PYTHON_INTERPRETERS, or let uv fetch them "
            "with DEVPUSH_PYTHON_DOWNLOADS=true"
        )
    raise MissingToolchain(
        f"{request.reason}, but {label} {request.spec} is not available ({where}: {have})"
        f"{hint}. Pin one of those versions, or install {label} {request.spec}.",
        language=language,
        spec=request.spec,
    )


def _satisfies(language: str, request: Request, version: str) -> bool:
    spec = request.spec.strip()
    if language == "node":
        return _node_satisfies(spec, version)
    plain = _PLAIN.fullmatch(spec)
    if plain:  # "3.11" or "3.11.7": the same minor version (patch releases are compatible)
        major, minor = plain.group(1), plain.group(2)
        have = version.split(".")
        return have[0] == major and (minor is None or have[1:2] == [minor])
    try:
        specifiers = SpecifierSet(spec)
    except InvalidSpecifier:
        raise PlanError(f"{request.source}: {spec!r} is not a Python version or range") from None
    full = version if version.count(".") >= 2 else f"{version}.99"  # only the minor is known
    try:
        return specifiers.contains(Version(full), prereleases=True)
    except InvalidVersion:
        return False


def _node_satisfies(spec: str, version: str) -> bool:
    if spec in ("node", "latest", "current", "*", "") or spec.startswith("lts"):
        return True
    plain = _PLAIN.fullmatch(spec)
    if plain and spec.count(".") >= 2:  # an exact version from .nvmrc: the same major
        spec = plain.group(1)
    parts = (version.split(".") + ["99", "99"])[:3]
    try:
        return semantic_version.NpmSpec(spec).match(semantic_version.Version(".".join(parts)))
    except ValueError:
        raise PlanError(f"{spec!r} is not a Node version or range") from None


def _sort_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("."))


def package_json(root: Path) -> dict[str, object] | None:
    path = root / "package.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(read(path, limit=2_000_000))
    except json.JSONDecodeError as exc:
        raise PlanError(f"package.json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PlanError("package.json must hold a JSON object")
    return data
