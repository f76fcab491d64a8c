"""Detection: a pure function from a source tree (plus the toolchains the runtime offers and
the project's settings) to a `Plan`. Order: a Procfile's `web:` line wins for the start
command; then a Python app, a Node app, a static site. Settings and devpush.toml override
the commands, never the install step."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from devpush.builds import node, python, versions
from devpush.builds.plan import CACHE_ENV, Plan, PlanError, cache_key
from devpush.runtime.base import Toolchain

STATIC_DIRS = (".", "public", "dist", "build")
# Frameworks that phone home from builds and servers unless told not to.
_NO_TELEMETRY = {
    "NEXT_TELEMETRY_DISABLED": "1",
    "NUXT_TELEMETRY_DISABLED": "1",
    "ASTRO_TELEMETRY_DISABLED": "1",
}
LOOKED_FOR = (
    "a Procfile with a web: line, manage.py (Django), a Flask or FastAPI app (main.py, app.py, "
    "app/, src/, wsgi.py), requirements.txt, pyproject.toml, Pipfile, package.json, or an "
    "index.html in ./, public/, dist/ or build/"
)


def detect(
    root: Path, *, toolchains: Sequence[Toolchain], runtime: str, config: Mapping[str, Any]
) -> Plan:
    """The plan for the tree at `root`. Raises PlanError with one line for people."""
    procfile = _procfile(root)
    package = versions.package_json(root)
    language = config.get("runner_language")
    if language == "python" or (language is None and python.is_python(root)):
        if language or package is None or _python_app_first(root, procfile):
            plan = _python(root, toolchains, runtime, config, procfile)
            return _override(plan, config)
    if language == "node" or package is not None:
        plan = _node(root, package or {}, toolchains, runtime, config, procfile)
        return _override(plan, config)
    start = procfile.get("web") or config.get("start_command")
    if start:
        return _override(
            Plan(stack="custom", start=start, pre_deploy=procfile.get("release")), config
        )
    for directory in STATIC_DIRS:
        if (root / directory / "index.html").is_file():
            plan = Plan(
                stack="static",
                framework="static site",
                start=f"{node.STATIC_SERVER} {directory}",
                notes=(f"index.html found in {directory}/: served as static files",),
            )
            return _override(plan, config)
    raise PlanError(f"No app found in the repository: looked for {LOOKED_FOR}.")


def _python_app_first(root: Path, procfile: dict[str, str]) -> bool:
    """With both Python and Node files, Python wins when it has an app (Node then only
    builds assets, e.g. a Django site with a frontend)."""
    return bool(procfile) or python.detect_app(root) is not None


def _python(
    root: Path,
    toolchains: Sequence[Toolchain],
    runtime: str,
    config: Mapping[str, Any],
    procfile: dict[str, str],
) -> Plan:
    request = versions.python_request(root, config.get("runner_version"))
    chosen = versions.choose("python", request, toolchains, runtime)
    interpreter = chosen.path or "python3"
    commands = f"{config.get('build_command') or ''}\n{config.get('pre_deploy_command') or ''}"
    install = python.install(root, interpreter, seed=re.search(r"\bpip3?\b", commands) is not None)
    notes: list[str] = []
    app = None if "web" in procfile else python.detect_app(root)
    if "web" in procfile:
        framework, start, build, pre = "procfile", procfile["web"], None, procfile.get("release")
        notes.append("Procfile web: line starts the app")
    elif app is not None:
        framework, start, build, pre = app.framework, app.start, app.build, app.pre_deploy
        notes += [app.note] if app.note else []
    elif config.get("start_command"):
        framework, start, build, pre = "python", str(config["start_command"]), None, None
    else:
        raise PlanError(
            "Python dependencies were found but no app to start: looked for manage.py, a Flask "
            "or FastAPI app (main.py, app.py, app/, src/), wsgi.py or asgi.py; add a Procfile "
            "`web:` line or set the start command"
        )
    return Plan(
        stack="python",
        framework=framework,
        language="python",
        version=chosen.version,
        version_reason=request.reason if request else "the newest available",
        image=chosen.image,
        package_manager=install.manager,
        install=install.command,
        build=build,
        pre_deploy=pre,
        start=start,
        env={**CACHE_ENV, "PYTHONUNBUFFERED": "1"},
        path=(".venv/bin",),
        notes=tuple(notes),
        files=install.files,
        cache_key=_key(root, install.lock, chosen, install.command),
        cache_dir=".venv" if install.lock else None,
    )


def _node(
    root: Path,
    package: dict[str, object],
    toolchains: Sequence[Toolchain],
    runtime: str,
    config: Mapping[str, Any],
    procfile: dict[str, str],
) -> Plan:
    request = versions.node_request(root, package, config.get("runner_version"))
    chosen = versions.choose("node", request, toolchains, runtime)
    pm = node.package_manager(root, package)
    notes = []
    node_bin = str(Path(chosen.path).parent) if chosen.path else ""
    fetched = [node_bin] if node_bin and not node_bin.startswith("/usr/") else []
    if fetched:  # a Node the runtime fetched: its bin directory comes first on PATH
        notes.append(f"Node {chosen.version} from {node_bin}")
    if "web" in procfile:
        scripts = package.get("scripts")
        has_build = isinstance(scripts, dict) and "build" in scripts
        app = node.App("procfile", procfile["web"], f"{pm.run} build" if has_build else None)
        notes.append("Procfile web: line starts the app")
    elif config.get("start_command"):
        app = node.App("node", str(config["start_command"]), None)
    else:
        app = node.detect_app(root, package, pm)
    if app.static_dir:
        spa = ", with fallback to index.html" if app.spa else ""
        notes.append(f"static build in {app.static_dir}/ served by devpush's static server{spa}")
    return Plan(
        stack="node",
        framework=app.framework,
        language="node",
        version=chosen.version,
        version_reason=request.reason if request else "the newest available",
        image=chosen.image,
        package_manager=pm.label,
        install=pm.install,
        build=app.build,
        pre_deploy=procfile.get("release"),
        start=app.start,
        env={**CACHE_ENV, "NODE_ENV": "production", **_NO_TELEMETRY},
        path=(
            *fetched,
            "node_modules/.bin",
        ),
        notes=tuple(notes),
        cache_key=_key(root, pm.lockfile, chosen, pm.install),
        cache_dir="node_modules" if pm.lockfile else None,
    )


def _key(root: Path, lockfile: str | None, chosen: Toolchain, install: str) -> str | None:
    if lockfile is None:
        return None
    lock = (root / lockfile).read_bytes()
    package = versions.read(root / "package.json", limit=2_000_000)  # scripts run at install
    return cache_key(lock, package, chosen.version, chosen.image or chosen.path, install)


def _override(plan: Plan, config: Mapping[str, Any]) -> Plan:
    """The project's and devpush.toml's commands replace the detected ones."""
    changes: dict[str, Any] = {}
    for key, field in (
        ("build_command", "build"),
        ("pre_deploy_command", "pre_deploy"),
        ("start_command", "start"),
    ):
        if key in config and config[key] is not None:
            changes[field] = config[key] or None
    if config.get("image"):
        changes["image"] = config["image"]
    if not changes:
        return plan
    if not (changes.get("start") or plan.start):
        raise PlanError("the start command is empty: set one, or clear it to use detection")
    notes = plan.notes + ("commands set in the project or devpush.toml replace detected ones",)
    return replace(plan, **changes, notes=notes)


def _procfile(root: Path) -> dict[str, str]:
    processes = {}
    for line in versions.read(root / "Procfile").splitlines():
        match = re.match(r"^([A-Za-z0-9_-]+)\s*:\s*(.+)$", line.strip())
        if match:
            processes[match.group(1)] = match.group(2).strip()
    return processes
