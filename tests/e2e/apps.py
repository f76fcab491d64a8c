"""Small test apps in local git repositories, and an API client for the running platform."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.apps.corpus import SampleApp

APP = """\
import os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

time.sleep(float(os.environ.get("START_DELAY", "0")))
if os.environ.get("EXIT_AT_START"):
    print("giving up at start", flush=True)
    sys.exit(4)
BODY = open("body.txt").read().strip()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health" and os.environ.get("FAIL_HEALTH"):
            self.send_response(500)
            self.end_headers()
            return
        text = BODY + os.environ.get("GREETING", "")
        payload = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


print("listening on", os.environ["PORT"], flush=True)
ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""


# An app that answers every GET with "ok" and serves forever; apps that print log lines put
# their own code in front of it.
OK_SERVER = """
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def make_repo(path: Path, body: str = "A", branch: str = "main") -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", branch)
    (path / "app.py").write_text(APP)
    return commit(path, body)


def commit(repo: Path, body: str, message: str | None = None) -> Path:
    (repo / "body.txt").write_text(body + "\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message or f"body {body}")
    return repo


class Api:
    def __init__(self, base_url: str, token: str, proxy_url: str) -> None:
        self.http = httpx.Client(
            base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )
        self.proxy_url = proxy_url

    def post(self, path: str, json: Any = None, expect: int | None = None) -> Any:
        response = self.http.post(path, json=json)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def team(self) -> str:
        return str(self.get("/api/v1/teams")[0]["slug"])

    def project(self, repo: Path, name: str, **fields: Any) -> dict[str, Any]:
        body = {
            "name": name,
            "repo_url": f"file://{repo}",
            "start_command": "python3 app.py",
            "health_path": "/",
            **fields,
        }
        return dict(self.post(f"/api/v1/teams/{self.team()}/projects", body, expect=201))

    def deploy(self, project_id: str, branch: str = "main", **fields: Any) -> dict[str, Any]:
        return dict(
            self.post(
                f"/api/v1/projects/{project_id}/deployments",
                {"branch": branch, **fields},
                expect=201,
            )
        )

    def wait(self, deployment_id: str, timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            deployment = self.get(f"/api/v1/deployments/{deployment_id}")
            if deployment["status"] == "completed":
                return dict(deployment)
            time.sleep(0.1)
        raise AssertionError(f"deployment {deployment_id} did not conclude: {deployment}")

    def wait_status(self, deployment_id: str, status: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(f"/api/v1/deployments/{deployment_id}")["status"] == status:
                return
            time.sleep(0.05)
        raise AssertionError(f"deployment {deployment_id} never reached {status}")

    def serve(self, url: str) -> httpx.Response:
        """GET a deployment URL through Traefik, by Host header."""
        parsed = httpx.URL(url)
        return httpx.get(
            f"{self.proxy_url}{parsed.raw_path.decode()}", headers={"Host": parsed.host}, timeout=10
        )

    def body(self, url: str) -> str:
        response = self.serve(url)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])
        return response.text


# ---- the sample-app corpus (tests/apps) ------------------------------------------------------
IGNORED = shutil.ignore_patterns(
    "node_modules", ".venv", "dist", "build", ".next", "__pycache__", "db.sqlite3", "staticfiles"
)


def push_app(app: SampleApp | Path, repo: Path) -> Path:
    """A corpus app as a user's repository: its files, committed on main."""
    source = app if isinstance(app, Path) else app.path
    shutil.copytree(source, repo, ignore=IGNORED)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{source.name}: initial commit")
    return repo


def create_bare_project(api: Api, repo: Path, name: str) -> dict[str, Any]:
    """A project with nothing set but the repository: detection does the rest."""
    body = {"name": name, "repo_url": f"file://{repo}"}
    return dict(api.post(f"/api/v1/teams/{api.team()}/projects", body, expect=201))


def build_log(api: Api, project_id: str, deployment_id: str) -> list[str]:
    page = api.get(f"/api/v1/projects/{project_id}/logs", deployment=deployment_id, limit=1000)
    return [item["message"] for item in reversed(page["items"])]


def deploy_and_wait(api: Api, project: dict[str, Any]) -> dict[str, Any]:
    deployment = api.deploy(project["id"])
    return api.wait(deployment["id"], timeout=900)
