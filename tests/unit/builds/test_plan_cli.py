"""`devpush plan PATH`: the plan of a local tree, or one line saying why there is none."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APPS = Path(__file__).resolve().parents[2] / "apps"


def plan(path: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPUSH_")}
    env["DEVPUSH_DATA_DIR"] = str(data_dir)
    done = subprocess.run(
        [sys.executable, "-m", "devpush", "plan", path, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    done.stderr = " ".join(done.stderr.split())  # the terminal width wraps long messages
    return done


def test_the_plan_of_a_corpus_app(tmp_path: Path) -> None:
    shown = plan(str(APPS / "django-site"), tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == "Plan: django (python)"
    assert "pre-deploy: python manage.py migrate --noinput" in shown.stdout
    as_json = plan(str(APPS / "flask-gunicorn"), tmp_path, "--json")
    assert '"framework": "flask"' in as_json.stdout


def test_failures_are_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    missing = plan(str(tmp_path / "nowhere"), tmp_path)
    assert missing.returncode == 1 and "is not a directory" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("nothing to run\n")
    nothing = plan(str(empty), tmp_path)
    assert nothing.returncode == 1 and "No app found" in nothing.stderr
    assert "Traceback" not in nothing.stderr
    wrong = plan(str(APPS / "flask-gunicorn"), tmp_path, "--runtime", "kubernetes")
    assert wrong.returncode == 1 and "unknown runtime 'kubernetes'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
