"""The README's `devpush.toml` example deploys as written, on both runtimes: the file is taken
from the README itself, next to the small Flask app it describes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.e2e.apps import Api, create_bare_project, deploy_and_wait, git

pytestmark = pytest.mark.corpus
README = Path(__file__).resolve().parents[2] / "README.md"

APP = """\
import os

from flask import Flask

app = Flask(__name__)


@app.get("/")
def home():
    migrated = os.path.exists("migrated.txt")
    return f"readme-toml app, migrated: {migrated}, python: {os.sys.version.split()[0]}"


@app.get("/healthz")
def healthz():
    return "ok"
"""
MIGRATE = 'open("migrated.txt", "w").write("yes")\nprint("migrated", flush=True)\n'


def readme_toml() -> str:
    section = README.read_text().split("### `devpush.toml`", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.S)
    assert match, "the README has no devpush.toml example"
    return match.group(1)


def test_the_readme_example_deploys_as_written(build_api: Api, tmp_path: Path) -> None:
    repo = tmp_path / "readme-app"
    repo.mkdir()
    (repo / "app.py").write_text(APP)
    (repo / "migrate.py").write_text(MIGRATE)
    (repo / "requirements.txt").write_text("flask==3.1.3\ngunicorn==27.0.1\n")
    (repo / "devpush.toml").write_text(readme_toml())
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the README's example")
    project = create_bare_project(build_api, repo, "readme-toml")
    done = deploy_and_wait(build_api, project)
    assert done["conclusion"] == "succeeded", done["error"]
    body = build_api.body(done["urls"]["deployment"])
    assert "readme-toml app, migrated: True, python: 3.11." in body
