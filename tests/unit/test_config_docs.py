"""Configuration and docs (issue #18, item 10): every variable the compose files read is
documented in the README, the CLI's --components help names the components of both modes, every
library the package imports is declared, and ARCHITECTURE.md points only inside the repository."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
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


def test_every_imported_library_is_a_declared_dependency() -> None:
    """A library the package imports (python-dotenv was one) is in pyproject's dependencies, so
    that an install from the package alone has it; the dev extras do not count."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        _normalized(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0])
        for spec in project["dependencies"]
    }
    owners = importlib.metadata.packages_distributions()
    undeclared: dict[str, str] = {}
    for path in sorted((ROOT / "src" / "devpush").rglob("*.py")):
        for name in _imported_top_levels(path):
            if name in sys.stdlib_module_names or name == "devpush":
                continue
            distributions = {_normalized(d) for d in owners.get(name, [name])}
            if not distributions & declared:
                undeclared.setdefault(name, str(path.relative_to(ROOT)))
    assert undeclared == {}


def test_architecture_points_only_inside_the_repository() -> None:
    """ARCHITECTURE.md names no file outside the checkout (it once pointed at
    ../shared/DESIGN.md), and every document it names is there."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    assert re.findall(r"(?<![.\w])\.\./[\w./-]+", text) == []
    named = set(re.findall(r"[\w./-]+\.md\b", text))
    assert named
    assert sorted(n for n in named if not (ROOT / n).is_file()) == []


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_levels(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names
