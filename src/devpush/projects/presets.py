"""Preset detection: fill in the build and start commands a source tree needs when the user
left them empty. Django, FastAPI, Flask, plain Python (WSGI/ASGI), Node and static files.

Commands bind to $HOST:$PORT, which every runtime injects.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Preset:
    name: str
    build_command: str | None
    start_command: str
    pre_deploy_command: str | None = None


def _read(path: Path, limit: int = 200_000) -> str:
    try:
        return path.read_text(errors="replace")[:limit]
    except OSError:
        return ""


def _requirements(root: Path) -> str:
    return "\n".join(
        _read(root / name).lower() for name in ("requirements.txt", "pyproject.toml", "Pipfile")
    )


def _pip_install(root: Path) -> str | None:
    if (root / "requirements.txt").exists():
        return "python3 -m pip install --no-cache-dir -r requirements.txt"
    if (root / "pyproject.toml").exists():
        return "python3 -m pip install --no-cache-dir ."
    return None


def _find_module(root: Path, needle: str) -> tuple[str, str] | None:
    """(module, variable) of the first top-level file that assigns `var = needle(...)`."""
    pattern = re.compile(rf"^(\w+)\s*=\s*{re.escape(needle)}\(", re.M)
    for candidate in ("main.py", "app.py", "server.py", "asgi.py", "wsgi.py", "api.py"):
        match = pattern.search(_read(root / candidate))
        if match:
            return candidate.removesuffix(".py"), match.group(1)
    return None


def _django(root: Path) -> Preset | None:
    manage = root / "manage.py"
    if not manage.exists():
        return None
    match = re.search(r"DJANGO_SETTINGS_MODULE['\"],\s*['\"]([\w.]+)\.settings", _read(manage))
    package = match.group(1) if match else None
    if package and "gunicorn" in _requirements(root):
        start = f"gunicorn {package}.wsgi --bind $HOST:$PORT"
    else:
        start = "python3 manage.py runserver $HOST:$PORT --noreload"
    return Preset("django", _pip_install(root), start, "python3 manage.py migrate --noinput")


def _fastapi(root: Path) -> Preset | None:
    found = _find_module(root, "FastAPI")
    if not found:
        return None
    module, var = found
    return Preset(
        "fastapi", _pip_install(root), f"uvicorn {module}:{var} --host $HOST --port $PORT"
    )


def _flask(root: Path) -> Preset | None:
    found = _find_module(root, "Flask")
    if not found:
        return None
    module, var = found
    if "gunicorn" in _requirements(root):
        start = f"gunicorn {module}:{var} --bind $HOST:$PORT"
    else:
        start = f"python3 -m flask --app {module}:{var} run --host $HOST --port $PORT"
    return Preset("flask", _pip_install(root), start)


def _python(root: Path) -> Preset | None:
    reqs = _requirements(root)
    if (root / "asgi.py").exists():
        return Preset(
            "python-asgi", _pip_install(root), "uvicorn asgi:app --host $HOST --port $PORT"
        )
    if (root / "wsgi.py").exists():
        server = (
            "gunicorn wsgi:application --bind $HOST:$PORT"
            if "gunicorn" in reqs
            else (
                'python3 -c "import os,wsgi;from wsgiref.simple_server import make_server;'
                "make_server(os.environ['HOST'],int(os.environ['PORT']),wsgi.application)"
                '.serve_forever()"'
            )
        )
        return Preset("python-wsgi", _pip_install(root), server)
    for entry in ("main.py", "app.py", "server.py"):
        if (root / entry).exists():
            return Preset("python", _pip_install(root), f"python3 {entry}")
    return None


def _node(root: Path) -> Preset | None:
    package = root / "package.json"
    if not package.exists():
        return None
    try:
        scripts = json.loads(_read(package)).get("scripts", {})
    except (json.JSONDecodeError, AttributeError):
        scripts = {}
    install = "npm ci" if (root / "package-lock.json").exists() else "npm install"
    build = f"{install} && npm run build" if "build" in scripts else install
    start = "npm start" if "start" in scripts else "node index.js"
    return Preset("node", build, start)


def _static(root: Path) -> Preset | None:
    for directory in (".", "public", "dist", "build"):
        if (root / directory / "index.html").exists():
            return Preset(
                "static", None, f"python3 -m http.server $PORT --bind $HOST --directory {directory}"
            )
    return None


DETECTORS = (_django, _fastapi, _flask, _python, _node, _static)


def detect(root: Path) -> Preset | None:
    for detector in DETECTORS:
        preset = detector(root)
        if preset:
            return preset
    return None
