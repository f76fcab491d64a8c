"""Every variable the compose files read is documented in the README, and the CLI's
--components help names the components of both modes."""

from __future__ import annotations

import re
from pathlib import Path

from devpush import cli
from devpush.compose.service import COMPONENTS as COMPOSE
from devpush.embedded.launcher import COMPONENTS as EMBEDDED

ROOT = Path(__file__).resolve().parents[2]


def test_every_compose_variable_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    used = {
        name
        for path in (ROOT / "compose").glob("*.yml")
        for name in re.findall(r"\$\{(DEVPUSH_[A-Z0-9_]+)", path.read_text())
    }
    assert used
    assert sorted(n for n in used if f"`{n}`" not in readme) == []


def test_the_components_help_names_both_modes() -> None:
    help_text = cli.ComponentsOpt.__metadata__[0].help
    up, compose = help_text.split("compose mode:")
    assert set(re.findall(r"[a-z-]+", up.split(":", 1)[1])) == set(EMBEDDED)
    assert set(re.findall(r"[a-z-]+", compose)) == set(COMPOSE)
