"""Detection is pure: a tree, the toolchains a runtime offers and the settings give one plan,
or one clear line saying what to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devpush import builds
from devpush.builds import PlanError, detect
from devpush.builds.locks import pipfile_lock_requirements, poetry_requirements
from devpush.runtime.base import Toolchain

HOST = [
    Toolchain("python", "3.11.2", path="/usr/bin/python3.11"),
    Toolchain("node", "20.20.2", path="/usr/bin/node"),
]
IMAGES = [
    Toolchain("python", "3.11", image="devpush-runner-python:3.11"),
    Toolchain("node", "20", image="devpush-runner-node:20"),
    Toolchain("node", "22", image="devpush-runner-node:22"),
]
GUNICORN_REQS = "flask==3.1.0\ngunicorn==23.0.0\n"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def plan(root: Path, files: dict[str, str], **config: object) -> builds.Plan:
    return detect(tree(root, files), toolchains=HOST, runtime="process", config=config)


def package(**fields: object) -> str:
    return json.dumps({"name": "app", **fields})


def test_flask_with_gunicorn_gets_a_venv_from_requirements(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "app.py": "from flask import Flask\napp = Flask(__name__)\n",
            "requirements.txt": GUNICORN_REQS,
        },
    )
    assert (result.stack, result.framework, result.version) == ("python", "flask", "3.11.2")
    assert result.install == (
        "uv venv --quiet --clear --python /usr/bin/python3.11 .venv && "
        "uv pip install --python .venv/bin/python -r requirements.txt"
    )
    assert result.start.startswith("gunicorn 'app:app' --bind $HOST:$PORT")
    assert result.path == (".venv/bin",)
    assert result.env["UV_CACHE_DIR"] == "/devpush/cache/uv"
    assert result.lines()[0] == "Plan: flask (python)"


def test_flask_factory_in_a_package(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "app/__init__.py": (
                "from flask import Flask\n\ndef create_app():\n    return Flask('x')\n"
            ),
            "requirements.txt": GUNICORN_REQS,
        },
    )
    assert result.start.startswith("gunicorn 'app:create_app()'")


def test_fastapi_in_src_layout_with_uv_lock(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "pyproject.toml": '[project]\nname = "x"\ndependencies = ["fastapi", "uvicorn"]\n',
            "uv.lock": "version = 1\n",
            "src/shop/main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
            "src/shop/__init__.py": "",
        },
    )
    assert result.framework == "fastapi"
    assert result.package_manager == "uv sync from uv.lock"
    assert "uv sync --frozen --no-dev" in (result.install or "")
    assert result.start == "uvicorn shop.main:app --host $HOST --port $PORT --app-dir src"


def test_fastapi_without_a_server_says_what_to_add(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="add uvicorn"):
        plan(tmp_path, {"main.py": "app = FastAPI()\n", "requirements.txt": "fastapi\n"})


def test_django_migrates_and_collects_static(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "manage.py": "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'mysite.settings')",
            "mysite/settings.py": "STATIC_ROOT = BASE_DIR / 'staticfiles'\n",
            "requirements.txt": "Django==5.2\ngunicorn==23.0.0\n",
        },
    )
    assert result.pre_deploy == "python manage.py migrate --noinput"
    assert result.build == "python manage.py collectstatic --noinput"
    assert result.start.startswith("gunicorn mysite.wsgi --bind $HOST:$PORT")


def test_poetry_lock_becomes_exact_hashed_pins(tmp_path: Path) -> None:
    lock = """
[[package]]
name = "flask"
version = "3.1.0"
groups = ["main"]
files = [{file = "flask-3.1.0-py3-none-any.whl", hash = "sha256:%s"}]

[[package]]
name = "pytest"
version = "8.0.0"
groups = ["dev"]
files = []
""" % ("a" * 64)
    result = plan(
        tmp_path,
        {"poetry.lock": lock, "pyproject.toml": "[tool.poetry]\n", "wsgi.py": "app = Flask()\n"},
    )
    pinned = result.files[".devpush/requirements.lock.txt"]
    assert "flask==3.1.0 \\\n    --hash=sha256:" + "a" * 64 in pinned
    assert "pytest" not in pinned
    assert "--no-deps -r .devpush/requirements.lock.txt" in (result.install or "")
    builds.prepare(result, tmp_path)
    assert (tmp_path / ".devpush/requirements.lock.txt").read_text() == pinned


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[[package]\nname = 1", "not valid TOML"),
        ("x = 1", r"no \[\[package\]\] entries"),
        ('[[package]]\nname = "a b"\nversion = "1"\ngroups = ["main"]', "invalid package"),
        ('[[package]]\nname = "a"\nversion = "1;rm"\ngroups = ["main"]', "invalid version"),
    ],
)
def test_a_malformed_poetry_lock_fails_in_one_line(text: str, words: str) -> None:
    with pytest.raises(PlanError, match=words):
        poetry_requirements(text)


def test_pipfile_lock(tmp_path: Path) -> None:
    text = json.dumps({"default": {"flask": {"version": "==3.1.0", "hashes": []}}})
    assert "flask==3.1.0" in pipfile_lock_requirements(text)
    with pytest.raises(PlanError, match="no pinned version"):
        pipfile_lock_requirements(json.dumps({"default": {"x": {"git": "https://x"}}}))
    with pytest.raises(PlanError, match="not valid JSON"):
        pipfile_lock_requirements("{")


@pytest.mark.parametrize(
    ("files", "source"),
    [
        ({".python-version": "3.9\n"}, ".python-version asks for 3.9"),
        ({"runtime.txt": "python-3.12.1"}, "runtime.txt asks for 3.12.1"),
        (
            {"pyproject.toml": '[project]\nname="x"\nrequires-python = ">=4.0"\n'},
            "pyproject.toml requires-python asks for >=4.0",
        ),
    ],
)
def test_an_unavailable_python_names_the_request_and_what_there_is(
    tmp_path: Path, files: dict[str, str], source: str
) -> None:
    files = {**files, "main.py": "print()"}
    with pytest.raises(PlanError) as caught:
        plan(tmp_path, files)
    assert source in caught.value.message
    assert "3.11.2" in caught.value.message and "\n" not in caught.value.message
    assert "DEVPUSH_PYTHON_DOWNLOADS=true" in caught.value.message


def test_python_version_pins_choose_among_several(tmp_path: Path) -> None:
    toolchains = [*HOST, Toolchain("python", "3.13.1", path="/usr/bin/python3.13")]
    tree(tmp_path, {".python-version": "3.11\n", "main.py": "print()"})
    chosen = detect(tmp_path, toolchains=toolchains, runtime="process", config={})
    assert chosen.version == "3.11.2"
    (tmp_path / ".python-version").unlink()
    newest = detect(tmp_path, toolchains=toolchains, runtime="process", config={})
    assert newest.version == "3.13.1" and "/usr/bin/python3.13" in (newest.install or "")


def test_docker_picks_the_image_and_names_the_command_for_a_missing_one(tmp_path: Path) -> None:
    tree(tmp_path, {"main.py": "print()", ".python-version": "3.11"})
    chosen = detect(tmp_path, toolchains=IMAGES, runtime="docker", config={})
    assert chosen.image == "devpush-runner-python:3.11"
    (tmp_path / ".python-version").write_text("3.13")
    with pytest.raises(PlanError, match=r"bash scripts/runner-images\.sh python-3\.13"):
        detect(tmp_path, toolchains=IMAGES, runtime="docker", config={})


def test_express_with_npm_ci_and_production_env(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "package.json": package(
                scripts={"start": "node server.js"}, dependencies={"express": "^4"}
            ),
            "package-lock.json": "{}",
        },
    )
    assert (result.framework, result.install, result.start) == (
        "express",
        "npm ci --include=dev",
        "npm start",
    )
    assert result.env["NODE_ENV"] == "production" and result.path == ("node_modules/.bin",)


def test_vite_spa_is_served_as_static_files(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "package.json": package(
                scripts={"dev": "vite", "build": "vite build"}, devDependencies={"vite": "^6"}
            ),
        },
    )
    assert result.build == "npm run build"
    assert result.start == "DEVPUSH_STATIC_SPA=1 python3 /devpush/static_server.py dist"
    assert result.package_manager == "npm (no lockfile)"


def test_create_react_app_never_runs_its_dev_server(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "package.json": package(
                scripts={"start": "react-scripts start", "build": "react-scripts build"},
                dependencies={"react-scripts": "5"},
            ),
            "yarn.lock": "# yarn lockfile v1\n",
        },
    )
    assert result.start.endswith("static_server.py build")
    assert result.install == "corepack yarn install --frozen-lockfile --production=false"


def test_next_starts_with_next_start(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "package.json": package(
                scripts={"build": "next build", "start": "next start"}, dependencies={"next": "15"}
            ),
            "pnpm-lock.yaml": "lockfileVersion: '9.0'\n",
        },
    )
    assert result.start == "next start -H $HOST -p $PORT"
    assert result.install == "corepack pnpm install --frozen-lockfile --prod=false"


def test_a_static_framework_without_a_build_script_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match='no "build" script'):
        plan(tmp_path, {"package.json": package(devDependencies={"vite": "^6"})})


def test_a_node_version_request(tmp_path: Path) -> None:
    files = {"package.json": package(engines={"node": ">=22"}), "index.js": ""}
    with pytest.raises(PlanError, match=r"engines\.node asks for >=22.*20\.20\.2"):
        plan(tmp_path, files)
    tree(tmp_path, {".nvmrc": "v20.11.0\n"})
    assert plan(tmp_path, {}).version == "20.20.2"
    chosen = detect(tmp_path, toolchains=IMAGES, runtime="docker", config={})
    assert chosen.image == "devpush-runner-node:20"


def test_procfile_web_line_wins(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {
            "Procfile": "release: python migrate.py\nweb: gunicorn hello:application\n",
            "requirements.txt": "gunicorn\n",
            "app.py": "from flask import Flask\napp = Flask(__name__)\n",
        },
    )
    assert (result.framework, result.start, result.pre_deploy) == (
        "procfile",
        "gunicorn hello:application",
        "python migrate.py",
    )


def test_settings_override_commands_but_keep_the_install(tmp_path: Path) -> None:
    result = plan(
        tmp_path,
        {"requirements.txt": GUNICORN_REQS},
        build_command="pip install -r requirements.txt",
        start_command="gunicorn app:app --bind $HOST:$PORT",
    )
    assert result.build == "pip install -r requirements.txt"
    assert result.start == "gunicorn app:app --bind $HOST:$PORT"
    assert "uv venv" in (result.install or "")


def test_static_site(tmp_path: Path) -> None:
    result = plan(tmp_path, {"public/index.html": "<h1>hi</h1>"})
    assert (result.stack, result.start) == ("static", "python3 /devpush/static_server.py public")
    assert result.install is None


def test_nothing_recognised_lists_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="looked for a Procfile"):
        plan(tmp_path, {"README.md": "hello"})


@pytest.mark.parametrize(
    "files",
    [
        {"package.json": "{not json"},
        {"package.json": "[1, 2]"},
        {"pyproject.toml": "[project", "main.py": ""},
    ],
)
def test_malformed_manifests_fail_in_one_line(tmp_path: Path, files: dict[str, str]) -> None:
    with pytest.raises(PlanError) as caught:
        plan(tmp_path, files)
    assert "\n" not in caught.value.message


def test_module_names_that_are_not_identifiers_never_reach_a_command(tmp_path: Path) -> None:
    files = {
        "src/x;touch pwned/__init__.py": "from flask import Flask\napp = Flask('x')\n",
        "requirements.txt": "gunicorn\n",
    }
    with pytest.raises(PlanError, match="no app to start"):
        plan(tmp_path, files)


def test_a_locked_install_is_kept_by_a_key_of_its_lockfile(tmp_path: Path) -> None:
    files = {
        "app.py": "from flask import Flask\napp = Flask('x')\n",
        "requirements.txt": GUNICORN_REQS,
    }
    first = plan(tmp_path / "a", files)
    same = plan(tmp_path / "b", {**files, "app.py": files["app.py"] + "# a code change\n"})
    bumped = plan(tmp_path / "c", {**files, "requirements.txt": "flask==3.1.1\ngunicorn==23.0.0\n"})
    assert first.cache_key and first.cache_dir == ".venv"
    assert same.cache_key == first.cache_key  # only code changed
    assert bumped.cache_key not in (None, first.cache_key)
    ranged = plan(tmp_path / "d", {**files, "requirements.txt": "flask>=3\ngunicorn\n"})
    assert ranged.cache_key is None  # nothing locks it: install afresh every time
    other_python = detect(
        tmp_path / "a",
        toolchains=[Toolchain("python", "3.13.1", path="/usr/bin/python3.13")],
        runtime="process",
        config={},
    )
    assert other_python.cache_key != first.cache_key


def test_pip_is_seeded_only_for_commands_that_use_it(tmp_path: Path) -> None:
    files = {
        "requirements.txt": GUNICORN_REQS,
        "app.py": "from flask import Flask\napp = Flask('x')\n",
    }
    assert "--seed" not in (plan(tmp_path / "a", files).install or "")
    readme = plan(tmp_path / "b", files, build_command="pip install -r requirements.txt")
    assert "--seed" in (readme.install or "")


def test_a_bundled_site_without_a_start_script_is_served_static(tmp_path: Path) -> None:
    webpack = package(scripts={"build": "webpack"}, devDependencies={"webpack": "5"})
    alone = plan(tmp_path / "a", {"package.json": webpack})
    assert alone.start == "python3 /devpush/static_server.py dist build out public"
    with_entry = plan(tmp_path / "b", {"package.json": webpack, "index.js": "console.log(1)"})
    assert "then exec python3 /devpush/static_server.py" in with_entry.start
    assert with_entry.start.endswith("else exec node index.js; fi")
