"""Bad input to the build: each fails the deployment with one line that says why, and the
previous deployment keeps serving. A live app comes first, then the broken commit."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.apps.corpus import get, marker
from tests.e2e.apps import Api, create_bare_project, deploy_and_wait, git, push_app

pytestmark = pytest.mark.corpus


def _live(api: Api, tmp_path: Path, app: str) -> tuple[Path, dict[str, Any], str]:
    repo = push_app(get(app), tmp_path / app)
    project = create_bare_project(api, repo, f"{app[:20]}-{uuid.uuid4().hex[:6]}")
    done = deploy_and_wait(api, project)
    assert done["conclusion"] == "succeeded", done["error"]
    return repo, project, done["urls"]["environment"]


def _break(repo: Path, files: dict[str, str | None]) -> None:
    for name, text in files.items():
        if text is None:
            (repo / name).unlink()
        else:
            (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "break it")


def _fails(api: Api, project: dict[str, Any], url: str, app: str, *words: str) -> str:
    done = deploy_and_wait(api, project)
    assert done["conclusion"] == "failed", done
    error = str(done["error"])
    assert "\n" not in error and len(error) < 1200, error
    for word in words:
        assert word in error, error
    assert marker(app) in api.body(url)  # the previous deployment still serves
    return error


PYTHON_CASES = {
    "malformed poetry.lock": (
        {"requirements.txt": None, "poetry.lock": "[[package]\nname = 'flask'"},
        ("poetry.lock is not valid TOML",),
    ),
    "a dependency that does not exist": (
        {"requirements.txt": "flask==3.1.3\ndevpush-no-such-package-0x5f3==1.0\n"},
        ("Build failed", "Cause:", "devpush-no-such-package-0x5f3"),
    ),
    "requires-python nothing satisfies": (
        {"pyproject.toml": '[project]\nname = "x"\nversion = "1"\nrequires-python = ">=4"\n'},
        ("requires-python asks for >=4", "is not available"),
    ),
}


@pytest.mark.parametrize("case", list(PYTHON_CASES))
def test_python_bad_input(build_api: Api, tmp_path: Path, case: str) -> None:
    repo, project, url = _live(build_api, tmp_path, "flask-gunicorn")
    files, words = PYTHON_CASES[case]
    _break(repo, files)
    _fails(build_api, project, url, "flask-gunicorn", *words)


def test_a_failing_postinstall_script(build_api: Api, tmp_path: Path) -> None:
    repo, project, url = _live(build_api, tmp_path, "express-api")
    package = json.loads((repo / "package.json").read_text())
    package["scripts"]["postinstall"] = (
        "node -e \"console.error('postinstall broke'); process.exit(3)\""
    )
    _break(repo, {"package.json": json.dumps(package, indent=2)})
    _fails(build_api, project, url, "express-api", "Build failed", "Cause:")


def test_a_static_framework_without_a_build_script(build_api: Api, tmp_path: Path) -> None:
    repo, project, url = _live(build_api, tmp_path, "vite-spa")
    package = json.loads((repo / "package.json").read_text())
    del package["scripts"]["build"]
    _break(repo, {"package.json": json.dumps(package, indent=2)})
    _fails(build_api, project, url, "vite-spa", 'no "build" script')


def test_a_build_over_its_memory_limit_says_so(build_api: Api, tmp_path: Path) -> None:
    repo, project, url = _live(build_api, tmp_path, "flask-gunicorn")
    config = (
        "[build]\n"
        "command = \"python -c 'b = bytearray(400 * 1024 * 1024); print(len(b))'\"\n"
        "[resources]\nbuild_memory_mb = 128\n"
    )
    _break(repo, {"devpush.toml": config})
    _fails(build_api, project, url, "flask-gunicorn", "out of memory", "build_memory_mb")


FIXED_PORT_APP = """\
const http = require("node:http");
// Like many READMEs: "listens on 3000", whatever $PORT says.
http.createServer((req, res) => res.end("corpus:fixed-port")).listen(3000, "0.0.0.0");
console.log("listening on 3000");
"""


def test_an_app_on_its_own_port(build_api: Api, tmp_path: Path, build_platform: Any) -> None:
    """docker maps the project's port (3000) to the container; the process runtime can't give
    a tenant a fixed host port, so it says which port the app took instead of timing out."""
    repo = tmp_path / "fixed-port"
    repo.mkdir()
    (repo / "server.js").write_text(FIXED_PORT_APP)
    (repo / "package.json").write_text(json.dumps({"name": "fixed", "main": "server.js"}))
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "listens on 3000")
    body = {"name": f"fixed-{uuid.uuid4().hex[:6]}", "repo_url": f"file://{repo}", "port": 3000}
    project = build_api.post(f"/api/v1/teams/{build_api.team()}/projects", body, expect=201)
    done = deploy_and_wait(build_api, project)
    if build_platform.env["DEVPUSH_RUNTIME"] == "docker":
        assert done["conclusion"] == "succeeded", done["error"]
        assert build_api.body(done["urls"]["deployment"]) == "corpus:fixed-port"
    else:
        assert done["conclusion"] == "failed"
        assert "The app listens on port 3000, not on $PORT" in done["error"], done["error"]


def test_a_build_past_the_projects_time_limit_is_stopped(build_api: Api, tmp_path: Path) -> None:
    repo, project, url = _live(build_api, tmp_path, "flask-gunicorn")
    config = '[build]\ncommand = "sleep 120"\n[resources]\nbuild_timeout = 10\n'
    _break(repo, {"devpush.toml": config})
    _fails(build_api, project, url, "flask-gunicorn", "longer than 10s", "build_timeout")
