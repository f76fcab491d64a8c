"""Build benchmark: what installing and building the corpus apps costs, next to the bare tool.

For each sample app (tests/apps), against a real `devpush up` with an empty package cache:
a cold build, a warm redeploy of the same commit (same lockfile), and a redeploy after a
code-only change; each gives the install time the build log reports ("devpush: install took
Xs") and the push-to-live time. In the same run, the bare tool installs the same app into a
fresh environment with an empty cache of its own (`uv venv` + `uv pip install`/`uv sync`, or
`npm ci`). Times are compared as ratios within the run, since machines are noisy.

Goals: an unchanged lockfile costs <= 1 s of install; the Flask app goes from push to live in
<= 3 s warm on the process runtime; a cold install takes at most the bare tool's time + 10%.

    python bench/builds.py [--apps flask-gunicorn,fastapi-uv,...] [--runtime process|docker]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.apps.corpus import get  # noqa: E402
from tests.e2e.apps import (  # noqa: E402
    Api,
    build_log,
    create_bare_project,
    git,
    push_app,
)
from tests.e2e.conftest import PODMAN_SOCKET, _podman_ready  # noqa: E402
from tests.e2e.platform import platform_env, start_platform, wait_health  # noqa: E402

DEFAULT_APPS = "flask-gunicorn,fastapi-uv,django-site,poetry-app,express-api,vite-spa"
INSTALL = re.compile(r"^devpush: install took ([\d.]+)s$")
KEEP = re.compile(r"^devpush: kept \S+ for the next deploy of this lockfile in ([\d.]+)s$")
UV = Path(sys.executable).with_name("uv")


def deploy(api: Api, project: dict[str, Any]) -> tuple[float, float | None, float | None]:
    """(push-to-live seconds, install seconds, seconds keeping the installed tree), the last
    two from the build log."""
    started = time.monotonic()
    deployment = api.deploy(project["id"])
    done = api.wait(deployment["id"], timeout=900)
    elapsed = time.monotonic() - started
    if done["conclusion"] != "succeeded":
        raise SystemExit(f"{project['name']}: deployment failed: {done['error']}")
    install = keep = None
    for line in build_log(api, project["id"], done["id"]):
        if match := INSTALL.match(line):
            install = float(match.group(1))
        if match := KEEP.match(line):
            keep = float(match.group(1))
    return elapsed, install, keep


def bare_install(app: Path, work: Path) -> float:
    """The bare tool on the same tree, with an empty cache of its own."""
    tree = work / "tree"
    shutil.copytree(app, tree, ignore=shutil.ignore_patterns("node_modules", ".venv"))
    env = {**os.environ, "UV_CACHE_DIR": str(work / "uv-cache"), "UV_LINK_MODE": "copy"}
    env["npm_config_cache"] = str(work / "npm-cache")
    if (tree / "package.json").exists():
        commands = [["npm", "ci", "--include=dev", "--no-audit", "--no-fund"]]
    else:
        venv = [str(UV), "venv", "--quiet", "--python", "/usr/bin/python3", ".venv"]
        if (tree / "uv.lock").exists():
            env["UV_PROJECT_ENVIRONMENT"] = ".venv"
            install = [str(UV), "sync", "--frozen", "--no-dev", "--quiet"]
        elif (tree / "requirements.txt").exists():
            install = [
                str(UV),
                "pip",
                "install",
                "--quiet",
                "-p",
                ".venv",
                "-r",
                "requirements.txt",
            ]
        else:  # poetry.lock: the same pins the platform installs
            from devpush.builds.locks import poetry_requirements

            (tree / "pinned.txt").write_text(
                poetry_requirements((tree / "poetry.lock").read_text())
            )
            install = [str(UV), "pip", "install", "--quiet", "-p", ".venv", "--no-deps"]
            install += ["-r", "pinned.txt"]
        commands = [venv, install]
    started = time.monotonic()
    for command in commands:
        subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True, timeout=900)
    return time.monotonic() - started


def touch_code(repo: Path) -> None:
    """A code-only change: one more file, no dependency touched."""
    (repo / "CHANGELOG.md").write_text(f"change at {time.time()}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "code-only change")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default=DEFAULT_APPS)
    parser.add_argument("--runtime", default="process", choices=["process", "docker"])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="devpush-bench-builds-") as tmp:
        work = Path(tmp)
        extra = {
            "DEVPUSH_RUNTIME": args.runtime,
            "DEVPUSH_BUILD_TIMEOUT": "900",
            "DEVPUSH_DEPLOY_TIMEOUT": "60",
            "DEVPUSH_BUILD_CACHE_DIR": str(work / "cache"),  # empty: the first build is cold
        }
        if args.runtime == "docker":
            _podman_ready()
            subprocess.run(["podman", "volume", "rm", "-f", "devpush-build-cache"], check=False)
            extra |= {"DEVPUSH_DOCKER_HOST": PODMAN_SOCKET}
        data = work / "data"
        running = start_platform(data, env=platform_env(data, **extra))
        try:
            wait_health(running.app_url)
            api = Api(running.app_url, running.token(), running.proxy_url)
            for name in args.apps.split(","):
                app = get(name)
                repo = push_app(app, work / "repos" / name)
                project = create_bare_project(api, repo, name)
                cold_live, cold_install, keep = deploy(api, project)
                warm_live, warm_install, _ = deploy(api, project)
                touch_code(repo)
                code_live, code_install, _ = deploy(api, project)
                bare = bare_install(app.path, work / "bare" / name)
                ratio = (cold_install / bare) if cold_install and bare else None
                rows.append(
                    (
                        name,
                        cold_install,
                        keep,
                        cold_live,
                        bare,
                        ratio,
                        warm_install,
                        warm_live,
                        code_install,
                        code_live,
                    )
                )
                print(f"  measured {name}", file=sys.stderr, flush=True)
        finally:
            running.stop()
            if args.runtime == "docker":
                running.remove_containers()
    header = (
        "app",
        "cold install",
        "keep tree",
        "cold live",
        "bare tool",
        "cold/bare",
        "warm install",
        "warm live",
        "code install",
        "code live",
    )
    print(f"\nBuilds on the {args.runtime} runtime (seconds; live = push to live URL)\n")
    print(" | ".join(f"{h:>13}" for h in header))
    print("-|-".join("-" * 13 for _ in header))
    for row in rows:
        name, *values = row
        print(" | ".join([f"{name:>13}", *(f"{fmt(v):>13}" for v in values)]))
    print(
        "\nGoals: warm install <= 1.00 s; flask-gunicorn warm live <= 3.00 s (process); "
        "cold/bare <= 1.10 (the install itself; 'keep tree' is the copy kept for the next "
        "deploy of the same lockfile, paid once per lockfile)."
    )


if __name__ == "__main__":
    main()
