"""`devpush app|worker|monitor` run without the CLI's libraries, and everything else still
reaches the CLI."""

import subprocess
import sys

import pytest

CLI_LIBRARIES = ("typer", "rich", "click", "pygments")

PROBE = """
import sys
sys.argv = ["devpush", {name!r}]
import devpush.components as components
import devpush.entry as entry
import {module}

def report():
    print(",".join(m for m in {libraries!r} if m in sys.modules) or "none")

components.COMPONENTS[{name!r}] = report
entry.main()
"""


def python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("app", "devpush.app"),
        ("worker", "devpush.workers.jobs"),
        ("monitor", "devpush.workers.monitor"),
    ],
)
def test_components_do_not_load_the_cli_libraries(name: str, module: str) -> None:
    probe = PROBE.format(name=name, module=module, libraries=CLI_LIBRARIES)
    assert python(probe) == "none"


def test_a_component_with_options_goes_to_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devpush", "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--check" in done.stdout


def test_an_unknown_command_gets_the_cli_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "devpush", "wroker"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "No such command" in done.stderr
