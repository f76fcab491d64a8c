"""Python apps: how dependencies are installed (uv, one virtualenv per deployment at
`.venv`, from the lockfile when there is one) and which production server starts which
framework (Django, Flask, FastAPI, plain WSGI/ASGI)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from devpush.builds import locks
from devpush.builds.plan import PlanError
from devpush.builds.versions import read

LOCKED_REQUIREMENTS = ".devpush/requirements.lock.txt"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MARKERS = (
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "Pipfile",
    "requirements.txt",
    "pyproject.toml",
    "setup.py",
    "manage.py",
)
# Where an app module is looked for, in order: top level, then the usual package layouts.
_MODULE_FILES = (
    "main.py",
    "app.py",
    "server.py",
    "api.py",
    "wsgi.py",
    "asgi.py",
    "application.py",
    "app/main.py",
    "app/__init__.py",
    "app/app.py",
    "src/main.py",
    "src/app.py",
)


@dataclass(frozen=True)
class Install:
    manager: str  # what the plan says, e.g. "uv from uv.lock"
    command: str
    files: dict[str, str]
    lock: str | None = None  # the file that pins every package, when one does


def is_python(root: Path) -> bool:
    entries = ("main.py", "app.py", "server.py", "wsgi.py", "asgi.py")
    return any((root / name).is_file() for name in (*_MARKERS, *entries))


def install(root: Path, interpreter: str, *, seed: bool = False) -> Install:
    """A fresh .venv made by uv for `interpreter`, filled from the first of uv.lock,
    poetry.lock, Pipfile.lock, requirements.txt, Pipfile or pyproject.toml. `seed` adds pip
    to it (for commands that call pip themselves)."""
    venv = f"uv venv --quiet{' --seed' if seed else ''} --clear --python {interpreter} .venv"
    pip = "uv pip install --python .venv/bin/python"
    if (root / "uv.lock").is_file():
        sync = "UV_PROJECT_ENVIRONMENT=.venv uv sync --frozen --no-dev"
        return Install("uv sync from uv.lock", f"{venv} && {sync}", {}, lock="uv.lock")
    for lockfile, convert in (
        ("poetry.lock", locks.poetry_requirements),
        ("Pipfile.lock", locks.pipfile_lock_requirements),
    ):
        if (root / lockfile).is_file():
            pinned = convert(read(root / lockfile, limit=20_000_000))
            command = f"{venv} && {pip} --no-deps -r {LOCKED_REQUIREMENTS}"
            files = {LOCKED_REQUIREMENTS: pinned}
            return Install(f"uv from {lockfile} (exact pins)", command, files, lock=lockfile)
    if (root / "requirements.txt").is_file():
        pinned_all = _fully_pinned(read(root / "requirements.txt", limit=2_000_000))
        command = f"{venv} && {pip} -r requirements.txt"
        lock = "requirements.txt" if pinned_all else None
        return Install("uv from requirements.txt", command, {}, lock=lock)
    if (root / "Pipfile").is_file():
        text = locks.pipfile_requirements(read(root / "Pipfile"))
        command = f"{venv} && {pip} -r {LOCKED_REQUIREMENTS}"
        return Install("uv from Pipfile (no lock)", command, {LOCKED_REQUIREMENTS: text})
    if (root / "pyproject.toml").is_file():
        return Install("uv from pyproject.toml", f"{venv} && {pip} -r pyproject.toml", {})
    return Install("uv (no dependencies)", venv, {})


_PINNED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[\w,.-]*\])?==[\w.+!-]+\s*(;.*)?")


def _fully_pinned(text: str) -> bool:
    """Whether every requirement is `name==version` (then the file locks the install)."""
    lines = [ln.split(" #")[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    return bool(lines) and all(_PINNED.fullmatch(ln) for ln in lines)


def dependencies(root: Path) -> str:
    """Every dependency file's text, lower-cased, to ask whether a package is used."""
    names = ("requirements.txt", "pyproject.toml", "Pipfile", "uv.lock", "poetry.lock")
    return "\n".join(read(root / name, limit=5_000_000).lower() for name in names)


def uses(deps: str, package: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(package)}(?![\w-])", deps) is not None


@dataclass(frozen=True)
class App:
    framework: str
    start: str
    build: str | None = None
    pre_deploy: str | None = None
    note: str | None = None


def detect_app(root: Path) -> App | None:
    deps = dependencies(root)
    for detector in (_django, _fastapi, _flask, _plain):
        app = detector(root, deps)
        if app is not None:
            return app
    return None


def _django(root: Path, deps: str) -> App | None:
    manage = root / "manage.py"
    if not manage.is_file():
        return None
    match = re.search(r"DJANGO_SETTINGS_MODULE['\"],\s*['\"]([\w.]+)\.settings", read(manage))
    package = match.group(1) if match else None
    settings = read(root / package / "settings.py") if package else ""
    build = None
    note = None
    if "STATIC_ROOT" in settings:
        build = "python manage.py collectstatic --noinput"
        note = "STATIC_ROOT is set: static files are collected at build time"
    if package and uses(deps, "gunicorn"):
        start = f"gunicorn {package}.wsgi --bind $HOST:$PORT --access-logfile -"
    elif package and uses(deps, "uvicorn"):
        start = f"uvicorn {package}.asgi:application --host $HOST --port $PORT"
    else:
        start = "python manage.py runserver $HOST:$PORT --noreload"
        note = "no gunicorn or uvicorn in the dependencies: Django's development server runs"
    migrate = "python manage.py migrate --noinput"
    return App("django", start, build=build, pre_deploy=migrate, note=note)


def _find(root: Path, pattern: str) -> tuple[str, str, str] | None:
    """(app dir, module, attribute) of the first file with a match of `pattern`, whose
    group 1 is the attribute (a variable, or a factory function then called)."""
    candidates = list(_MODULE_FILES)
    src = root / "src"
    if src.is_dir():
        for package in sorted(p for p in src.iterdir() if (p / "__init__.py").is_file()):
            for name in ("__init__.py", "main.py", "app.py", "wsgi.py", "asgi.py"):
                candidates.append(f"src/{package.name}/{name}")
    regex = re.compile(pattern, re.M)
    for candidate in candidates:
        match = regex.search(read(root / candidate))
        if match is None:
            continue
        parts = candidate.removesuffix(".py").split("/")
        app_dir = "."
        if parts[0] == "src" and len(parts) > 1:
            app_dir, parts = "src", parts[1:]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not all(_IDENTIFIER.fullmatch(part) for part in parts):
            continue  # commands name modules: identifiers only, never arbitrary file names
        return app_dir, ".".join(parts), match.group(1)
    return None


def _target(root: Path, cls: str) -> tuple[str, str, bool] | None:
    """(app dir, "module:attr", is_factory) of a `cls` app: `app = cls(...)` or a
    `def create_app()` factory in a module that uses `cls`."""
    found = _find(root, rf"^(\w+)\s*(?::\s*\w+\s*)?=\s*{cls}\(")
    if found:
        return found[0], f"{found[1]}:{found[2]}", False
    found = _find(root, rf"^def (create_app|make_app|app_factory)\(\)[\s\S]*\b{cls}\(")
    if found:
        return found[0], f"{found[1]}:{found[2]}", True
    return None


def _fastapi(root: Path, deps: str) -> App | None:
    target = _target(root, "FastAPI")
    if target is None:
        return None
    app_dir, ref, factory = target
    where = f" --app-dir {app_dir}" if app_dir != "." else ""
    if uses(deps, "uvicorn") or uses(deps, "fastapi[standard]"):
        flags = " --factory" if factory else ""
        return App("fastapi", f"uvicorn {ref} --host $HOST --port $PORT{flags}{where}")
    if uses(deps, "hypercorn"):
        return App("fastapi", f"hypercorn {ref} --bind $HOST:$PORT")
    raise PlanError(
        f"A FastAPI app was found ({ref}), but no ASGI server is in the dependencies: "
        "add uvicorn (or hypercorn)"
    )


def _flask(root: Path, deps: str) -> App | None:
    target = _target(root, "Flask")
    if target is None:
        return None
    app_dir, ref, factory = target
    call = f"{ref}()" if factory else ref
    if uses(deps, "gunicorn"):
        chdir = f" --chdir {app_dir}" if app_dir != "." else ""
        start = f"gunicorn '{call}' --bind $HOST:$PORT --access-logfile -{chdir}"
        return App("flask", start)
    if uses(deps, "waitress"):
        flags = " --call" if factory else ""
        return App("flask", f"waitress-serve --listen=$HOST:$PORT{flags} {ref}")
    return App(
        "flask",
        f"flask --app '{call}' run --host $HOST --port $PORT",
        note="no gunicorn or waitress in the dependencies: Flask's development server runs",
    )


def _callable(path: Path, default: str) -> str:
    """The WSGI/ASGI callable a module defines: `application` or `app`."""
    match = re.search(r"^(application|app)\s*(?::\s*\w+\s*)?=", read(path), re.M)
    return match.group(1) if match else default


def _plain(root: Path, deps: str) -> App | None:
    if (root / "asgi.py").is_file() and uses(deps, "uvicorn"):
        name = _callable(root / "asgi.py", "app")
        return App("asgi", f"uvicorn asgi:{name} --host $HOST --port $PORT")
    if (root / "wsgi.py").is_file() and uses(deps, "gunicorn"):
        name = _callable(root / "wsgi.py", "application")
        return App("wsgi", f"gunicorn wsgi:{name} --bind $HOST:$PORT --access-logfile -")
    for entry in ("main.py", "app.py", "server.py"):
        if (root / entry).is_file():
            return App("python", f"python3 {entry}")
    return None
